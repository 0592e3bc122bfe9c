/*-------------------------------------------------------------------------
 *
 * funnel.c
 *	  The triggers that keep revenue_engine.blast_counters equal to what a
 *	  scan of blast_recipients gives.
 *
 * Every change is summed in memory per (tenant, blast) and subtransaction:
 * a row update from the old and new row in C (an update that changes
 * nothing counted costs nothing more), inserts and deletes once per
 * statement from the transition table (a blast of a million recipients costs
 * one statement).  A subtransaction's sums go with it when it aborts.  At
 * commit (or PREPARE) the sums are written, one row per blast the
 * transaction touched, in (tenant, blast) order, to the counter row of this
 * backend's slot (its process number % slots).  Inside the transaction that changed
 * recipients, the counters show its changes only after its commit.
 *
 * Why the write at commit cannot fail for concurrency.  A counter row is
 * shared: other sessions add to it.  Written by an UPDATE statement, an
 * addition made in REPEATABLE READ or SERIALIZABLE raises "could not
 * serialize access due to concurrent update" whenever another transaction
 * changed that row after this one's snapshot was taken (another backend with
 * the same slot, a bulk insert or delete, a TRUNCATE), although the two
 * transactions changed different recipients: there is no logical conflict,
 * only two additions to one sum, and additions commute.  Under SERIALIZABLE
 * the statement also reads the row through the primary key index, and those
 * predicate locks make writers of different slots of one blast look
 * dependent on each other whenever a counter row's new version needs a new
 * index entry (it did not fit on its page).
 * So the counter row is changed the way logical replication's apply applies
 * a change (execReplication.c): found through the primary key with a dirty
 * snapshot, its latest version locked (waiting for a concurrent writer, never
 * failing on one), and the new version computed from that latest version.
 * The sum is right in any isolation level, since each writer adds to the
 * version the previous writer committed, and the versions commit in order.
 * No predicate lock is taken on the counters (the look-up does not read
 * through an MVCC snapshot), so a writer never depends on another writer
 * through them; a SERIALIZABLE reader of blast_funnel that did not see a
 * writer's addition is ordered before it, as for any read.  Locks are taken
 * last in the transaction and in one global order, so concurrent writers
 * that touch the same blasts in different orders do not deadlock, and
 * backends of different slots do not wait for each other.  Counter rows are
 * made with their blast (create_blast); for a blast whose rows are missing,
 * the first writer inserts them with a statement.  The interface is used as
 * the apply uses it; the tuple lock costs one WAL record more than an
 * UPDATE statement, measured no slower per commit (the statement's executor
 * start-up is gone).  A prepared transaction holds its counter row until
 * COMMIT PREPARED, as before: a commit of the same slot waits for it.
 * Insert-only delta rows would avoid the conflict too, but need compacting
 * by someone in READ COMMITTED, and until then every read of the funnel
 * grows with them; the locked addition keeps 16 rows per blast.
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

PG_FUNCTION_INFO_V1(re_funnel_trigger);
PG_FUNCTION_INFO_V1(re_funnel_slots);
PG_FUNCTION_INFO_V1(re_funnel_columns_altered);
PG_FUNCTION_INFO_V1(re_funnel_recount);

/* counters in the order of the statements' parameters $4 .. $16 */
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

/*
 * Counter changes of this transaction not yet written, per blast and
 * subtransaction, in the order they were made.  A reset entry marks where
 * the counters were set from a scan: what comes before it is in them.
 */
typedef struct PendingDelta
{
	Oid			counters;		/* the blast_counters relation to write: the
								 * table, or on Citus the shard colocated
								 * with the changed row's */
	char	   *tenant;
	int64		blast;
	SubTransactionId subid;
	bool		reset;
	int64		delta[NCOUNTERS];
} PendingDelta;

static PendingDelta *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool callbacks_registered = false;

/* the insert for a blast without counter rows */
static SPIPlanPtr upsert_plan = NULL;

/* blast_recipients' attribute numbers; InvalidOid: find them again */
static Oid	recipients_relid = InvalidOid;
static int	att_tenant,
			att_blast,
			att_status,
			att_stage[RE_NSTAGES];

/* blast_counters' attribute numbers and primary key; InvalidOid: find them again */
static Oid	counters_relid = InvalidOid;
static Oid	counters_pkey;
static int	katt_tenant,
			katt_blast,
			katt_slot,
			katt_counter[NCOUNTERS];

static void
funnel_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == recipients_relid)
		recipients_relid = InvalidOid;
	if (relid == InvalidOid || relid == counters_relid)
		counters_relid = InvalidOid;
}

