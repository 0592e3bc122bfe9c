/*-------------------------------------------------------------------------
 *
 * counters.c
 *	  The triggers that keep revenue_engine.campaign_counters equal to what
 *	  a scan of enrollments, campaign_messages and enrollment_history gives
 *	  (the views campaign_funnel, step_funnel and template_stats read them;
 *	  src/campaigns/views.sql).
 *
 * A row trigger in C computes what the old and the new row count (an
 * update that changes nothing counted, such as the runner moving
 * next_run_at, costs nothing more) and hands the difference to
 * src/commit_counters.c, the blast funnel's machinery: summed in memory per
 * key and subtransaction, written at commit to this backend's slot row, by
 * a locked addition that neither fails for concurrency nor makes
 * concurrent writers wait for each other unless they share a slot.
 *
 * What a row counts, into the key (campaign, version, step, template,
 * template version) of campaign_counters:
 *   enrollments         (campaign, version, 0, 0, 0): enrolled 1, and active,
 *                       completed or exited by its status
 *   campaign_messages   (campaign, version, step, template or 0, version or 0):
 *                       messages 1; sent, delivered, read, replied: the stage
 *                       reached (its status ranks at or above it, queued <
 *                       sent < delivered < read < replied, or the stage's
 *                       timestamp is set); queued, failed, cancelled, unknown:
 *                       the status now; fallback: fallback_used
 *   enrollment_history  (campaign, version, step or 0, 0, 0): deferred or
 *                       skipped, by its event (the others are counted from
 *                       the enrollments and messages themselves)
 * A TRUNCATE of any of the three recounts from a scan of all three (in the
 * TRUNCATE's transaction), as revenue_engine.campaign_counters_recount()
 * does after writes with the triggers disabled.  Counter rows of a deleted
 * campaign stay (the views join campaigns); the recount gives the same.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "revenue_engine.h"
#include "commit_counters.h"

PG_FUNCTION_INFO_V1(re_campaign_counters_trigger);
PG_FUNCTION_INFO_V1(re_campaign_counters_recount);

/* campaign_counters' counters, in column order */
enum
{
	C_ENROLLED, C_ACTIVE, C_COMPLETED, C_EXITED,
	C_MESSAGES, C_QUEUED, C_SENT, C_DELIVERED, C_READ, C_REPLIED,
	C_FAILED, C_CANCELLED, C_UNKNOWN, C_FALLBACK,
	C_DEFERRED, C_SKIPPED,
	NCOUNTERS
};
static const char *const counter_names[NCOUNTERS] = {
	"enrolled", "active", "completed", "exited",
	"messages", "queued", "sent", "delivered", "read", "replied",
	"failed", "cancelled", "unknown", "fallback",
	"deferred", "skipped"
};

#define NKEYS 5
static const char *const key_names[NKEYS] = {
	"campaign_id", "version", "step", "template_id", "template_version"
};
static const Oid key_types[NKEYS] = {INT8OID, INT4OID, INT4OID, INT8OID, INT4OID};

/* Counter rows per key: a writer adds to row (its process % slots). */
#define CAMPAIGN_SLOTS 8

static const char *const source_names[3] = {
	"enrollments", "campaign_messages", "enrollment_history"
};

static char *campaign_recount_select(void);

static ReCounterTable campaign_table = {
	.relname = "campaign_counters",
	.label = "campaign counters",
	.missing_column_hint = "Add the column again, then run revenue_engine.campaign_counters_recount().",
	.nkeys = NKEYS,
	.key_names = key_names,
	.key_types = key_types,
	.ncounters = NCOUNTERS,
	.counter_names = counter_names,
	.nslots = CAMPAIGN_SLOTS,
	.insert_guard = NULL,
	.insert_on_shards = true,
	.recount_select = campaign_recount_select,
	.nsources = 3,
	.source_names = source_names,
};

/* message statuses: the ranked stages first (their rank is their index) */
static const char *const message_statuses[] = {
	"queued", "sent", "delivered", "read", "replied", "failed", "cancelled", "unknown"
};
#define ST_REPLIED 4

