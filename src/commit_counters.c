/*-------------------------------------------------------------------------
 *
 * commit_counters.c
 *	  Counters kept equal to what a scan of the counted tables gives,
 *	  without scanning them and without a hot row: the machinery of the
 *	  blast funnel (src/blasts/funnel.c) and of the campaign counters
 *	  (src/campaigns/counters.c).  Their triggers say what a row counts; this
 *	  file sums and writes it.
 *
 * Every change is summed in memory per (counter relation, tenant, keys) and
 * subtransaction.  A subtransaction's sums go with it when it aborts.  At
 * commit (or PREPARE) the sums are written, one row per key the transaction
 * touched, in (relation, tenant, keys) order, to the counter row of this
 * backend's slot (its process number % slots).  Inside the transaction that
 * changed the counted rows, the counters show its changes only after its
 * commit.
 *
 * Why the write at commit cannot fail for concurrency.  A counter row is
 * shared: other sessions add to it.  Written by an UPDATE statement, an
 * addition made in REPEATABLE READ or SERIALIZABLE raises "could not
 * serialize access due to concurrent update" whenever another transaction
 * changed that row after this one's snapshot was taken (another backend with
 * the same slot, a bulk insert or delete, a TRUNCATE), although the two
 * transactions changed different counted rows: there is no logical
 * conflict, only two additions to one sum, and additions commute.  Under
 * SERIALIZABLE the statement also reads the row through the primary key
 * index, and those predicate locks make writers of different slots of one
 * key look dependent on each other whenever a counter row's new version
 * needs a new index entry (it did not fit on its page).
 * So the counter row is changed the way logical replication's apply applies
 * a change (execReplication.c): found through the primary key with a dirty
 * snapshot, its latest version locked (waiting for a concurrent writer, never
 * failing on one), and the new version computed from that latest version.
 * The sum is right in any isolation level, since each writer adds to the
 * version the previous writer committed, and the versions commit in order.
 * No predicate lock is taken on the counters (the look-up does not read
 * through an MVCC snapshot), so a writer never depends on another writer
 * through them; a SERIALIZABLE reader of a view that did not see a
 * writer's addition is ordered before it, as for any read.  Locks are taken
 * last in the transaction and in one global order, so concurrent writers
 * that touch the same keys in different orders do not deadlock, and
 * backends of different slots do not wait for each other.  A key without
 * counter rows gets them from its first writer, by a statement (INSERT ..
 * ON CONFLICT DO UPDATE, under the table's guard: not for a parent deleted
 * since), under a lock of the key held until its commit (lock_key), so
 * that two first writers of a key never meet in that statement: its ON
 * CONFLICT would fail in REPEATABLE READ or SERIALIZABLE on a row committed
 * after its snapshot.  The interface is used as the apply uses it; the
 * tuple lock costs one WAL record more than an UPDATE statement, measured
 * no slower per commit (the statement's executor start-up is gone).  A prepared
 * transaction holds its counter rows until COMMIT PREPARED: a commit of the
 * same slot waits for it.  Insert-only delta rows would avoid the conflict
 * too, but need compacting by someone in READ COMMITTED, and until then
 * every read grows with them; the locked addition keeps nslots rows per key.
 *
 * A reset (re_cc_reset: TRUNCATE, a recount) replaces what the counters of
 * its table held, and so also the changes this transaction made before to
 * that table's counters: those sums are dropped at commit, unless the
 * subtransaction that reset the counters aborts (with the reset), and then
 * they count again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "revenue_engine.h"
#include "compat.h"
#include "commit_counters.h"

/*
 * Counter changes of this transaction not yet written, per key and
 * subtransaction, in the order they were made.  A reset entry marks where
 * its table's counters were set from a scan: what comes before it is in
 * them.
 */
typedef struct PendingDelta
{
	ReCounterTable *table;
	Oid			counters;		/* the counter relation to write: the table,
								 * or on Citus its shard colocated with the
								 * changed row's */
	char	   *tenant;
	int64		keys[RE_CC_MAX_KEYS];
	SubTransactionId subid;
	bool		reset;
	bool		dropped;		/* before a later reset of its table */
	int64		delta[RE_CC_MAX_COUNTERS];
} PendingDelta;