/* The attribute number of a column the counters need, of one of two types. */
static int
counted_column(Relation rel, const char *name, Oid type1, Oid type2)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			attno = SPI_fnumber(desc, name);
	Oid			type;

	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("funnel counters cannot be kept without column \"%s\" of relation \"%s\"",
						name, RelationGetRelationName(rel)),
				 errdetail("The counters of revenue_engine.blast_counters are computed from it."),
				 errhint("Add the column again: the ALTER TABLE that adds it recounts the counters.")));
	type = TupleDescAttr(desc, attno - 1)->atttypid;
	if (OidIsValid(type1) && type != type1 && type != type2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("funnel counters cannot be kept with column \"%s\" of relation \"%s\" of type %s",
						name, RelationGetRelationName(rel), format_type_be(type)),
				 errdetail("The counters need type %s.", format_type_be(type1))));
	return attno;
}

static void
lookup_attributes(Relation rel)
{
	int			i;

	if (recipients_relid == RelationGetRelid(rel))
		return;
	att_tenant = counted_column(rel, "tenant_id", TEXTOID, VARCHAROID);
	att_blast = counted_column(rel, "blast_id", INT8OID, INT8OID);
	att_status = counted_column(rel, "status", TEXTOID, VARCHAROID);
	for (i = 0; i < RE_NSTAGES; i++)
		att_stage[i] = counted_column(rel, stage_cols[i], InvalidOid, InvalidOid);
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

static PendingDelta *
new_pending(void)
{
	PendingDelta *p;

	if (npending == maxpending)
	{
		maxpending = Max(16, maxpending * 2);
		pending = pending == NULL ?
			MemoryContextAlloc(TopTransactionContext, sizeof(PendingDelta) * maxpending) :
			repalloc(pending, sizeof(PendingDelta) * maxpending);
	}
	p = &pending[npending++];
	memset(p, 0, sizeof(PendingDelta));
	p->subid = GetCurrentSubTransactionId();
	return p;
}

/* Add delta[] to this transaction's pending change of (tenant, blast). */
/* the blast_counters relation of the trigger being run (counters_of) */
static Oid	current_counters = InvalidOid;

static void
add_pending(const char *tenant, int64 blast, const int64 *delta)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	PendingDelta *p = NULL;
	int			i;

	for (i = 0; i < NCOUNTERS; i++)
		if (delta[i] != 0)
			break;
	if (i == NCOUNTERS)
		return;
	/* only entries made since the last reset: a reset may be rolled back */
	for (i = npending - 1; i >= 0 && !pending[i].reset; i--)
		if (pending[i].blast == blast && pending[i].subid == subid &&
			pending[i].counters == current_counters &&
			strcmp(pending[i].tenant, tenant) == 0)
		{
			p = &pending[i];
			break;
		}
	if (p == NULL)
	{
		p = new_pending();
		p->tenant = MemoryContextStrdup(TopTransactionContext, tenant);
		p->blast = blast;
		p->counters = current_counters;
	}
	for (i = 0; i < NCOUNTERS; i++)
		p->delta[i] += delta[i];
}

static int
pending_cmp(const void *a, const void *b)
{
	const PendingDelta *x = a;
	const PendingDelta *y = b;
	int			c;

	if (x->counters != y->counters)
		return x->counters < y->counters ? -1 : 1;
	c = strcmp(x->tenant, y->tenant);

	if (c != 0)
		return c;
	return x->blast < y->blast ? -1 : x->blast > y->blast ? 1 : 0;
}

/* blast_counters opened for the counter writes of one commit */
typedef struct CounterWriter
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epq;
	TupleTableSlot *search;		/* the key looked up */
	TupleTableSlot *found;		/* its latest version, locked */
	TupleTableSlot *next;		/* the version written */
	bool		spi;			/* connected (for a missing row) */
} CounterWriter;

