/*-------------------------------------------------------------------------
 *
 * funnel.c
 *	  The triggers that keep revenue_engine.blast_counters equal to what a
 *	  scan of blast_recipients gives.
 *
 * Every change is summed in memory per (tenant, blast): a row update from
 * the old and new row in C (an update that changes nothing counted costs
 * nothing more), inserts and deletes once per statement from the transition
 * table (a blast of a million recipients costs one statement).  The sums are
 * written at commit to this backend's slot row of the blast by
 * src/commit_counters.c, which says why that write cannot fail for
 * concurrency.  Counter rows are made with their blast (create_blast); for
 * a blast whose rows are missing, the first writer inserts them.
 *
 * TRUNCATE sets the counters to zero, and an ALTER TABLE of blast_recipients
 * that drops, adds, retypes or renames a counted column (the event trigger
 * below) recounts them from a scan, as does revenue_engine.funnel_recount()
 * after the triggers were disabled.  Either replaces what the counters held,
 * and so also the changes this transaction made before: those sums are
 * dropped at commit, unless the subtransaction that reset the counters
 * aborts (with the reset), and then they count again.
 *
 * The trigger reads blast_recipients' columns by attribute number, found by
 * name again after every relcache change of the table: dropping a column and
 * adding it again gives it a new number.  A counted column missing or of
 * another type is an error: counting without it would be silently wrong.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "tcop/deparse_utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "revenue_engine.h"
#include "compat.h"
#include "blasts/blasts.h"
#include "commit_counters.h"

PG_FUNCTION_INFO_V1(re_funnel_trigger);
PG_FUNCTION_INFO_V1(re_funnel_slots);
PG_FUNCTION_INFO_V1(re_funnel_columns_altered);
PG_FUNCTION_INFO_V1(re_funnel_recount);

/* counters in the order of blast_counters' columns */
#define NCOUNTERS 13
static const char *const counter_names[NCOUNTERS] = {
	"total", "sent", "delivered", "read", "replied", "closed",
	"at_pending", "at_sent", "at_delivered", "at_read", "at_replied", "at_closed", "at_failed"
};

/* blast_recipients' columns holding the stages sent .. closed */
static const char *const stage_cols[RE_NSTAGES] = {
	"sent_at", "delivered_at", "read_at", "replied_at", "closed_at"
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

static char *funnel_recount_select(void);

static const char *const key_names[1] = {"blast_id"};
static const Oid key_types[1] = {INT8OID};
static const char *const source_names[1] = {"blast_recipients"};

static ReCounterTable funnel_table = {
	.relname = "blast_counters",
	.label = "funnel counters",
	.missing_column_hint = "Add the column again: the ALTER TABLE that adds it recounts the counters.",
	.nkeys = 1,
	.key_names = key_names,
	.key_types = key_types,
	.ncounters = NCOUNTERS,
	.counter_names = counter_names,
	.nslots = RE_FUNNEL_SLOTS,
	/* not for a blast deleted since (its counters went with it) */
	.insert_guard = "EXISTS (SELECT 1 FROM revenue_engine.blasts b WHERE b.tenant_id = $1 AND b.id = $2)",
	.insert_on_shards = false,
	.recount_select = funnel_recount_select,
	.nsources = 1,
	.source_names = source_names,
};

/* blast_recipients' attribute numbers; InvalidOid: find them again */
static Oid	recipients_relid = InvalidOid;
static int	att_tenant,
			att_blast,
			att_status,
			att_stage[RE_NSTAGES];
static bool relcache_callback_registered = false;

static void
funnel_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == recipients_relid)
		recipients_relid = InvalidOid;
}