/* the columns of a counted table, by attribute number; relid InvalidOid: find them again */
typedef struct SourceColumns
{
	Oid			relid;
	int			tenant;
	int			campaign;
	int			version;
	int			step;			/* messages, history */
	int			status;			/* enrollments, messages */
	int			event;			/* history */
	int			template_id;	/* messages */
	int			template_version;
	int			fallback;
	int			stage_at[4];	/* sent_at .. replied_at */
} SourceColumns;

enum
{
	SRC_ENROLLMENTS, SRC_MESSAGES, SRC_HISTORY
};
static SourceColumns sources[3];
static bool relcache_callback_registered = false;

static void
counters_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < 3; i++)
		if (relid == InvalidOid || relid == sources[i].relid)
			sources[i].relid = InvalidOid;
}

static SourceColumns *
source_columns(int which, Relation rel)
{
	SourceColumns *c = &sources[which];
	ReCounterTable *t = &campaign_table;
	static const char *const stage_cols[4] = {"sent_at", "delivered_at", "read_at", "replied_at"};
	int			i;

	if (!relcache_callback_registered)
	{
		CacheRegisterRelcacheCallback(counters_relcache_callback, (Datum) 0);
		relcache_callback_registered = true;
	}
	if (c->relid == RelationGetRelid(rel))
		return c;
	c->tenant = re_cc_column(t, rel, "tenant_id", TEXTOID, VARCHAROID);
	c->campaign = re_cc_column(t, rel, "campaign_id", INT8OID, INT8OID);
	c->version = re_cc_column(t, rel, "version", INT4OID, INT4OID);
	if (which != SRC_ENROLLMENTS)
		c->step = re_cc_column(t, rel, "step", INT4OID, INT4OID);
	if (which != SRC_HISTORY)
		c->status = re_cc_column(t, rel, "status", TEXTOID, VARCHAROID);
	if (which == SRC_HISTORY)
		c->event = re_cc_column(t, rel, "event", TEXTOID, VARCHAROID);
	if (which == SRC_MESSAGES)
	{
		c->template_id = re_cc_column(t, rel, "template_id", INT8OID, INT8OID);
		c->template_version = re_cc_column(t, rel, "template_version", INT4OID, INT4OID);
		c->fallback = re_cc_column(t, rel, "fallback_used", BOOLOID, BOOLOID);
		for (i = 0; i < 4; i++)
			c->stage_at[i] = re_cc_column(t, rel, stage_cols[i], InvalidOid, InvalidOid);
	}
	c->relid = RelationGetRelid(rel);
	return c;
}

/* Whether a text datum equals a name, without copying it. */
static bool
text_is(Datum d, const char *name)
{
	text	   *t = DatumGetTextPP(d);
	size_t		len = strlen(name);
	bool		result = VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), name, len) == 0;

	if ((Pointer) t != DatumGetPointer(d))
		pfree(t);
	return result;
}

static int64
int_attr(HeapTuple tup, TupleDesc desc, int attno, bool is_int8)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, attno, desc, &isnull);

	if (isnull)
		return 0;
	return is_int8 ? DatumGetInt64(d) : (int64) DatumGetInt32(d);
}

/*
 * The key of a row and what it counts (sign 1 or -1) into delta[]; false if
 * the row counts nothing (a history event other than deferred or skipped).
 */
