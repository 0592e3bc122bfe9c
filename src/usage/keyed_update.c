/*-------------------------------------------------------------------------
 *
 * keyed_update.c
 *	  Update one row found by its primary key straight through the heap and
 *	  index access methods.
 *
 * track_daily_usage adds to a counter row that exists on almost every call.
 * Running "INSERT ... ON CONFLICT DO UPDATE" for that costs an executor start
 * and end per statement, which is most of a call.  This file does what the
 * executor's UPDATE does for one row found by primary key, and nothing else:
 * find the version a fresh snapshot sees through the primary key, form the
 * new row and update it through the table access method (waiting for a
 * concurrent writer as UPDATE does in READ COMMITTED), adding index entries
 * when the update is not HOT (and, from PostgreSQL 16 on, to the summarizing
 * BRIN indexes of changed columns when it is).
 *
 * Logical replication's apply does the same job through
 * RelationFindReplTupleByIndex and ExecSimpleRelationUpdate
 * (executor/execReplication.c).  This file uses the same table AM and
 * executor calls (table_tuple_update, ExecInsertIndexTuples,
 * CheckCmdReplicaIdentity) but not those two functions, for these reasons:
 *
 * - RelationFindReplTupleByIndex locks every row it finds (a second WAL
 *   record and a dirtied page per update) because apply updates
 *   unconditionally afterwards; UPDATE locks only when a concurrent writer
 *   committed a newer version first, and so does this file
 *   (table_tuple_update, then on TM_Updated table_tuple_lock of the latest
 *   version and a new row computed from it, as ExecUpdate's EvalPlanQual
 *   step): one WAL record per row update (two only when the new version
 *   leaves the page, as for any UPDATE).
 * - ExecSimpleRelationUpdate raises "tuple concurrently updated" on such a
 *   conflict (apply holds the lock); here the conflict is the normal case of
 *   two sessions counting for one user.
 * - RelationFindReplTupleByIndex scans with a dirty snapshot and builds its
 *   scan keys through the catalog on every call; here the keys' equality
 *   functions are looked up once per relcache rebuild, and the row is the
 *   one an MVCC snapshot sees, as for UPDATE.
 * - ExecSimpleRelationUpdate runs BEFORE/AFTER triggers, stored generated
 *   columns, CHECK constraints and the partition check; this file declines
 *   a table that has any of them, so its rows take the statement path.  NOT
 *   NULL cannot fail: modify() only replaces values.
 * - The EState and ResultRelInfo that ExecInsertIndexTuples needs are set up
 *   for each update that is not HOT, not kept for the transaction: keeping
 *   the indexes open across statements would tie their relcache references
 *   to the transaction's resource owner and need closing before commit and
 *   after every relcache invalidation of the table, for a saving measured
 *   at about 2,500 instructions per non-HOT update (under 2% of a call even
 *   in a batch where most updates leave the page).
 * - A row written here is remembered, for the rest of the transaction, by
 *   where its new version is: its next update in the transaction fetches
 *   that place (visible to the snapshot, same key bytes) instead of
 *   scanning the index.  A batch that counts many uses per user in one
 *   transaction otherwise walks, on every call, all the index entries and
 *   heap versions the transaction itself left behind (none of which can be
 *   pruned before it ends).  The place is only a hint, checked on use; the
 *   memory is in the transaction's context, and a subtransaction's abort and
 *   any invalidation of the table forget it.
 *
 * The table's primary key must be the one the caller expects (columns,
 * order and types): it is checked when the table is first opened and again
 * whenever its primary key index changed, and any other table is declined.
 *
 * It declines (returns false, having changed nothing) whenever that would
 * not be the same as running the statement, and the caller then runs its
 * statement: when the row does not exist (the statement inserts it, with the
 * speculative insertion that handles a concurrent insert), when the row was
 * deleted concurrently, outside READ COMMITTED (the statement raises the
 * serialization failure), in a read-only or parallel transaction, and when
 * the table has anything the executor would have to run for an UPDATE:
 * triggers, rules, row level security, CHECK constraints, generated columns,
 * a partition, or a table access method other than heap.  So a trigger an
 * application adds to a counter table is fired: its calls simply take the
 * statement path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "usage/keyed_update.h"

/*
 * The remembered rows: the key's bytes (each key column as its length and
 * bytes, zero padded) to the place of the version last written.
 */
