/*-------------------------------------------------------------------------
 *
 * keyed_update.c
 *	  Update one row found by its primary key straight through the heap and
 *	  index access methods.
 *
 * track_daily_usage adds to a counter row that exists on almost every call.
 * Running "INSERT ... ON CONFLICT DO UPDATE" for that costs an executor start
 * and end per statement, which is most of a call.  This file does what the
 * executor's ON CONFLICT path does for an existing row, and nothing else:
 * find the row through the primary key with a fresh snapshot, lock its latest
 * version (waiting for a concurrent writer, as UPDATE does in READ
 * COMMITTED), form the new row and heap_update it, adding index entries when
 * the update is not HOT.
 *
 * It declines (returns false, having changed nothing) whenever that would
 * not be the same as running the statement, and the caller then runs its
 * statement: when the row does not exist (the statement inserts it, with the
 * speculative insertion that handles a concurrent insert), when the row was
 * deleted concurrently, outside READ COMMITTED (the statement raises the
 * serialization failure), in a read-only or parallel transaction, and when
 * the table has anything the executor would have to run for an UPDATE:
 * triggers, rules, row level security, CHECK constraints, generated columns,
 * or a table access method other than heap.  So a trigger an application
 * adds to a counter table is fired: its calls simply take the statement path.
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
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "usage/keyed_update.h"

/* Forget what was looked up when relid (or every relation, InvalidOid) changed. */
void
re_keyed_forget(ReKeyedRel *kr, Oid relid)
{
	if (!OidIsValid(relid) || relid == kr->relid)
		kr->looked_up = false;
}

/* Resolve the table, its primary key's equality functions and the columns. */
static void
look_up(ReKeyedRel *kr)
{
	Oid			nsp = get_namespace_oid("revenue_engine", false);
	Relation	rel;
	Relation	idx;
	int			i;

	kr->looked_up = true;
	kr->usable = false;
	kr->relid = get_relname_relid(kr->relname, nsp);
	if (!OidIsValid(kr->relid))
		return;
	rel = table_open(kr->relid, AccessShareLock);
	(void) RelationGetIndexList(rel);	/* sets rd_pkindex */
	kr->indexid = rel->rd_pkindex;
	for (i = 0; i < kr->ncols; i++)
	{
		AttrNumber	attno = get_attnum(kr->relid, kr->colnames[i]);

		if (attno <= 0 || get_atttype(kr->relid, attno) != kr->coltypes[i])
		{
			table_close(rel, AccessShareLock);
			return;
		}
		kr->attnos[i] = attno;
	}
	if (!OidIsValid(kr->indexid))
	{
		table_close(rel, AccessShareLock);
		return;
	}
	idx = index_open(kr->indexid, AccessShareLock);
	kr->nkeys = IndexRelationGetNumberOfKeyAttributes(idx);
	kr->usable = (idx->rd_rel->relam == BTREE_AM_OID);
	for (i = 0; kr->usable && i < kr->nkeys; i++)
	{
		Oid			type = idx->rd_opcintype[i];
		Oid			op = get_opfamily_member(idx->rd_opfamily[i], type, type,
											 BTEqualStrategyNumber);

		kr->keyattnos[i] = idx->rd_index->indkey.values[i];
		kr->collation[i] = idx->rd_indcollation[i];
		kr->eqproc[i] = OidIsValid(op) ? get_opcode(op) : InvalidOid;
		if (!OidIsValid(kr->eqproc[i]) || kr->keyattnos[i] <= 0)
			kr->usable = false;
	}
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
}

/* Whether an UPDATE of rel runs nothing but the heap update and its index entries. */
static bool
plain_table(Relation rel)
{
	TupleConstr *constr = rel->rd_att->constr;

	return rel->rd_rel->relkind == RELKIND_RELATION &&
		rel->rd_rel->relam == HEAP_TABLE_AM_OID &&
		rel->trigdesc == NULL &&
		!rel->rd_rel->relhasrules &&
		!rel->rd_rel->relrowsecurity &&
		(constr == NULL || (constr->num_check == 0 && !constr->has_generated_stored));
}

/* Whether the key columns of the row in slot still equal keys. */
static bool
same_key(ReKeyedRel *kr, TupleTableSlot *slot, const Datum *keys)
{
	int			i;

	for (i = 0; i < kr->nkeys; i++)
	{
		bool		isnull;
		Datum		v = slot_getattr(slot, kr->keyattnos[i], &isnull);

		if (isnull ||
			!DatumGetBool(OidFunctionCall2Coll(kr->eqproc[i], kr->collation[i], v, keys[i])))
			return false;
	}
	return true;
}