static PendingDelta *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool callbacks_registered = false;

/* the tables seen, for the relcache callback */
#define MAX_TABLES 8
static ReCounterTable *tables[MAX_TABLES];
static int	ntables = 0;

static void
cc_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < ntables; i++)
		if (relid == InvalidOid || relid == tables[i]->relid)
			tables[i]->relid = InvalidOid;
}

int
re_cc_column(ReCounterTable *t, Relation rel, const char *name, Oid type1, Oid type2)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			attno = SPI_fnumber(desc, name);
	Oid			type;

	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s cannot be kept without column \"%s\" of relation \"%s\"",
						t->label, name, RelationGetRelationName(rel)),
				 errdetail("The counters of revenue_engine.%s are computed from it or kept in it.", t->relname),
				 errhint("%s", t->missing_column_hint)));
	type = TupleDescAttr(desc, attno - 1)->atttypid;
	if (OidIsValid(type1) && type != type1 && type != type2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s cannot be kept with column \"%s\" of relation \"%s\" of type %s",
						t->label, name, RelationGetRelationName(rel), format_type_be(type)),
				 errdetail("The counters need type %s.", format_type_be(type1))));
	return attno;
}

static void cc_xact_callback(XactEvent event, void *arg);
static void cc_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								SubTransactionId parentSubid, void *arg);

static void
register_table(ReCounterTable *table)
{
	int			i;

	if (!callbacks_registered)
	{
		RegisterXactCallback(cc_xact_callback, NULL);
		RegisterSubXactCallback(cc_subxact_callback, NULL);
		CacheRegisterRelcacheCallback(cc_relcache_callback, (Datum) 0);
		callbacks_registered = true;
	}
	for (i = 0; i < ntables; i++)
		if (tables[i] == table)
			return;
	if (ntables == MAX_TABLES)
		elog(ERROR, "too many counter tables");
	Assert(table->nkeys <= RE_CC_MAX_KEYS && table->ncounters <= RE_CC_MAX_COUNTERS);
	tables[ntables++] = table;
}

static PendingDelta *
new_pending(ReCounterTable *table)
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
	p->table = table;
	p->subid = GetCurrentSubTransactionId();
	return p;
}

void
re_cc_add(ReCounterTable *table, Oid counters, const char *tenant,
		  const int64 *keys, const int64 *delta)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	PendingDelta *p = NULL;
	int			n = table->nkeys;
	int			i;

	for (i = 0; i < table->ncounters; i++)
		if (delta[i] != 0)
			break;
	if (i == table->ncounters)
		return;
	register_table(table);
	/* only entries made since the table's last reset: a reset may be rolled back */
	for (i = npending - 1; i >= 0; i--)
	{
		PendingDelta *q = &pending[i];

		if (q->table != table)
			continue;
		if (q->reset)
			break;
		if (q->subid == subid && q->counters == counters &&
			memcmp(q->keys, keys, sizeof(int64) * n) == 0 &&
			strcmp(q->tenant, tenant) == 0)
		{
			p = q;
			break;
		}
	}
	if (p == NULL)
	{
		p = new_pending(table);
		p->tenant = MemoryContextStrdup(TopTransactionContext, tenant);
		memcpy(p->keys, keys, sizeof(int64) * n);
		p->counters = counters;
	}
	for (i = 0; i < table->ncounters; i++)
		p->delta[i] += delta[i];
}

static int
pending_cmp(const void *a, const void *b)
{
	const PendingDelta *x = a;
	const PendingDelta *y = b;
	int			c;
	int			i;

	if (x->counters != y->counters)
		return x->counters < y->counters ? -1 : 1;
	c = strcmp(x->tenant, y->tenant);
	if (c != 0)
		return c;
	/* one relation: one table, one number of keys */
	for (i = 0; i < x->table->nkeys; i++)
		if (x->keys[i] != y->keys[i])
			return x->keys[i] < y->keys[i] ? -1 : 1;
	return 0;
}