#define ROW_KEY_BYTES 192
#define ROWS_MAX 16384			/* per table and transaction */

typedef struct RowPlace
{
	char		key[ROW_KEY_BYTES];
	ItemPointerData tid;
} RowPlace;

/* every ReKeyedRel with rows remembered, for the subtransaction abort callback */
#define MAX_KEYED_RELS 8
static ReKeyedRel *keyed_rels[MAX_KEYED_RELS];
static int	nkeyed_rels = 0;

static void
forget_rows(ReKeyedRel *kr)
{
	kr->rows = NULL;			/* its memory goes with the transaction */
	kr->rows_lxid = InvalidLocalTransactionId;
}

/* A version written by an aborted subtransaction may be pruned and its place reused. */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	int			i;

	if (event == SUBXACT_EVENT_ABORT_SUB)
		for (i = 0; i < nkeyed_rels; i++)
			forget_rows(keyed_rels[i]);
}

/* Forget what was looked up when relid (or every relation, InvalidOid) changed. */
void
re_keyed_forget(ReKeyedRel *kr, Oid relid)
{
	if (!OidIsValid(relid) || relid == kr->relid)
	{
		kr->looked_up = false;
		forget_rows(kr);
	}
}

/*
 * The bytes of key column i's value: a varlena's data whatever its header,
 * a fixed-length value's bytes, a by-value Datum itself.
 */
static const char *
key_bytes(ReKeyedRel *kr, int i, const Datum *d, Size *len)
{
	if (kr->keybyval[i])
	{
		*len = sizeof(Datum);
		return (const char *) d;
	}
	if (kr->keylen[i] == -1)
	{
		*len = VARSIZE_ANY_EXHDR(DatumGetPointer(*d));
		return VARDATA_ANY(DatumGetPointer(*d));
	}
	*len = datumGetSize(*d, false, kr->keylen[i]);
	return DatumGetPointer(*d);
}

/* The key's bytes; false when they do not fit (then the row is not remembered). */
static bool
row_key(ReKeyedRel *kr, const Datum *keys, char *buf)
{
	int			off = 0;
	int			i;

	memset(buf, 0, ROW_KEY_BYTES);
	for (i = 0; i < kr->nkeys; i++)
	{
		Size		len;
		const char *p = key_bytes(kr, i, &keys[i], &len);
		int32		len32 = (int32) len;

		if (off + sizeof(int32) + len > ROW_KEY_BYTES)
			return false;
		memcpy(buf + off, &len32, sizeof(int32));
		off += sizeof(int32);
		memcpy(buf + off, p, len);
		off += len;
	}
	return true;
}