static bool
count_row(int which, SourceColumns *c, HeapTuple tup, TupleDesc desc, int sign,
		  int64 *keys, int64 *delta)
{
	bool		isnull;
	Datum		d;
	int			i;

	keys[0] = int_attr(tup, desc, c->campaign, true);
	keys[1] = int_attr(tup, desc, c->version, false);
	keys[2] = 0;
	keys[3] = 0;
	keys[4] = 0;
	switch (which)
	{
		case SRC_ENROLLMENTS:
			delta[C_ENROLLED] += sign;
			d = heap_getattr(tup, c->status, desc, &isnull);
			if (!isnull)
			{
				if (text_is(d, "active"))
					delta[C_ACTIVE] += sign;
				else if (text_is(d, "completed"))
					delta[C_COMPLETED] += sign;
				else if (text_is(d, "exited"))
					delta[C_EXITED] += sign;
			}
			return true;
		case SRC_MESSAGES:
			{
				int			st = -1;

				keys[2] = int_attr(tup, desc, c->step, false);
				keys[3] = int_attr(tup, desc, c->template_id, true);
				keys[4] = int_attr(tup, desc, c->template_version, false);
				delta[C_MESSAGES] += sign;
				d = heap_getattr(tup, c->status, desc, &isnull);
				if (!isnull)
					for (i = 0; i < lengthof(message_statuses); i++)
						if (text_is(d, message_statuses[i]))
						{
							st = i;
							break;
						}
				/* the stages reached: by rank, or by their timestamps */
				for (i = 0; i < 4; i++)
					if ((st >= 1 + i && st <= ST_REPLIED) ||
						!heap_attisnull(tup, c->stage_at[i], desc))
						delta[C_SENT + i] += sign;
				if (st == 0)
					delta[C_QUEUED] += sign;
				else if (st == ST_REPLIED + 1)
					delta[C_FAILED] += sign;
				else if (st == ST_REPLIED + 2)
					delta[C_CANCELLED] += sign;
				else if (st == ST_REPLIED + 3)
					delta[C_UNKNOWN] += sign;
				d = heap_getattr(tup, c->fallback, desc, &isnull);
				if (!isnull && DatumGetBool(d))
					delta[C_FALLBACK] += sign;
				return true;
			}
		case SRC_HISTORY:
			d = heap_getattr(tup, c->event, desc, &isnull);
			if (isnull)
				return false;
			if (text_is(d, "deferred"))
				delta[C_DEFERRED] += sign;
			else if (text_is(d, "skipped"))
				delta[C_SKIPPED] += sign;
			else
				return false;
			keys[2] = int_attr(tup, desc, c->step, false);
			return true;
	}
	return false;
}

static char *
tenant_of(HeapTuple tup, TupleDesc desc, SourceColumns *c)
{
	bool		isnull;

	return TextDatumGetCString(heap_getattr(tup, c->tenant, desc, &isnull));
}

static bool
same_tenant(HeapTuple a, HeapTuple b, TupleDesc desc, SourceColumns *c)
{
	bool		n1,
				n2;
	Datum		x = heap_getattr(a, c->tenant, desc, &n1);
	Datum		y = heap_getattr(b, c->tenant, desc, &n2);

	return !n1 && !n2 && DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, x, y));
}

static int
source_of(TriggerData *td)
{
	const char *name;
	int			i;

	if (td->tg_trigger->tgnargs != 1)
		elog(ERROR, "re_campaign_counters_trigger: one argument expected (the counted table)");
	name = td->tg_trigger->tgargs[0];
	for (i = 0; i < 3; i++)
		if (strcmp(name, source_names[i]) == 0)
			return i;
	elog(ERROR, "re_campaign_counters_trigger: unknown table \"%s\"", name);
	return -1;					/* not reached */
}

Datum
re_campaign_counters_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	SourceColumns *c;
	Oid			counters;
	int			which;
	int64		keys[NKEYS];
	int64		delta[NCOUNTERS] = {0};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "re_campaign_counters_trigger: not called as an AFTER trigger");
	which = source_of(td);

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		ReOwnerScope scope;

		if (strcmp(RelationGetRelationName(td->tg_relation), source_names[which]) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the campaign counters' TRUNCATE trigger does not run on shard %s",
							RelationGetRelationName(td->tg_relation)),
					 errhint("Delete the rows instead of truncating them, or run revenue_engine.campaign_counters_recount() after.")));
		re_connect_as_owner(&scope);
		re_cc_reset(&campaign_table, true);
		re_disconnect_as_owner(&scope);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "re_campaign_counters_trigger: a row trigger expected");

	desc = RelationGetDescr(td->tg_relation);
	c = source_columns(which, td->tg_relation);
	counters = re_cc_relation(&campaign_table, td->tg_relation, source_names[which]);

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		HeapTuple	oldtup = td->tg_trigtuple;
		HeapTuple	newtup = td->tg_newtuple;
		int64		newkeys[NKEYS];
		int64		newdelta[NCOUNTERS] = {0};
		bool		counts_old = count_row(which, c, oldtup, desc, -1, keys, delta);
		bool		counts_new = count_row(which, c, newtup, desc, 1, newkeys, newdelta);
		int			i;

		if (counts_old && counts_new && memcmp(keys, newkeys, sizeof(keys)) == 0 &&
			same_tenant(oldtup, newtup, desc, c))
		{
			/* the common case: one key, and often nothing counted changed */
			for (i = 0; i < NCOUNTERS; i++)
				delta[i] += newdelta[i];
			for (i = 0; i < NCOUNTERS; i++)
				if (delta[i] != 0)
					break;
			if (i < NCOUNTERS)
				re_cc_add(&campaign_table, counters, tenant_of(newtup, desc, c), keys, delta);
		}
		else
		{
			if (counts_old)
				re_cc_add(&campaign_table, counters, tenant_of(oldtup, desc, c), keys, delta);
			if (counts_new)
				re_cc_add(&campaign_table, counters, tenant_of(newtup, desc, c), newkeys, newdelta);
		}
	}
	else
	{
		HeapTuple	tup = td->tg_trigtuple;
		int			sign = TRIGGER_FIRED_BY_INSERT(td->tg_event) ? 1 : -1;

		if (count_row(which, c, tup, desc, sign, keys, delta))
			re_cc_add(&campaign_table, counters, tenant_of(tup, desc, c), keys, delta);
	}
	return PointerGetDatum(NULL);
}

