/*-------------------------------------------------------------------------
 *
 * funnel.c
 *	  The trigger that keeps revenue_engine.blast_counters equal to what a
 *	  scan of blast_recipients gives.
 *
 * A row update (the common case: one status change) computes the change of
 * each counter from the old and new row in C and adds it to a per-transaction
 * sum in memory; an update that changes nothing counted costs nothing more.
 * At commit the sums are written, one saved-plan statement per blast the
 * transaction touched, in (tenant, blast) order, to the counter row of this
 * backend's slot (MyBackendId % slots).  So a transaction locks counter rows
 * last, in one global order, and concurrent sessions (up to the number of
 * slots) write different rows: transactions that update many recipients of
 * one blast in different orders neither deadlock nor queue on a hot row.  A
 * subtransaction's sums go with it when it aborts.  Inside the transaction
 * that changed recipients, the counters show the change only after commit.
 *
 * Inserts and deletes are counted per statement from the transition table, so
 * a blast of a million recipients costs one statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "revenue_engine.h"
#include "blasts/blasts.h"

PG_FUNCTION_INFO_V1(re_funnel_trigger);
PG_FUNCTION_INFO_V1(re_funnel_slots);

/* counters in the order of the statements' parameters $4 .. $16 */
#define NCOUNTERS 13
static const char *const counter_names[NCOUNTERS] = {
	"total", "sent", "delivered", "read", "replied", "closed",
	"at_pending", "at_sent", "at_delivered", "at_read", "at_replied", "at_closed", "at_failed"
};

const char *const re_status_names[] = {
	"pending", "sent", "delivered", "read", "replied", "closed", "failed"
};

ReStatus
re_status_from_name(const char *name)
{
	int			i;

	for (i = 0; i <= RE_ST_FAILED; i++)
		if (strcmp(name, re_status_names[i]) == 0)
			return (ReStatus) i;
	return RE_ST_UNKNOWN;
}

/* Counter changes of this transaction not yet written, per blast and subtransaction */
typedef struct PendingDelta
{
	char	   *tenant;
	int64		blast;
	SubTransactionId subid;
	int64		delta[NCOUNTERS];
} PendingDelta;

static PendingDelta *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool callbacks_registered = false;

static SPIPlanPtr update_plan = NULL;
static SPIPlanPtr upsert_plan = NULL;

/* attribute numbers of blast_recipients, looked up once per relation */
static Oid	cached_relid = InvalidOid;
static int	att_tenant,
			att_id,
			att_blast,
			att_status,
			att_stage[RE_NSTAGES];

static void
lookup_attributes(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	static const char *const stage_cols[RE_NSTAGES] = {
		"sent_at", "delivered_at", "read_at", "replied_at", "closed_at"
	};
	int			i;

	if (cached_relid == RelationGetRelid(rel))
		return;
	att_tenant = SPI_fnumber(desc, "tenant_id");
	att_id = SPI_fnumber(desc, "id");
	att_blast = SPI_fnumber(desc, "blast_id");
	att_status = SPI_fnumber(desc, "status");
	for (i = 0; i < RE_NSTAGES; i++)
		att_stage[i] = SPI_fnumber(desc, stage_cols[i]);
	if (att_tenant <= 0 || att_id <= 0 || att_blast <= 0 || att_status <= 0)
		elog(ERROR, "revenue_engine: the funnel trigger is on a table without blast_recipients' columns");
	for (i = 0; i < RE_NSTAGES; i++)
		if (att_stage[i] <= 0)
			elog(ERROR, "revenue_engine: the funnel trigger is on a table without blast_recipients' columns");
	cached_relid = RelationGetRelid(rel);
}

/* Add (sign 1) or remove (sign -1) what one row counts to delta[]. */
static void
count_row(HeapTuple tup, TupleDesc desc, int sign, int64 *delta)
{
	bool		isnull;
	Datum		d;
	ReStatus	st = RE_ST_UNKNOWN;
	int			i;

	delta[0] += sign;
	for (i = 0; i < RE_NSTAGES; i++)
		if (!heap_attisnull(tup, att_stage[i], desc))
			delta[1 + i] += sign;
	d = heap_getattr(tup, att_status, desc, &isnull);
	if (!isnull)
	{
		char	   *s = TextDatumGetCString(d);

		st = re_status_from_name(s);
		pfree(s);
	}
	if (st != RE_ST_UNKNOWN)
		delta[6 + st] += sign;
}