/* The table of remembered rows of this transaction, created when create. */
static HTAB *
rows_table(ReKeyedRel *kr, bool create)
{
	HASHCTL		ctl;

	if (kr->rows != NULL && kr->rows_lxid == RE_MY_LXID)
		return kr->rows;
	kr->rows = NULL;
	if (!create)
		return NULL;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = ROW_KEY_BYTES;
	ctl.entrysize = sizeof(RowPlace);
	ctl.hcxt = TopTransactionContext;
	kr->rows = hash_create("revenue_engine rows written", 1024, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	kr->rows_lxid = RE_MY_LXID;
	return kr->rows;
}

/* Once per table: a subtransaction's abort forgets its rows. */
static void
register_keyed(ReKeyedRel *kr)
{
	int			i;

	for (i = 0; i < nkeyed_rels && keyed_rels[i] != kr; i++)
		;
	if (i < nkeyed_rels)
		return;
	if (nkeyed_rels == MAX_KEYED_RELS)
		elog(ERROR, "too many revenue_engine keyed tables");
	if (nkeyed_rels == 0)
		RegisterSubXactCallback(subxact_callback, NULL);
	keyed_rels[nkeyed_rels++] = kr;
}

/*
 * Whether relid is a Citus table (a row of pg_dist_partition, when Citus is
 * installed).  Its relation on this node is then only the shell that Citus
 * routes statements through: the rows are in its shards, so reading the
 * shell's heap would find nothing and "not found" would be a wrong answer.
 * Checked with the rest once per relcache rebuild (Citus invalidates the
 * relation when it distributes it).  Not linked against Citus: its catalog
 * is read by name, and a database without it has no such table.
 */
static bool
is_citus_table(Oid relid)
{
	Oid			catid = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	Relation	cat;
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	if (!OidIsValid(catid))
		return false;
	cat = table_open(catid, AccessShareLock);
	/* logicalrelid, its first column */
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(cat, InvalidOid, false, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(cat, AccessShareLock);
	return found;
}

/*
 * A Citus table's shards: hash ranges and the relations of those placed on
 * this node.  Read once per relcache rebuild of the table (Citus invalidates
 * it when shards change), in their own SPI connection.
 */
static void
load_shards(ReKeyedRel *kr)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(kr->relid)};
	MemoryContext old;
	uint64		i;

	kr->nshards = 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(
			"SELECT s.shardminvalue::int4, s.shardmaxvalue::int4,"
			"       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement p"
			"                          WHERE p.shardid = s.shardid"
			"                            AND p.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group))"
			"            THEN pg_catalog.to_regclass(pg_catalog.quote_ident(n.nspname) || '.' ||"
			"                                        pg_catalog.quote_ident(c.relname || '_' || s.shardid))::oid END"
			"  FROM pg_catalog.pg_dist_shard s"
			"  JOIN pg_catalog.pg_dist_partition d ON d.logicalrelid = s.logicalrelid AND d.partmethod = 'h'"
			"  JOIN pg_catalog.pg_class c ON c.oid = s.logicalrelid"
			"  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
			" WHERE s.logicalrelid = $1", 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading the shards of %s failed", kr->relname);
	old = MemoryContextSwitchTo(CacheMemoryContext);
	if (kr->shard_min == NULL || SPI_processed > (uint64) kr->nshards)
	{
		kr->shard_min = palloc(sizeof(int32) * Max(SPI_processed, 1));
		kr->shard_max = palloc(sizeof(int32) * Max(SPI_processed, 1));
		kr->shard_relid = palloc(sizeof(Oid) * Max(SPI_processed, 1));
	}
	MemoryContextSwitchTo(old);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		kr->shard_min[i] = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		kr->shard_max[i] = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		kr->shard_relid[i] = isnull ? InvalidOid : DatumGetObjectId(d);
	}
	kr->nshards = (int) SPI_processed;
	SPI_finish();
}

/* The relation of the shard holding distribution value key on this node, or InvalidOid. */
static Oid
local_shard(ReKeyedRel *kr, Datum key)
{
	int32		h;
	int			i;

	if (kr->keytypes[0] != TEXTOID)
		return InvalidOid;
	/* Citus hashes a text distribution column with its type's hash function */
	h = DatumGetInt32(OidFunctionCall1Coll(F_HASHTEXT, DEFAULT_COLLATION_OID, key));
	for (i = 0; i < kr->nshards; i++)
		if (kr->shard_min[i] <= h && h <= kr->shard_max[i])
			return kr->shard_relid[i];
	return InvalidOid;
}

/*
 * Check rel (open) against what the caller expects: its columns' types, and
 * a btree primary key on exactly the key columns, in order, of the key types;
 * then look up the keys' equality functions.  NULL when usable, else why not.
 */