/* a counter relation opened for the counter writes of one commit */
typedef struct CounterWriter
{
	ReCounterTable *table;
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
lookup_counter_columns(ReCounterTable *t, Relation rel)
{
	int			i;

	if (t->relid == RelationGetRelid(rel))
		return;
	t->pkey = re_relation_primary_key(rel);
	if (!OidIsValid(t->pkey))
		elog(ERROR, "revenue_engine.%s has no primary key", t->relname);
	t->att_tenant = re_cc_column(t, rel, "tenant_id", TEXTOID, VARCHAROID);
	for (i = 0; i < t->nkeys; i++)
		t->att_key[i] = re_cc_column(t, rel, t->key_names[i], t->key_types[i], t->key_types[i]);
	t->att_slot = re_cc_column(t, rel, "slot", INT2OID, INT2OID);
	for (i = 0; i < t->ncounters; i++)
		t->att_counter[i] = re_cc_column(t, rel, t->counter_names[i], INT8OID, INT8OID);
	t->relid = RelationGetRelid(rel);
}

static void
writer_open(CounterWriter *w, ReCounterTable *t, Oid counters)
{
	RangeTblEntry *rte;

	memset(w, 0, sizeof(CounterWriter));
	w->table = t;
	w->rel = table_open(counters, RowExclusiveLock);
	lookup_counter_columns(t, w->rel);

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

static Datum
key_datum(Oid type, int64 value)
{
	switch (type)
	{
		case INT2OID:
			return Int16GetDatum((int16) value);
		case INT4OID:
			return Int32GetDatum((int32) value);
		default:
			return Int64GetDatum(value);
	}
}

/*
 * The insert of a missing counter row into relation relname (the table, or
 * a shard of it): adds to a row a concurrent writer just inserted.
 */
static char *
upsert_sql(ReCounterTable *t, const char *relname, bool guard)
{
	StringInfoData sql;
	int			nargs = 2 + t->nkeys + t->ncounters;
	int			i;

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO revenue_engine.%s AS k (tenant_id", quote_identifier(relname));
	for (i = 0; i < t->nkeys; i++)
		appendStringInfo(&sql, ", %s", t->key_names[i]);
	appendStringInfoString(&sql, ", slot");
	for (i = 0; i < t->ncounters; i++)
		appendStringInfo(&sql, ", %s", t->counter_names[i]);
	appendStringInfoString(&sql, ") SELECT $1");
	for (i = 1; i < nargs; i++)
		appendStringInfo(&sql, ", $%d", 1 + i);
	if (guard && t->insert_guard != NULL)
		appendStringInfo(&sql, " WHERE %s", t->insert_guard);
	appendStringInfoString(&sql, " ON CONFLICT (tenant_id");
	for (i = 0; i < t->nkeys; i++)
		appendStringInfo(&sql, ", %s", t->key_names[i]);
	appendStringInfoString(&sql, ", slot) DO UPDATE SET ");
	for (i = 0; i < t->ncounters; i++)
		appendStringInfo(&sql, "%s%s = k.%s + EXCLUDED.%s", i > 0 ? ", " : "",
						 t->counter_names[i], t->counter_names[i], t->counter_names[i]);
	return sql.data;
}

static void
upsert_types(ReCounterTable *t, Oid *types)
{
	int			i;

	types[0] = TEXTOID;
	for (i = 0; i < t->nkeys; i++)
		types[1 + i] = t->key_types[i];
	types[1 + t->nkeys] = INT2OID;
	for (i = 0; i < t->ncounters; i++)
		types[2 + t->nkeys + i] = INT8OID;
}

/*
 * The lock of a key of a counter relation, held until commit by whoever
 * inserts its rows: an advisory lock tag (database, relation, hash of the
 * key) with field 4 = 3, which pg_advisory_lock() (1 and 2) never uses.
 */
static void
lock_key(Relation rel, const char *tenant, const int64 *keys, int nkeys)
{
	LOCKTAG		tag;
	uint32		h = hash_bytes((const unsigned char *) tenant, strlen(tenant));

	h = hash_combine(h, hash_bytes((const unsigned char *) keys, sizeof(int64) * nkeys));
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, RelationGetRelid(rel), h, 3);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* Add delta[] to the counter row of (tenant, keys, slot). */
static void
write_delta(CounterWriter *w, const char *tenant, const int64 *keys, int16 slot, const int64 *delta)
{
	ReCounterTable *t = w->table;
	TupleDesc	desc = RelationGetDescr(w->rel);
	Datum		tenant_datum;
	Datum		values[2 + RE_CC_MAX_KEYS + RE_CC_MAX_COUNTERS];
	Oid			types[2 + RE_CC_MAX_KEYS + RE_CC_MAX_COUNTERS];
	int			nargs = 2 + t->nkeys + t->ncounters;
	SPIPlanPtr	plan;
	bool		found;
	int			i;
	int			ret;

	for (i = 0; i < t->ncounters; i++)
		if (delta[i] != 0)
			break;
	if (i == t->ncounters)
		return;

	tenant_datum = CStringGetTextDatum(tenant);
	ExecClearTuple(w->search);
	for (i = 0; i < desc->natts; i++)
		w->search->tts_isnull[i] = true;
	w->search->tts_values[t->att_tenant - 1] = tenant_datum;
	w->search->tts_isnull[t->att_tenant - 1] = false;
	for (i = 0; i < t->nkeys; i++)
	{
		w->search->tts_values[t->att_key[i] - 1] = key_datum(t->key_types[i], keys[i]);
		w->search->tts_isnull[t->att_key[i] - 1] = false;
	}
	w->search->tts_values[t->att_slot - 1] = Int16GetDatum(slot);
	w->search->tts_isnull[t->att_slot - 1] = false;
	ExecStoreVirtualTuple(w->search);

	found = RelationFindReplTupleByIndex(w->rel, t->pkey, LockTupleNoKeyExclusive,
										 w->search, w->found);
	if (!found)
	{
		/*
		 * No row: the key's lock, then look again.  Whoever inserts rows of
		 * the key holds it until its commit, so a row inserted meanwhile is
		 * committed now and found; if none is, no one else inserts one
		 * before this commit, and the insert below meets no conflict (an ON
		 * CONFLICT meeting a row its snapshot cannot see would fail in
		 * REPEATABLE READ and SERIALIZABLE).
		 */
		lock_key(w->rel, tenant, keys, t->nkeys);
		found = RelationFindReplTupleByIndex(w->rel, t->pkey, LockTupleNoKeyExclusive,
											 w->search, w->found);
	}
	if (found)
	{
		slot_getallattrs(w->found);
		ExecClearTuple(w->next);
		memcpy(w->next->tts_values, w->found->tts_values, sizeof(Datum) * desc->natts);
		memcpy(w->next->tts_isnull, w->found->tts_isnull, sizeof(bool) * desc->natts);
		for (i = 0; i < t->ncounters; i++)
			w->next->tts_values[t->att_counter[i] - 1] =
				Int64GetDatum(DatumGetInt64(w->found->tts_values[t->att_counter[i] - 1]) + delta[i]);
		ExecStoreVirtualTuple(w->next);
		EvalPlanQualSetSlot(&w->epq, w->next);
		ExecSimpleRelationUpdate(w->rri, w->estate, &w->epq, w->found, w->next);
		return;
	}

	/*
	 * No counter row: its first writer inserts it with a statement, seeing
	 * what has committed so far (ON CONFLICT: a recount's rows).
	 */
	if (!w->spi)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		w->spi = true;
	}
	values[0] = tenant_datum;
	for (i = 0; i < t->nkeys; i++)
		values[1 + i] = key_datum(t->key_types[i], keys[i]);
	values[1 + t->nkeys] = Int16GetDatum(slot);
	for (i = 0; i < t->ncounters; i++)
		values[2 + t->nkeys + i] = Int64GetDatum(delta[i]);
	upsert_types(t, types);
	if (strcmp(RelationGetRelationName(w->rel), t->relname) == 0)
	{
		if (t->upsert_plan == NULL)
		{
			char	   *sql = upsert_sql(t, t->relname, true);

			t->upsert_plan = re_prepare_saved(sql, nargs, types);
			pfree(sql);
		}
		plan = t->upsert_plan;
	}
	else if (t->insert_on_shards)
	{
		/* a Citus shard, on its node: rare (once per key and slot), not saved */
		char	   *sql = upsert_sql(t, RelationGetRelationName(w->rel), false);

		plan = SPI_prepare(sql, nargs, types);
		if (plan == NULL)
			elog(ERROR, "preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
		pfree(sql);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("tenant \"%s\" has no counter rows for key " INT64_FORMAT " in shard %s",
						tenant, keys[0], RelationGetRelationName(w->rel)),
				 errdetail("On Citus these counters are added to the rows made with their parent; they are not created here.")));
	ret = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							   false, true, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inserting into %s failed: %s", RelationGetRelationName(w->rel),
			 SPI_result_code_string(ret));
	if (plan != t->upsert_plan)
		SPI_freeplan(plan);
}

/* Write the transaction's pending changes, in (relation, tenant, keys) order. */
static void
flush_pending(void)
{
	ReOwnerScope scope;
	CounterWriter w;
	int			n = 0;
	int			i;
	int			j;

	/* a table's changes before its last reset are in its counters already */
	for (i = npending - 1; i >= 0; i--)
		if (pending[i].reset)
			for (j = i - 1; j >= 0; j--)
				if (pending[j].table == pending[i].table)
					pending[j].dropped = true;
	for (i = 0; i < npending; i++)
		if (!pending[i].reset && !pending[i].dropped)
			pending[n++] = pending[i];
	npending = n;
	if (npending == 0)
		return;
	qsort(pending, npending, sizeof(PendingDelta), pending_cmp);
	re_enter_owner(&scope);
	writer_open(&w, pending[0].table, pending[0].counters);
	for (i = 0; i < npending; i++)
	{
		ReCounterTable *t = pending[i].table;
		int64		sum[RE_CC_MAX_COUNTERS];
		int			k;

		if (pending[i].counters != RelationGetRelid(w.rel))
		{
			writer_close(&w);
			writer_open(&w, t, pending[i].counters);
		}

		/* subtransactions of one key together */
		memcpy(sum, pending[i].delta, sizeof(sum));
		for (j = i + 1; j < npending && pending_cmp(&pending[i], &pending[j]) == 0; j++)
			for (k = 0; k < t->ncounters; k++)
				sum[k] += pending[j].delta[k];
		write_delta(&w, pending[i].tenant, pending[i].keys,
					(int16) (RE_MY_PROC_INDEX % t->nslots), sum);
		i = j - 1;
	}
	writer_close(&w);
	re_leave_owner(&scope);
	npending = 0;
}

static void
cc_xact_callback(XactEvent event, void *arg)
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
cc_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
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
 * Writers of the counted tables hold their lock until their counter changes
 * have committed, so once the ShareLocks are granted the scan and the
 * counters agree.
 */
void
re_cc_reset(ReCounterTable *t, bool scan)
{
	StringInfoData sql;
	Oid			nsp = get_namespace_oid("revenue_engine", false);
	int			nestlevel;
	int			i;

	register_table(t);
	for (i = 0; i < t->nsources; i++)
	{
		Oid			source = get_relname_relid(t->source_names[i], nsp);

		if (!OidIsValid(source))
			elog(ERROR, "revenue_engine.%s does not exist", t->source_names[i]);
		LockRelationOid(source, ShareLock);
	}
	initStringInfo(&sql);
	appendStringInfo(&sql, "UPDATE revenue_engine.%s SET ", t->relname);
	for (i = 0; i < t->ncounters; i++)
		appendStringInfo(&sql, "%s%s = 0", i > 0 ? ", " : "", t->counter_names[i]);
	run_on_latest(sql.data);
	if (scan)
	{
		char	   *select = t->recount_select();

		/* a policy that would hide rows is an error, not a wrong count */
		nestlevel = NewGUCNestLevel();
		(void) set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		resetStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO revenue_engine.%s AS k (tenant_id", t->relname);
		for (i = 0; i < t->nkeys; i++)
			appendStringInfo(&sql, ", %s", t->key_names[i]);
		appendStringInfoString(&sql, ", slot");
		for (i = 0; i < t->ncounters; i++)
			appendStringInfo(&sql, ", %s", t->counter_names[i]);
		appendStringInfo(&sql, ") %s ON CONFLICT (tenant_id", select);
		for (i = 0; i < t->nkeys; i++)
			appendStringInfo(&sql, ", %s", t->key_names[i]);
		appendStringInfoString(&sql, ", slot) DO UPDATE SET ");
		for (i = 0; i < t->ncounters; i++)
			appendStringInfo(&sql, "%s%s = EXCLUDED.%s", i > 0 ? ", " : "",
							 t->counter_names[i], t->counter_names[i]);
		run_on_latest(sql.data);
		AtEOXact_GUC(true, nestlevel);
		pfree(select);
	}
	pfree(sql.data);
	/* what this transaction changed before is in the counters now */
	new_pending(t)->reset = true;
}

/*
 * On Citus the triggers fire on shards: writing the shell table there would
 * be silently wrong.  Looked up in Citus's catalog once per shard and
 * backend.
 */
#define MAX_SHARD_MAP 64
static Oid	shard_map_from[MAX_SHARD_MAP];
static Oid	shard_map_to[MAX_SHARD_MAP];
static int	nshard_map = 0;

Oid
re_cc_relation(ReCounterTable *t, Relation source, const char *source_name)
{
	Oid			nsp = RelationGetNamespace(source);
	Oid			relid = RelationGetRelid(source);
	Oid			result = InvalidOid;
	Datum		args[4];
	Oid			argtypes[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	int			i;
	int			ret;
	ReOwnerScope scope = {0};

	if (strcmp(RelationGetRelationName(source), source_name) == 0)
		return get_relname_relid(t->relname, nsp);
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
	args[0] = CStringGetTextDatum(RelationGetRelationName(source));
	args[1] = CStringGetTextDatum(get_namespace_name(nsp));
	args[2] = CStringGetTextDatum(source_name);
	args[3] = CStringGetTextDatum(t->relname);
	ret = SPI_execute_with_args(
		"SELECT pg_catalog.to_regclass(pg_catalog.quote_ident($2) OPERATOR(pg_catalog.||) '.'"
		"       OPERATOR(pg_catalog.||) pg_catalog.quote_ident($4 OPERATOR(pg_catalog.||) '_'"
		"       OPERATOR(pg_catalog.||) c.shardid::pg_catalog.text))::pg_catalog.oid"
		"  FROM pg_catalog.pg_dist_shard r"
		"  JOIN pg_catalog.pg_dist_shard c"
		"    ON c.logicalrelid OPERATOR(pg_catalog.=) ('revenue_engine.' OPERATOR(pg_catalog.||) $4)::pg_catalog.regclass"
		"   AND c.shardminvalue OPERATOR(pg_catalog.=) r.shardminvalue"
		" WHERE r.logicalrelid OPERATOR(pg_catalog.=) ('revenue_engine.' OPERATOR(pg_catalog.||) $3)::pg_catalog.regclass"
		"   AND $3 OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) r.shardid::pg_catalog.text OPERATOR(pg_catalog.=) $1",
		4, argtypes, args, NULL, true, 1);
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
				 errmsg("a counter trigger fired on %s, which is neither revenue_engine.%s nor one of its Citus shards with a colocated %s shard on this node",
						RelationGetRelationName(source), source_name, t->relname)));
	if (nshard_map < MAX_SHARD_MAP)
	{
		shard_map_from[nshard_map] = relid;
		shard_map_to[nshard_map++] = result;
	}
	return result;
}