static void
prepare_plans(void)
{
	StringInfoData sql;
	Oid			types[3 + NCOUNTERS];
	int			i;

	if (update_plan != NULL)
		return;
	types[0] = TEXTOID;
	types[1] = INT8OID;
	types[2] = INT2OID;
	for (i = 0; i < NCOUNTERS; i++)
		types[3 + i] = INT8OID;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "UPDATE revenue_engine.blast_counters k SET ");
	for (i = 0; i < NCOUNTERS; i++)
		appendStringInfo(&sql, "%s%s = k.%s + $%d", i > 0 ? ", " : "",
						 counter_names[i], counter_names[i], 4 + i);
	appendStringInfoString(&sql, " WHERE k.tenant_id = $1 AND k.blast_id = $2 AND k.slot = $3");
	update_plan = re_prepare_saved(sql.data, 3 + NCOUNTERS, types);

	resetStringInfo(&sql);
	appendStringInfoString(&sql, "INSERT INTO revenue_engine.blast_counters AS k (tenant_id, blast_id, slot");
	for (i = 0; i < NCOUNTERS; i++)
		appendStringInfo(&sql, ", %s", counter_names[i]);
	appendStringInfoString(&sql, ") SELECT $1, $2, $3");
	for (i = 0; i < NCOUNTERS; i++)
		appendStringInfo(&sql, ", $%d", 4 + i);
	/* not for a blast deleted since (its counters went with it) */
	appendStringInfoString(&sql, " WHERE EXISTS (SELECT 1 FROM revenue_engine.blasts b"
						   " WHERE b.tenant_id = $1 AND b.id = $2)"
						   " ON CONFLICT (tenant_id, blast_id, slot) DO UPDATE SET ");
	for (i = 0; i < NCOUNTERS; i++)
		appendStringInfo(&sql, "%s%s = k.%s + EXCLUDED.%s", i > 0 ? ", " : "",
						 counter_names[i], counter_names[i], counter_names[i]);
	upsert_plan = re_prepare_saved(sql.data, 3 + NCOUNTERS, types);
	pfree(sql.data);
}

/* Apply delta[] to the counter row of (tenant, blast, slot). */
static void
apply_delta(Datum tenant, Datum blast, int16 slot, const int64 *delta)
{
	Datum		values[3 + NCOUNTERS];
	int			i;
	int			ret;

	for (i = 0; i < NCOUNTERS; i++)
		if (delta[i] != 0)
			break;
	if (i == NCOUNTERS)
		return;
	prepare_plans();
	values[0] = tenant;
	values[1] = blast;
	values[2] = Int16GetDatum(slot);
	for (i = 0; i < NCOUNTERS; i++)
		values[3 + i] = Int64GetDatum(delta[i]);
	ret = SPI_execute_plan(update_plan, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "updating blast counters failed: %s", SPI_result_code_string(ret));
	/* counter rows are made with the blast; a blast made by hand gets them here */
	if (SPI_processed == 0)
	{
		ret = SPI_execute_plan(upsert_plan, values, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "inserting blast counters failed: %s", SPI_result_code_string(ret));
	}
}

/* Add delta[] to this transaction's pending change of (tenant, blast). */
static void
add_pending(Datum tenant, Datum blast, const int64 *delta)
{
	char	   *t = TextDatumGetCString(tenant);
	int64		b = DatumGetInt64(blast);
	SubTransactionId subid = GetCurrentSubTransactionId();
	PendingDelta *p = NULL;
	int			i;

	for (i = 0; i < NCOUNTERS; i++)
		if (delta[i] != 0)
			break;
	if (i == NCOUNTERS)
		return;
	for (i = 0; i < npending; i++)
		if (pending[i].blast == b && pending[i].subid == subid &&
			strcmp(pending[i].tenant, t) == 0)
		{
			p = &pending[i];
			break;
		}
	if (p == NULL)
	{
		if (npending == maxpending)
		{
			maxpending = Max(16, maxpending * 2);
			pending = pending == NULL ?
				MemoryContextAlloc(TopTransactionContext, sizeof(PendingDelta) * maxpending) :
				repalloc(pending, sizeof(PendingDelta) * maxpending);
		}
		p = &pending[npending++];
		p->tenant = MemoryContextStrdup(TopTransactionContext, t);
		p->blast = b;
		p->subid = subid;
		memset(p->delta, 0, sizeof(p->delta));
	}
	for (i = 0; i < NCOUNTERS; i++)
		p->delta[i] += delta[i];
}