static const char *
check_table(ReKeyedRel *kr, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Relation	idx;
	const char *why = NULL;
	int			i;

	for (i = 0; i < kr->ncols; i++)
	{
		AttrNumber	attno = get_attnum(kr->relid, kr->colnames[i]);

		if (attno <= 0 || TupleDescAttr(desc, attno - 1)->atttypid != kr->coltypes[i])
			return psprintf("column \"%s\" is missing or not of type %s",
							kr->colnames[i], format_type_be(kr->coltypes[i]));
		kr->attnos[i] = attno;
	}
	if (!OidIsValid(kr->indexid))
		return "it has no primary key";
	kr->natts = desc->natts;
	idx = index_open(kr->indexid, AccessShareLock);
	if (idx->rd_rel->relam != BTREE_AM_OID ||
		IndexRelationGetNumberOfKeyAttributes(idx) != kr->nkeys)
		why = "its primary key is not the expected btree key";
	for (i = 0; why == NULL && i < kr->nkeys; i++)
	{
		Oid			type = kr->keytypes[i];
		AttrNumber	attno = idx->rd_index->indkey.values[i];
		Oid			op = get_opfamily_member(idx->rd_opfamily[i], type, type,
											 BTEqualStrategyNumber);

		if (attno <= 0 || attno != get_attnum(kr->relid, kr->keynames[i]) ||
			TupleDescAttr(desc, attno - 1)->atttypid != type ||
			idx->rd_opcintype[i] != type || !OidIsValid(op))
		{
			why = psprintf("its primary key's column %d is not \"%s\" of type %s",
						   i + 1, kr->keynames[i], format_type_be(type));
			break;
		}
		kr->keyattnos[i] = attno;
		kr->keylen[i] = TupleDescAttr(RelationGetDescr(idx), i)->attlen;
		kr->keybyval[i] = TupleDescAttr(RelationGetDescr(idx), i)->attbyval;
		kr->collation[i] = idx->rd_indcollation[i];
		kr->eqproc[i] = get_opcode(op);
	}
	index_close(idx, AccessShareLock);
	return why;
}

/*
 * The table opened with lockmode, or NULL when it cannot be used this way:
 * missing, not the primary key or columns expected (checked again whenever
 * the primary key index changed), not a heap table, row level security, and
 * for an update (for_update) anything else an UPDATE would have to run:
 * triggers, rules, CHECK constraints, generated columns, a partition.
 */