static void
writer_open(CounterWriter *w, Oid counters)
{
	RangeTblEntry *rte;
	int			i;

	memset(w, 0, sizeof(CounterWriter));
	w->rel = table_open(counters, RowExclusiveLock);
	if (counters_relid != RelationGetRelid(w->rel))
	{
		counters_pkey = re_relation_primary_key(w->rel);
		if (!OidIsValid(counters_pkey))
			elog(ERROR, "revenue_engine.blast_counters has no primary key");
		katt_tenant = counted_column(w->rel, "tenant_id", TEXTOID, VARCHAROID);
		katt_blast = counted_column(w->rel, "blast_id", INT8OID, INT8OID);
		katt_slot = counted_column(w->rel, "slot", INT2OID, INT2OID);
		for (i = 0; i < NCOUNTERS; i++)
			katt_counter[i] = counted_column(w->rel, counter_names[i], INT8OID, INT8OID);
		counters_relid = RelationGetRelid(w->rel);
	}

	/* an executor state as logical replication's apply makes one */
	w->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(w->rel);
	rte->relkind = w->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	re_init_range_table(w->estate, rte);
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, w->rel, 1, NULL, 0);
	w->estate->es_opened_result_relations = list_make1(w->rri);
	w->estate->es_output_cid = GetCurrentCommandId(true);
	PushActiveSnapshot(GetLatestSnapshot());
	w->estate->es_snapshot = GetActiveSnapshot();
	ExecOpenIndices(w->rri, false);
	re_epq_init(&w->epq, w->estate);
	w->search = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(w->rel), &TTSOpsVirtual);
	w->found = table_slot_create(w->rel, &w->estate->es_tupleTable);
	w->next = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(w->rel), &TTSOpsVirtual);
	AfterTriggerBeginQuery();
}

static void
writer_close(CounterWriter *w)
{
	AfterTriggerEndQuery(w->estate);
	EvalPlanQualEnd(&w->epq);
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	PopActiveSnapshot();
	table_close(w->rel, NoLock);
	if (w->spi)
		SPI_finish();
}

static void
prepare_upsert(void)
{
	StringInfoData sql;
	Oid			types[3 + NCOUNTERS];
	int			i;

	if (upsert_plan != NULL)
		return;
	types[0] = TEXTOID;
	types[1] = INT8OID;
	types[2] = INT2OID;
	for (i = 0; i < NCOUNTERS; i++)
		types[3 + i] = INT8OID;
	initStringInfo(&sql);
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

/* Add delta[] to the counter row of (tenant, blast, slot). */
static void
write_delta(CounterWriter *w, const char *tenant, int64 blast, int16 slot, const int64 *delta)
{
	TupleDesc	desc = RelationGetDescr(w->rel);
	Datum		tenant_datum = CStringGetTextDatum(tenant);
	Datum		values[3 + NCOUNTERS];
	int			i;
	int			ret;

	for (i = 0; i < NCOUNTERS; i++)
		if (delta[i] != 0)
			break;
	if (i == NCOUNTERS)
		return;

	ExecClearTuple(w->search);
	for (i = 0; i < desc->natts; i++)
		w->search->tts_isnull[i] = true;
	w->search->tts_values[katt_tenant - 1] = tenant_datum;
	w->search->tts_isnull[katt_tenant - 1] = false;
	w->search->tts_values[katt_blast - 1] = Int64GetDatum(blast);
	w->search->tts_isnull[katt_blast - 1] = false;
	w->search->tts_values[katt_slot - 1] = Int16GetDatum(slot);
	w->search->tts_isnull[katt_slot - 1] = false;
	ExecStoreVirtualTuple(w->search);

	if (RelationFindReplTupleByIndex(w->rel, counters_pkey, LockTupleNoKeyExclusive,
									 w->search, w->found))
	{
		slot_getallattrs(w->found);
		ExecClearTuple(w->next);
		memcpy(w->next->tts_values, w->found->tts_values, sizeof(Datum) * desc->natts);
		memcpy(w->next->tts_isnull, w->found->tts_isnull, sizeof(bool) * desc->natts);
		for (i = 0; i < NCOUNTERS; i++)
			w->next->tts_values[katt_counter[i] - 1] =
				Int64GetDatum(DatumGetInt64(w->found->tts_values[katt_counter[i] - 1]) + delta[i]);
		ExecStoreVirtualTuple(w->next);
		EvalPlanQualSetSlot(&w->epq, w->next);
		ExecSimpleRelationUpdate(w->rri, w->estate, &w->epq, w->found, w->next);
		return;
	}

	/*
	 * No counter row: a blast made without create_blast, or its rows removed
	 * by hand.  A statement inserts it (or adds to it, if a concurrent writer
	 * just did), seeing what has committed so far.
	 */
	if (strcmp(RelationGetRelationName(w->rel), "blast_counters") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("blast " INT64_FORMAT " of tenant \"%s\" has no funnel counter rows in shard %s",
						blast, tenant, RelationGetRelationName(w->rel)),
				 errdetail("On Citus the funnel adds to the counter rows create_blast makes; it does not create them."),
				 errhint("Create blasts with revenue_engine.create_blast().")));
	if (!w->spi)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		w->spi = true;
	}
	prepare_upsert();
	values[0] = tenant_datum;
	values[1] = Int64GetDatum(blast);
	values[2] = Int16GetDatum(slot);
	for (i = 0; i < NCOUNTERS; i++)
		values[3 + i] = Int64GetDatum(delta[i]);
	ret = SPI_execute_snapshot(upsert_plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							   false, true, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inserting blast counters failed: %s", SPI_result_code_string(ret));
}