static int
pending_cmp(const void *a, const void *b)
{
	const PendingDelta *x = a;
	const PendingDelta *y = b;
	int			c = strcmp(x->tenant, y->tenant);

	if (c != 0)
		return c;
	return x->blast < y->blast ? -1 : x->blast > y->blast ? 1 : 0;
}

/* Write the transaction's pending changes, in (tenant, blast) order. */
static void
flush_pending(void)
{
	ReOwnerScope scope;
	int16		slot = (int16) (MyBackendId % RE_FUNNEL_SLOTS);
	int			i;

	if (npending == 0)
		return;
	qsort(pending, npending, sizeof(PendingDelta), pending_cmp);
	re_connect_as_owner(&scope);
	PushActiveSnapshot(GetTransactionSnapshot());
	for (i = 0; i < npending; i++)
	{
		int64		sum[NCOUNTERS];
		int			j;
		int			k;

		/* subtransactions of one blast together */
		memcpy(sum, pending[i].delta, sizeof(sum));
		for (j = i + 1; j < npending && pending_cmp(&pending[i], &pending[j]) == 0; j++)
			for (k = 0; k < NCOUNTERS; k++)
				sum[k] += pending[j].delta[k];
		apply_delta(CStringGetTextDatum(pending[i].tenant), Int64GetDatum(pending[i].blast),
					slot, sum);
		i = j - 1;
	}
	PopActiveSnapshot();
	re_disconnect_as_owner(&scope);
	npending = 0;
}

static void
funnel_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			flush_pending();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* the memory went with TopTransactionContext */
			pending = NULL;
			npending = maxpending = 0;
			break;
		default:
			break;
	}
}

static void
funnel_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			i;
	int			n = 0;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		for (i = 0; i < npending; i++)
			if (pending[i].subid != mySubid)
				pending[n++] = pending[i];
		npending = n;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < npending; i++)
			if (pending[i].subid == mySubid)
				pending[i].subid = parentSubid;
	}
}