static Relation
open_keyed(ReKeyedRel *kr, LOCKMODE lockmode, bool for_update, const Datum *keys)
{
	Relation	rel;
	TupleConstr *constr;
	bool		check = !kr->looked_up;

	if (!kr->looked_up)
	{
		register_keyed(kr);
		kr->looked_up = true;
		kr->usable = false;
		kr->indexid = InvalidOid;
		kr->relid = get_relname_relid(kr->relname,
									  get_namespace_oid("revenue_engine", false));
	}
	if (!OidIsValid(kr->relid))
		return NULL;
	rel = table_open(kr->relid, lockmode);
	if (!rel->rd_indexvalid)
		list_free(RelationGetIndexList(rel));	/* sets rd_pkindex */
	if (check || rel->rd_pkindex != kr->indexid)
	{
		/* first open, or the primary key was replaced: check it again */
		const char *why;

		kr->indexid = rel->rd_pkindex;
		forget_rows(kr);
		why = check_table(kr, rel);
		kr->usable = (why == NULL);
		kr->citus = kr->usable && is_citus_table(kr->relid);
		if (kr->citus)
			load_shards(kr);
		if (why != NULL)
			ereport(DEBUG1,
					(errmsg("revenue_engine.%s is not accessed by its primary key: %s",
							kr->relname, why),
					 errdetail("Its rows are read and written by statements.")));
	}
	kr->cur_indexid = kr->indexid;

	/*
	 * A Citus table: here it is only the shell Citus routes statements
	 * through (its rows are in its shards; reading it would find nothing and
	 * take that for the answer).  The shard holding the key, when it is on
	 * this node (a distributed call runs on the node of its tenant), is a
	 * plain table with the same columns: that one is used.  Otherwise the
	 * caller's statement runs, and Citus routes it.
	 */
	if (kr->usable && kr->citus)
	{
		Oid			shard = local_shard(kr, keys[0]);
		Relation	srel;

		table_close(rel, NoLock);
		if (!OidIsValid(shard))
			return NULL;
		srel = try_table_open(shard, lockmode);
		if (srel == NULL)
			return NULL;
		if (!srel->rd_indexvalid)
			list_free(RelationGetIndexList(srel));
		if (RelationGetDescr(srel)->natts != kr->natts || !OidIsValid(srel->rd_pkindex))
		{
			table_close(srel, NoLock);
			return NULL;
		}
		rel = srel;
		kr->cur_indexid = rel->rd_pkindex;
	}
	constr = rel->rd_att->constr;
	if (kr->usable &&
		rel->rd_rel->relkind == RELKIND_RELATION &&
		rel->rd_rel->relam == HEAP_TABLE_AM_OID &&
	/*
	 * Row level security (forced on every tenant table, src/tenancy): only
	 * where a statement would apply no policy either, as check_enable_rls()
	 * decides for the table's owner with SECURITY_NOFORCE_RLS: in the owner
	 * scope (re_enter_owner), where the extension's calls run.
	 */
		(!rel->rd_rel->relrowsecurity ||
		 (InNoForceRLSOperation() && rel->rd_rel->relowner == GetUserId())) &&
		(!for_update ||
		 (rel->trigdesc == NULL && !rel->rd_rel->relhasrules &&
		  !rel->rd_rel->relispartition &&
		  (constr == NULL || (constr->num_check == 0 && !constr->has_generated_stored)))))
		return rel;
	table_close(rel, NoLock);
	return NULL;
}

/*
 * Whether the key columns of the row in slot still equal keys: by the
 * index's equality, or when binary, by their bytes.
 */
static bool
same_key(ReKeyedRel *kr, TupleTableSlot *slot, const Datum *keys, bool binary)
{
	int			i;

	for (i = 0; i < kr->nkeys; i++)
	{
		bool		isnull;
		Datum		v = slot_getattr(slot, kr->keyattnos[i], &isnull);

		if (isnull)
			return false;
		if (binary)
		{
			Size		len1,
						len2;
			const char *p1 = key_bytes(kr, i, &v, &len1);
			const char *p2 = key_bytes(kr, i, &keys[i], &len2);

			if (len1 != len2 || memcmp(p1, p2, len1) != 0)
				return false;
		}
		else if (!DatumGetBool(OidFunctionCall2Coll(kr->eqproc[i], kr->collation[i],
													v, keys[i])))
			return false;
	}
	return true;
}

/* Where this transaction last wrote or read the row, or NULL. */
static RowPlace *
remembered(ReKeyedRel *kr, const Datum *keys, char *rowkey, bool *have_key)
{
	HTAB	   *rows;

	*have_key = row_key(kr, keys, rowkey);
	rows = *have_key ? rows_table(kr, false) : NULL;
	return rows != NULL ? hash_search(rows, rowkey, HASH_FIND, NULL) : NULL;
}

/* Remember where the row is, up to ROWS_MAX rows per table and transaction. */
static void
remember(ReKeyedRel *kr, const char *rowkey, ItemPointer tid)
{
	HTAB	   *rows = rows_table(kr, true);
	RowPlace   *place;

	place = hash_search(rows, rowkey,
						hash_get_num_entries(rows) < ROWS_MAX ? HASH_ENTER : HASH_FIND,
						NULL);
	if (place != NULL)
		place->tid = *tid;
}