static void
lookup_attributes(Relation rel)
{
	int			i;

	if (!relcache_callback_registered)
	{
		CacheRegisterRelcacheCallback(funnel_relcache_callback, (Datum) 0);
		relcache_callback_registered = true;
	}
	if (recipients_relid == RelationGetRelid(rel))
		return;
	att_tenant = re_cc_column(&funnel_table, rel, "tenant_id", TEXTOID, VARCHAROID);
	att_blast = re_cc_column(&funnel_table, rel, "blast_id", INT8OID, INT8OID);
	att_status = re_cc_column(&funnel_table, rel, "status", TEXTOID, VARCHAROID);
	for (i = 0; i < RE_NSTAGES; i++)
		att_stage[i] = re_cc_column(&funnel_table, rel, stage_cols[i], InvalidOid, InvalidOid);
	recipients_relid = RelationGetRelid(rel);
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

/* the blast_counters relation of the trigger being run (re_cc_relation) */
static Oid	current_counters = InvalidOid;

static void
add_pending(const char *tenant, int64 blast, const int64 *delta)
{
	re_cc_add(&funnel_table, current_counters, tenant, &blast, delta);
}

static void
row_updated(TriggerData *td)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	HeapTuple	oldtup = td->tg_trigtuple;
	HeapTuple	newtup = td->tg_newtuple;
	int64		delta[NCOUNTERS] = {0};
	bool		isnull;
	char	   *old_tenant = TextDatumGetCString(heap_getattr(oldtup, att_tenant, desc, &isnull));
	char	   *new_tenant = TextDatumGetCString(heap_getattr(newtup, att_tenant, desc, &isnull));
	int64		old_blast = DatumGetInt64(heap_getattr(oldtup, att_blast, desc, &isnull));
	int64		new_blast = DatumGetInt64(heap_getattr(newtup, att_blast, desc, &isnull));

	if (old_blast == new_blast && strcmp(old_tenant, new_tenant) == 0)
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
	uint64		r;
	int			i;
	int			ret;

	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "registering the transition table failed");
	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "SELECT r.tenant_id::text, r.blast_id, pg_catalog.count(*), pg_catalog.count(r.sent_at),"
						   " pg_catalog.count(r.delivered_at), pg_catalog.count(r.read_at), pg_catalog.count(r.replied_at),"
						   " pg_catalog.count(r.closed_at)");
	for (i = 0; i <= RE_ST_FAILED; i++)
		appendStringInfo(&sql, ", pg_catalog.count(*) FILTER (WHERE r.status = '%s')", re_status_names[i]);
	appendStringInfo(&sql, " FROM %s r GROUP BY 1, 2", quote_identifier(transition));
	ret = SPI_execute(sql.data, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "counting blast recipients failed: %s", SPI_result_code_string(ret));
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		int64		delta[NCOUNTERS];
		bool		isnull;
		char	   *tenant = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		int64		blast = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));

		for (i = 0; i < NCOUNTERS; i++)
			delta[i] = sign * DatumGetInt64(SPI_getbinval(tup, desc, 3 + i, &isnull));
		add_pending(tenant, blast, delta);
	}
	pfree(sql.data);
}

/* The recount's rows: each recipient counted in slot id % slots. */
static char *
funnel_recount_select(void)
{
	StringInfoData sql;
	int			i;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT r.tenant_id, r.blast_id, (r.id %% %d)::smallint,"
					 " pg_catalog.count(*), pg_catalog.count(r.sent_at), pg_catalog.count(r.delivered_at), pg_catalog.count(r.read_at),"
					 " pg_catalog.count(r.replied_at), pg_catalog.count(r.closed_at)",
					 RE_FUNNEL_SLOTS);
	for (i = 0; i <= RE_ST_FAILED; i++)
		appendStringInfo(&sql, ", pg_catalog.count(*) FILTER (WHERE r.status = '%s')", re_status_names[i]);
	appendStringInfoString(&sql, " FROM revenue_engine.blast_recipients r GROUP BY 1, 2, 3");
	return sql.data;
}

Datum
re_funnel_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ReOwnerScope scope;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "re_funnel_trigger: not called as an AFTER trigger");
	current_counters = re_cc_relation(&funnel_table, td->tg_relation, "blast_recipients");

	/* the common case: one row, counted in memory until commit */
	if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		lookup_attributes(td->tg_relation);
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
			row_updated(td);
		else
		{
			/* the per-row variant on Citus (revenue_engine.distribute()) */
			int64		delta[NCOUNTERS] = {0};
			bool		isnull;
			TupleDesc	desc = RelationGetDescr(td->tg_relation);
			int			sign = TRIGGER_FIRED_BY_INSERT(td->tg_event) ? 1 : -1;

			count_row(td->tg_trigtuple, desc, sign, delta);
			add_pending(TextDatumGetCString(heap_getattr(td->tg_trigtuple, att_tenant, desc, &isnull)),
						DatumGetInt64(heap_getattr(td->tg_trigtuple, att_blast, desc, &isnull)),
						delta);
		}
		return PointerGetDatum(NULL);
	}
	if (strcmp(RelationGetRelationName(td->tg_relation), "blast_recipients") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the funnel's statement triggers do not run on shard %s",
						RelationGetRelationName(td->tg_relation)),
				 errdetail("On Citus the funnel counts rows with per-row triggers; TRUNCATE of blast_recipients is not counted."),
				 errhint("Delete the rows instead of truncating them.")));

	re_connect_as_owner(&scope);
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		re_cc_reset(&funnel_table, false);
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