/* Write the transaction's pending changes, in (tenant, blast) order. */
static void
flush_pending(void)
{
	ReOwnerScope scope;
	CounterWriter w;
	int16		slot = (int16) (RE_MY_PROC_INDEX % RE_FUNNEL_SLOTS);
	int			first = 0;
	int			i;

	/* the counters were reset after the changes before the last reset */
	for (i = 0; i < npending; i++)
		if (pending[i].reset)
			first = i + 1;
	if (first == npending)
	{
		npending = 0;
		return;
	}
	qsort(pending + first, npending - first, sizeof(PendingDelta), pending_cmp);
	re_enter_owner(&scope);
	writer_open(&w, pending[first].counters);
	for (i = first; i < npending; i++)
	{
		int64		sum[NCOUNTERS];
		int			j;
		int			k;

		if (pending[i].counters != RelationGetRelid(w.rel))
		{
			writer_close(&w);
			writer_open(&w, pending[i].counters);
		}

		/* subtransactions of one blast together */
		memcpy(sum, pending[i].delta, sizeof(sum));
		for (j = i + 1; j < npending && pending_cmp(&pending[i], &pending[j]) == 0; j++)
			for (k = 0; k < NCOUNTERS; k++)
				sum[k] += pending[j].delta[k];
		write_delta(&w, pending[i].tenant, pending[i].blast, slot, sum);
		i = j - 1;
	}
	writer_close(&w);
	re_leave_owner(&scope);
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
		/* its changes and its resets (whose statements rolled back too) */
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
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(funnel_xact_callback, NULL);
	RegisterSubXactCallback(funnel_subxact_callback, NULL);
	CacheRegisterRelcacheCallback(funnel_relcache_callback, (Datum) 0);
	callbacks_registered = true;
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

/* Run a statement of the owner's seeing everything committed so far and this transaction's changes. */
static void
run_on_latest(const char *sql)
{
	SPIPlanPtr	plan = SPI_prepare(sql, 0, NULL);
	int			ret;

	if (plan == NULL)
		elog(ERROR, "preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
	ret = SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							   false, true, 0);
	if (ret < 0)
		elog(ERROR, "\"%s\" failed: %s", sql, SPI_result_code_string(ret));
	SPI_freeplan(plan);
}

/*
 * Set every counter from a scan of blast_recipients (none: empty, after
 * TRUNCATE).  Writers of blast_recipients hold their lock until their
 * counter changes have committed, so once the ShareLock is granted the
 * scan and the counters agree; the caller is connected to SPI as the owner.
 */
static void
reset_counters(Oid recipients, bool scan)
{
	StringInfoData sql;
	int			nestlevel;
	int			i;

	LockRelationOid(recipients, ShareLock);
	initStringInfo(&sql);
	appendStringInfoString(&sql, "UPDATE revenue_engine.blast_counters SET ");
	for (i = 0; i < NCOUNTERS; i++)
		appendStringInfo(&sql, "%s%s = 0", i > 0 ? ", " : "", counter_names[i]);
	run_on_latest(sql.data);
	if (scan)
	{
		/* a policy that would hide rows is an error, not a wrong count */
		nestlevel = NewGUCNestLevel();
		(void) set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		resetStringInfo(&sql);
		appendStringInfo(&sql,
						 "INSERT INTO revenue_engine.blast_counters AS k"
						 " SELECT r.tenant_id, r.blast_id, (r.id %% %d)::smallint,"
						 " pg_catalog.count(*), pg_catalog.count(r.sent_at), pg_catalog.count(r.delivered_at), pg_catalog.count(r.read_at),"
						 " pg_catalog.count(r.replied_at), pg_catalog.count(r.closed_at)",
						 RE_FUNNEL_SLOTS);
		for (i = 0; i <= RE_ST_FAILED; i++)
			appendStringInfo(&sql, ", pg_catalog.count(*) FILTER (WHERE r.status = '%s')", re_status_names[i]);
		appendStringInfoString(&sql, " FROM revenue_engine.blast_recipients r GROUP BY 1, 2, 3"
							   " ON CONFLICT (tenant_id, blast_id, slot) DO UPDATE SET ");
		for (i = 0; i < NCOUNTERS; i++)
			appendStringInfo(&sql, "%s%s = EXCLUDED.%s", i > 0 ? ", " : "",
							 counter_names[i], counter_names[i]);
		run_on_latest(sql.data);
		AtEOXact_GUC(true, nestlevel);
	}
	pfree(sql.data);
	/* what this transaction changed before is in the counters now */
	new_pending()->reset = true;
}

/*
 * The blast_counters relation that a change of a row of recipients counts
 * into: revenue_engine.blast_counters, or, when recipients is a Citus shard
 * of blast_recipients (the triggers fire on shards), the shard of
 * blast_counters colocated with it, on this node.  Writing the shell table
 * there would be silently wrong.  Looked up in Citus's catalog once per
 * shard and backend.
 */
#define MAX_SHARD_MAP 64
static Oid	shard_map_from[MAX_SHARD_MAP];
static Oid	shard_map_to[MAX_SHARD_MAP];
static int	nshard_map = 0;

static Oid
counters_of(Relation recipients)
{
	Oid			nsp = RelationGetNamespace(recipients);
	Oid			relid = RelationGetRelid(recipients);
	Oid			result = InvalidOid;
	Datum		args[2];
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	int			i;
	int			ret;
	ReOwnerScope scope = {0};

	if (strcmp(RelationGetRelationName(recipients), "blast_recipients") == 0)
		return get_relname_relid("blast_counters", nsp);
	for (i = 0; i < nshard_map; i++)
		if (shard_map_from[i] == relid)
			return shard_map_to[i];

	/*
	 * In the owner scope, with pinned search_path and qualified operators:
	 * the trigger fires in whatever session writes the shard (a Citus
	 * connection gets its role's and database's search_path), and nothing
	 * of that session's may be evaluated here.
	 */
	re_connect_as_owner(&scope);
	/* by name: Citus hides its shards from queries of pg_class */
	args[0] = CStringGetTextDatum(RelationGetRelationName(recipients));
	args[1] = CStringGetTextDatum(get_namespace_name(nsp));
	ret = SPI_execute_with_args(
		"SELECT pg_catalog.to_regclass(pg_catalog.quote_ident($2) OPERATOR(pg_catalog.||) '.'"
		"       OPERATOR(pg_catalog.||) pg_catalog.quote_ident('blast_counters_'"
		"       OPERATOR(pg_catalog.||) c.shardid::pg_catalog.text))::pg_catalog.oid"
		"  FROM pg_catalog.pg_dist_shard r"
		"  JOIN pg_catalog.pg_dist_shard c"
		"    ON c.logicalrelid OPERATOR(pg_catalog.=) 'revenue_engine.blast_counters'::pg_catalog.regclass"
		"   AND c.shardminvalue OPERATOR(pg_catalog.=) r.shardminvalue"
		" WHERE r.logicalrelid OPERATOR(pg_catalog.=) 'revenue_engine.blast_recipients'::pg_catalog.regclass"
		"   AND 'blast_recipients_' OPERATOR(pg_catalog.||) r.shardid::pg_catalog.text OPERATOR(pg_catalog.=) $1",
		2, argtypes, args, NULL, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			result = DatumGetObjectId(d);
	}
	re_disconnect_as_owner(&scope);
	if (!OidIsValid(result))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the funnel trigger fired on %s, which is neither revenue_engine.blast_recipients nor one of its Citus shards with a colocated blast_counters shard on this node",
						RelationGetRelationName(recipients))));
	if (nshard_map < MAX_SHARD_MAP)
	{
		shard_map_from[nshard_map] = relid;
		shard_map_to[nshard_map++] = result;
	}
	return result;
}

Datum
re_funnel_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ReOwnerScope scope;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "re_funnel_trigger: not called as an AFTER trigger");
	register_callbacks();

	current_counters = counters_of(td->tg_relation);

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
		reset_counters(RelationGetRelid(td->tg_relation), false);
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
		{
			register_callbacks();
			reset_counters(recipients, true);
		}
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
	register_callbacks();
	re_connect_as_owner(&scope);
	reset_counters(recipients, true);
	re_disconnect_as_owner(&scope);
	PG_RETURN_VOID();
}

/* How many counter rows a blast has: revenue_engine.funnel_slots(). */
Datum
re_funnel_slots(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RE_FUNNEL_SLOTS);
}