/* The version of the row with primary key keys[] that snap sees, into slot. */
static bool
index_lookup(ReKeyedRel *kr, Relation rel, Snapshot snap, const Datum *keys,
			 LOCKMODE lockmode, TupleTableSlot *slot)
{
	Relation	idx = index_open(kr->cur_indexid, lockmode);
	ScanKeyData skey[INDEX_MAX_KEYS];
	IndexScanDesc scan;
	bool		found;
	int			i;

	for (i = 0; i < kr->nkeys; i++)
		ScanKeyEntryInitialize(&skey[i], 0, i + 1, BTEqualStrategyNumber,
							   InvalidOid, kr->collation[i], kr->eqproc[i], keys[i]);
	scan = re_index_beginscan(rel, idx, snap, kr->nkeys, 0);
	index_rescan(scan, skey, kr->nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(idx, NoLock);
	return found;
}

/*
 * Into slot, the version of the row with primary key keys[] that snap sees:
 * at the place this transaction last wrote or read it when that place still
 * holds it, else through the index.  rowkey, have_key: its key bytes.
 */
static bool
find_row(ReKeyedRel *kr, Relation rel, Snapshot snap, const Datum *keys,
		 LOCKMODE lockmode, TupleTableSlot *slot, char *rowkey, bool *have_key)
{
	RowPlace   *place = remembered(kr, keys, rowkey, have_key);

	if (place != NULL)
	{
		ItemPointerData tid = place->tid;

		if (table_tuple_fetch_row_version(rel, &tid, snap, slot) &&
			same_key(kr, slot, keys, true))
			return true;
	}
	return index_lookup(kr, rel, snap, keys, lockmode, slot);
}

/*
 * Index entries for the new version in newslot, as ExecUpdate makes them:
 * in every index, or after a HOT update only in the summarizing (BRIN) ones.
 */
static void
insert_index_entries(Relation rel, TupleTableSlot *newslot, bool only_summarizing)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	(void) re_insert_update_index_tuples(rri, newslot, estate, only_summarizing);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
}

/*
 * Update the row whose primary key is keys[] (one Datum per key column, of
 * the column's type): modify() turns the old values into the new ones.
 * Returns true when the row was updated, with the arrays *valuesp and
 * *nullsp (palloc'd, one per column) then holding the new row; false when
 * nothing was done and the caller must run its statement.
 */