/* blast_recipients' columns the counters are computed from */
static const char *const counted_names[] = {
	"tenant_id", "blast_id", "status", "sent_at", "delivered_at", "read_at", "replied_at", "closed_at"
};

static bool
is_counted_column(const char *name)
{
	int			i;

	if (name == NULL)
		return false;
	for (i = 0; i < lengthof(counted_names); i++)
		if (strcmp(name, counted_names[i]) == 0)
			return true;
	return false;
}

/* Whether an ALTER TABLE command dropped, added, retyped or renamed a counted column. */
static bool
changes_counted_column(CollectedCommand *cmd)
{
	ListCell   *lc;

	if (cmd->type == SCT_AlterTable)
	{
		foreach(lc, cmd->d.alterTable.subcmds)
		{
			CollectedATSubcmd *sub = lfirst(lc);
			AlterTableCmd *at = (AlterTableCmd *) sub->parsetree;

			if (!IsA(at, AlterTableCmd))
				continue;
			if (RE_AT_IS_ADD_COLUMN(at->subtype))
			{
				if (at->def != NULL && IsA(at->def, ColumnDef) &&
					is_counted_column(((ColumnDef *) at->def)->colname))
					return true;
			}
			else if (RE_AT_IS_DROP_COLUMN(at->subtype) ||
					 at->subtype == AT_AlterColumnType)
			{
				if (is_counted_column(at->name))
					return true;
			}
		}
	}
	else if (cmd->parsetree != NULL && IsA(cmd->parsetree, RenameStmt))
	{
		RenameStmt *rs = (RenameStmt *) cmd->parsetree;

		if (rs->renameType == OBJECT_COLUMN &&
			(is_counted_column(rs->subname) || is_counted_column(rs->newname)))
			return true;
	}
	return false;
}

/*
 * The event trigger at the end of ALTER TABLE: a counted column of
 * blast_recipients that was dropped, added, retyped or renamed changed what a
 * scan counts without any row trigger firing, so the counters are recounted
 * (in the same transaction, under the ALTER's lock).  While a counted column
 * is missing there is nothing to count: the row triggers refuse to run until
 * it is back, and the ALTER TABLE that brings it back recounts.
 */
Datum
re_funnel_columns_altered(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid("revenue_engine", true);
	Oid			recipients = OidIsValid(nsp) ? get_relname_relid("blast_recipients", nsp) : InvalidOid;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	ReOwnerScope scope;
	bool		recount = false;
	uint64		i;
	int			ret;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "re_funnel_columns_altered: not called as an event trigger");
	if (!OidIsValid(recipients))
		PG_RETURN_VOID();
	/* whoever runs the ALTER TABLE, its search_path is not ours */
	re_connect_as_owner(&scope);
	args[0] = ObjectIdGetDatum(recipients);
	ret = SPI_execute_with_args("SELECT c.command FROM pg_catalog.pg_event_trigger_ddl_commands() c"
								" WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
								" AND c.objid = $1",
								1, argtypes, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the DDL commands failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed && !recount; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull && changes_counted_column((CollectedCommand *) DatumGetPointer(d)))
			recount = true;
	}

	if (recount)
	{
		Relation	rel = table_open(recipients, ShareLock);
		bool		complete = true;
		int			c;

		/* not complete yet: the ALTER TABLE that completes it recounts */
		for (c = 0; c < lengthof(counted_names); c++)
			if (SPI_fnumber(RelationGetDescr(rel), counted_names[c]) <= 0)
				complete = false;
		table_close(rel, NoLock);
		if (complete)
			re_cc_reset(&funnel_table, true);
	}
	re_disconnect_as_owner(&scope);
	PG_RETURN_VOID();
}

/* revenue_engine.funnel_recount(): every counter set from a scan. */
Datum
re_funnel_recount(PG_FUNCTION_ARGS)
{
	Oid			recipients = get_relname_relid("blast_recipients",
											   get_namespace_oid("revenue_engine", false));
	Relation	rel = table_open(recipients, ShareLock);
	ReOwnerScope scope;

	lookup_attributes(rel);
	table_close(rel, NoLock);
	re_connect_as_owner(&scope);
	re_cc_reset(&funnel_table, true);
	re_disconnect_as_owner(&scope);
	PG_RETURN_VOID();
}

/* How many counter rows a blast has: revenue_engine.funnel_slots(). */
Datum
re_funnel_slots(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RE_FUNNEL_SLOTS);
}