static void
row_updated(TriggerData *td)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	HeapTuple	oldtup = td->tg_trigtuple;
	HeapTuple	newtup = td->tg_newtuple;
	int64		delta[NCOUNTERS] = {0};
	bool		isnull;
	Datum		old_tenant = heap_getattr(oldtup, att_tenant, desc, &isnull);
	Datum		new_tenant = heap_getattr(newtup, att_tenant, desc, &isnull);
	Datum		old_blast = heap_getattr(oldtup, att_blast, desc, &isnull);
	Datum		new_blast = heap_getattr(newtup, att_blast, desc, &isnull);

	if (!callbacks_registered)
	{
		RegisterXactCallback(funnel_xact_callback, NULL);
		RegisterSubXactCallback(funnel_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (DatumGetInt64(old_blast) == DatumGetInt64(new_blast) &&
		strcmp(TextDatumGetCString(old_tenant), TextDatumGetCString(new_tenant)) == 0)
	{
		count_row(oldtup, desc, -1, delta);
		count_row(newtup, desc, 1, delta);
		add_pending(new_tenant, new_blast, delta);
	}
	else
	{
		/* moved to another blast: out of the old one's counters, into the new one's */
		count_row(oldtup, desc, -1, delta);
		add_pending(old_tenant, old_blast, delta);
		memset(delta, 0, sizeof(delta));
		count_row(newtup, desc, 1, delta);
		add_pending(new_tenant, new_blast, delta);
	}
}

/* Count a statement's inserted (sign 1) or deleted (sign -1) rows at once. */
static void
rows_added_or_removed(TriggerData *td, const char *transition, int sign)
{
	StringInfoData sql;
	int			i;
	int			ret;

	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "registering the transition table failed");
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "WITH d AS (SELECT r.tenant_id, r.blast_id,"
					 " ((r.id %% %d + %d) %% %d)::smallint AS slot,"
					 " %d * count(*) AS total, %d * count(r.sent_at) AS sent,"
					 " %d * count(r.delivered_at) AS delivered, %d * count(r.read_at) AS read,"
					 " %d * count(r.replied_at) AS replied, %d * count(r.closed_at) AS closed",
					 RE_FUNNEL_SLOTS, RE_FUNNEL_SLOTS, RE_FUNNEL_SLOTS,
					 sign, sign, sign, sign, sign, sign);
	for (i = 0; i <= RE_ST_FAILED; i++)
		appendStringInfo(&sql, ", %d * count(*) FILTER (WHERE r.status = '%s') AS at_%s",
						 sign, re_status_names[i], re_status_names[i]);
	appendStringInfo(&sql, " FROM %s r GROUP BY 1, 2, 3)", quote_identifier(transition));
	if (sign > 0)
	{
		appendStringInfoString(&sql, " INSERT INTO revenue_engine.blast_counters AS k"
							   " SELECT * FROM d"
							   " ON CONFLICT (tenant_id, blast_id, slot) DO UPDATE SET ");
		for (i = 0; i < NCOUNTERS; i++)
			appendStringInfo(&sql, "%s%s = k.%s + EXCLUDED.%s", i > 0 ? ", " : "",
							 counter_names[i], counter_names[i], counter_names[i]);
	}
	else
	{
		/* a blast being deleted may have lost its counters already: only update */
		appendStringInfoString(&sql, " UPDATE revenue_engine.blast_counters k SET ");
		for (i = 0; i < NCOUNTERS; i++)
			appendStringInfo(&sql, "%s%s = k.%s + d.%s", i > 0 ? ", " : "",
							 counter_names[i], counter_names[i], counter_names[i]);
		appendStringInfoString(&sql, " FROM d WHERE k.tenant_id = d.tenant_id"
							   " AND k.blast_id = d.blast_id AND k.slot = d.slot");
	}
	ret = SPI_execute(sql.data, false, 0);
	if (ret < 0)
		elog(ERROR, "counting blast recipients failed: %s", SPI_result_code_string(ret));
	pfree(sql.data);
}

Datum
re_funnel_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ReOwnerScope scope;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "re_funnel_trigger: not called as an AFTER trigger");

	/* the common case: one row, counted in memory until commit */
	if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		if (!TRIGGER_FIRED_BY_UPDATE(td->tg_event))
			elog(ERROR, "re_funnel_trigger: row triggers count updates only");
		lookup_attributes(td->tg_relation);
		row_updated(td);
		return PointerGetDatum(NULL);
	}

	re_connect_as_owner(&scope);
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		StringInfoData sql;
		int			i;

		initStringInfo(&sql);
		appendStringInfoString(&sql, "UPDATE revenue_engine.blast_counters SET ");
		for (i = 0; i < NCOUNTERS; i++)
			appendStringInfo(&sql, "%s%s = 0", i > 0 ? ", " : "", counter_names[i]);
		if (SPI_execute(sql.data, false, 0) < 0)
			elog(ERROR, "resetting blast counters failed");
		/* changes made before the TRUNCATE in this transaction are gone too */
		npending = 0;
	}
	else
	{
		lookup_attributes(td->tg_relation);
		if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && td->tg_trigger->tgnewtable)
			rows_added_or_removed(td, td->tg_trigger->tgnewtable, 1);
		else if (TRIGGER_FIRED_BY_DELETE(td->tg_event) && td->tg_trigger->tgoldtable)
			rows_added_or_removed(td, td->tg_trigger->tgoldtable, -1);
		else
			elog(ERROR, "re_funnel_trigger: statement triggers need a transition table");
	}
	re_disconnect_as_owner(&scope);
	return PointerGetDatum(NULL);
}

/* How many counter rows a blast has: revenue_engine.funnel_slots(). */
Datum
re_funnel_slots(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RE_FUNNEL_SLOTS);
}