bool
re_keyed_update(ReKeyedRel *kr, const Datum *keys, ReRowModify modify, void *arg,
				Datum **valuesp, bool **nullsp)
{
	Datum	   *values;
	bool	   *nulls;
	Relation	rel;
	Snapshot	snap;
	TupleTableSlot *slot;
	TupleTableSlot *newslot;
	ItemPointerData tid;
	TM_FailureData tmfd;
	TM_Result	res = TM_Invisible;
	LockTupleMode lockmode;
	ReUpdateIndexes update_indexes;
	HeapTuple	newtup;
	CommandId	cid;
	TupleDesc	desc;
	bool		found;
	bool		have_key;
	char		rowkey[ROW_KEY_BYTES];
	int			attempt;

	if (XactIsoLevel != XACT_READ_COMMITTED || XactReadOnly || IsInParallelMode())
		return false;
	rel = open_keyed(kr, RowExclusiveLock, true, keys);
	if (rel == NULL)
		return false;
	/* UPDATE's check of a published table without a replica identity */
	CheckCmdReplicaIdentity(rel, CMD_UPDATE);
	desc = RelationGetDescr(rel);

	/* see this transaction's earlier changes, as a new statement does */
	CommandCounterIncrement();
	cid = GetCurrentCommandId(true);
	snap = RegisterSnapshot(GetLatestSnapshot());

	slot = table_slot_create(rel, NULL);
	newslot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);

	/*
	 * Update the version the snapshot sees.  When a concurrent writer
	 * committed a newer one first (TM_Updated), lock the latest version and
	 * update that one, computed again from it: the lock holds, so the second
	 * attempt succeeds.  Deleted, or its key changed meanwhile: the
	 * statement decides.
	 */
	found = find_row(kr, rel, snap, keys, RowExclusiveLock, slot, rowkey, &have_key);
	for (attempt = 0; found && attempt < 2; attempt++)
	{
		tid = slot->tts_tid;
		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(Datum) * desc->natts);
		memcpy(nulls, slot->tts_isnull, sizeof(bool) * desc->natts);
		modify(kr, values, nulls, arg);
		newtup = heap_form_tuple(desc, values, nulls);
		ExecStoreHeapTuple(newtup, newslot, false);
		res = table_tuple_update(rel, &tid, newslot, cid, snap, InvalidSnapshot,
								 true, &tmfd, &lockmode, &update_indexes);
		if (res != TM_Updated)
			break;
		ExecClearTuple(newslot);
		heap_freetuple(newtup);
		res = table_tuple_lock(rel, &tid, snap, slot, cid, LockTupleNoKeyExclusive,
							   LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		found = (res == TM_Ok && same_key(kr, slot, keys, false));
		res = TM_Invisible;
	}

	if (found && res == TM_Ok)
	{
		/* not HOT, or HOT with a summarizing index on a changed column */
		if (RE_UPDATE_NEEDS_INDEXES(update_indexes))
			insert_index_entries(rel, newslot,
								 RE_UPDATE_ONLY_SUMMARIZING(update_indexes));
		if (have_key)
			remember(kr, rowkey, &newslot->tts_tid);
		/* the new row, valid after the slots let go of the buffer and the copy */
		heap_deform_tuple(newtup, desc, values, nulls);
		*valuesp = values;
		*nullsp = nulls;
	}

	ExecDropSingleTupleTableSlot(newslot);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return found && res == TM_Ok;
}

/*
 * Read the row whose primary key is keys[], as the transaction's snapshot
 * sees it (a fresh one in READ COMMITTED).  Returns false when the table
 * cannot be read this way (the caller runs its statement); otherwise true,
 * with *found, and when found the arrays *valuesp and *nullsp (palloc'd, one per column,
 * toasted values left to the caller to detoast).
 *
 * A row found is remembered by place for the rest of the transaction, like a
 * row written: the next read of it fetches that place and checks the key and
 * visibility, without the index scan.  No invalidation is needed for that:
 * the table's lock, held from the first read to the end of the transaction
 * (a subtransaction's abort, which releases it, forgets every place),
 * keeps VACUUM from truncating the table under a place, and a version
 * deleted, pruned or replaced meanwhile fails the visibility or the key
 * check, so the index is used.
 */
bool
re_keyed_fetch(ReKeyedRel *kr, const Datum *keys, bool *found,
			   Datum **valuesp, bool **nullsp)
{
	Relation	rel;
	Snapshot	snap;
	TupleTableSlot *slot;
	TupleDesc	desc;
	char		rowkey[ROW_KEY_BYTES];
	bool		have_key;
	bool		hit;

	rel = open_keyed(kr, AccessShareLock, false, keys);
	if (rel == NULL)
		return false;
	desc = RelationGetDescr(rel);

	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	slot = table_slot_create(rel, NULL);

	hit = find_row(kr, rel, snap, keys, AccessShareLock, slot, rowkey, &have_key);
	if (hit && have_key)
		remember(kr, rowkey, &slot->tts_tid);

	*found = hit;
	if (hit)
	{
		HeapTuple	copy = ExecCopySlotHeapTuple(slot);

		*valuesp = palloc(sizeof(Datum) * desc->natts);
		*nullsp = palloc(sizeof(bool) * desc->natts);
		heap_deform_tuple(copy, desc, *valuesp, *nullsp);
	}
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return true;
}