/*
 * Update the row whose primary key is keys[] (one Datum per key column, of
 * the column's type): modify() turns the old values into the new ones.
 * Returns true when the row was updated, with the arrays *valuesp and *nullsp (palloc'd, one
 * per column) then holding the new row; false when nothing was done and the
 * caller must run its statement.
 */
bool
re_keyed_update(ReKeyedRel *kr, const Datum *keys, ReRowModify modify, void *arg,
				Datum **valuesp, bool **nullsp)
{
	Datum	   *values;
	bool	   *nulls;
	Relation	rel;
	Relation	idx;
	ScanKeyData skey[INDEX_MAX_KEYS];
	Snapshot	snap;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ItemPointerData tid;
	TM_FailureData tmfd;
	TM_Result	res;
	HeapTuple	newtup;
	CommandId	cid;
	TupleDesc	desc;
	int			i;
	bool		done = false;

	if (XactIsoLevel != XACT_READ_COMMITTED || XactReadOnly || IsInParallelMode())
		return false;
	if (!kr->looked_up)
		look_up(kr);
	if (!kr->usable)
		return false;

	rel = table_open(kr->relid, RowExclusiveLock);
	if (!plain_table(rel) || rel->rd_pkindex != kr->indexid)
	{
		table_close(rel, NoLock);
		return false;
	}
	desc = RelationGetDescr(rel);

	/* see this transaction's earlier changes, as a new statement does */
	CommandCounterIncrement();
	cid = GetCurrentCommandId(true);
	snap = RegisterSnapshot(GetLatestSnapshot());

	idx = index_open(kr->indexid, RowExclusiveLock);
	for (i = 0; i < kr->nkeys; i++)
		ScanKeyEntryInitialize(&skey[i], 0, i + 1, BTEqualStrategyNumber,
							   InvalidOid, kr->collation[i], kr->eqproc[i], keys[i]);
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, idx, snap, kr->nkeys, 0);
	index_rescan(scan, skey, kr->nkeys, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
		ItemPointerCopy(&slot->tts_tid, &tid);
	else
		ItemPointerSetInvalid(&tid);
	index_endscan(scan);

	if (ItemPointerIsValid(&tid))
	{
		/* the latest version, locked as UPDATE locks it in READ COMMITTED */
		res = table_tuple_lock(rel, &tid, snap, slot, cid, LockTupleNoKeyExclusive,
							   LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (res == TM_Ok && (!tmfd.traversed || same_key(kr, slot, keys)))
		{
			slot_getallattrs(slot);
			values = palloc(sizeof(Datum) * desc->natts);
			nulls = palloc(sizeof(bool) * desc->natts);
			memcpy(values, slot->tts_values, sizeof(Datum) * desc->natts);
			memcpy(nulls, slot->tts_isnull, sizeof(bool) * desc->natts);
			modify(kr, values, nulls, arg);
			newtup = heap_form_tuple(desc, values, nulls);
			simple_heap_update(rel, &slot->tts_tid, newtup);
			if (!HeapTupleIsHeapOnly(newtup))
			{
				/* not HOT: every index gets an entry for the new version */
				EState	   *estate = CreateExecutorState();
				ResultRelInfo *rri = makeNode(ResultRelInfo);
				TupleTableSlot *hslot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);

				InitResultRelInfo(rri, rel, 0, NULL, 0);
				ExecOpenIndices(rri, false);
				ExecStoreHeapTuple(newtup, hslot, false);
				(void) ExecInsertIndexTuples(rri, hslot, estate, true, false, NULL, NIL);
				ExecCloseIndices(rri);
				ExecDropSingleTupleTableSlot(hslot);
				FreeExecutorState(estate);
			}
			/* the new row, valid after the slot lets go of the buffer */
			for (i = 0; i < desc->natts; i++)
				if (!nulls[i])
					values[i] = heap_getattr(newtup, i + 1, desc, &nulls[i]);
			*valuesp = values;
			*nullsp = nulls;
			done = true;
		}
		/* otherwise deleted, or its key changed, meanwhile: the statement decides */
	}

	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, NoLock);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return done;
}