/*
 * The recount's rows, the same counts as count_row() in SQL: each row
 * counted in slot id % slots (its key's rows are summed by the views).
 */
static char *
campaign_recount_select(void)
{
	StringInfoData sql;
	int			i;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT x.tenant_id, x.campaign_id, x.version, x.step, x.template_id,"
						   " x.template_version, x.slot");
	for (i = 0; i < NCOUNTERS; i++)
		appendStringInfo(&sql, ", pg_catalog.sum(x.%s)::bigint", counter_names[i]);
	appendStringInfo(&sql,
					 " FROM ("
					 "SELECT e.tenant_id, e.campaign_id, e.version, 0 AS step, 0::bigint AS template_id,"
					 " 0 AS template_version, (e.id %% %d)::smallint AS slot,"
					 " 1 AS enrolled, (e.status = 'active')::int AS active,"
					 " (e.status = 'completed')::int AS completed, (e.status = 'exited')::int AS exited,"
					 " 0 AS messages, 0 AS queued, 0 AS sent, 0 AS delivered, 0 AS read, 0 AS replied,"
					 " 0 AS failed, 0 AS cancelled, 0 AS unknown, 0 AS fallback, 0 AS deferred, 0 AS skipped"
					 " FROM revenue_engine.enrollments e"
					 " UNION ALL "
					 "SELECT m.tenant_id, m.campaign_id, m.version, m.step, coalesce(m.template_id, 0),"
					 " coalesce(m.template_version, 0), (m.send_id %% %d)::smallint,"
					 " 0, 0, 0, 0, 1, (m.status = 'queued')::int,"
					 " (m.status IN ('sent', 'delivered', 'read', 'replied') OR m.sent_at IS NOT NULL)::int,"
					 " (m.status IN ('delivered', 'read', 'replied') OR m.delivered_at IS NOT NULL)::int,"
					 " (m.status IN ('read', 'replied') OR m.read_at IS NOT NULL)::int,"
					 " (m.status = 'replied' OR m.replied_at IS NOT NULL)::int,"
					 " (m.status = 'failed')::int, (m.status = 'cancelled')::int, (m.status = 'unknown')::int,"
					 " m.fallback_used::int, 0, 0"
					 " FROM revenue_engine.campaign_messages m"
					 " UNION ALL "
					 "SELECT h.tenant_id, h.campaign_id, h.version, coalesce(h.step, 0), 0, 0,"
					 " (h.enrollment_id %% %d)::smallint,"
					 " 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,"
					 " (h.event = 'deferred')::int, (h.event = 'skipped')::int"
					 " FROM revenue_engine.enrollment_history h WHERE h.event IN ('deferred', 'skipped')"
					 ") x GROUP BY 1, 2, 3, 4, 5, 6, 7",
					 CAMPAIGN_SLOTS, CAMPAIGN_SLOTS, CAMPAIGN_SLOTS);
	return sql.data;
}

/* revenue_engine.campaign_counters_recount(): every counter set from a scan. */
Datum
re_campaign_counters_recount(PG_FUNCTION_ARGS)
{
	ReOwnerScope scope;

	re_connect_as_owner(&scope);
	re_cc_reset(&campaign_table, true);
	re_disconnect_as_owner(&scope);
	PG_RETURN_VOID();
}
