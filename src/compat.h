/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every difference between the PostgreSQL major versions revenue_engine
 *	  supports (15, 17 and 18, the ones the test suite runs on), in one
 *	  place: the .c files use the names defined here and test
 *	  PG_VERSION_NUM nowhere else.
 *
 * Include it after postgres.h and the PostgreSQL headers a file uses (it
 * includes what its own definitions need).  Each entry names the version
 * that made the change.  When the oldest supported major moves past a
 * change, its entry goes and the code calls PostgreSQL directly.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_COMPAT_H
#define RE_COMPAT_H

#include "postgres.h"

#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "nodes/parsenodes.h"
#include "parser/parse_relation.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#if PG_VERSION_NUM < 150000
#error "revenue_engine needs PostgreSQL 15 or later"
#endif

/*
 * 17: BackendId became ProcNumber (storage/backendid.h is gone), numbered
 * from 0 instead of 1.  RE_MY_PROC_INDEX is this backend's index from 0, below
 * MaxBackends for every backend and background worker.
 */
#if PG_VERSION_NUM >= 170000
#define RE_MY_PROC_INDEX	((int) MyProcNumber)
#else
#include "storage/backendid.h"
#define RE_MY_PROC_INDEX	((int) MyBackendId - 1)
#endif

/* 17: the local transaction id moved into PGPROC's vxid. */
#if PG_VERSION_NUM >= 170000
#define RE_MY_LXID			(MyProc->vxid.lxid)
#else
#define RE_MY_LXID			(MyProc->lxid)
#endif

/*
 * 16: table_tuple_update says which indexes an update needs as a
 * TU_UpdateIndexes (a HOT update still needs entries in summarizing, BRIN,
 * indexes: TU_Summarizing), and ExecInsertIndexTuples takes onlySummarizing.
 * Before 16, a HOT update was one that changed no indexed column at all, BRIN
 * included: no index needed anything (a bool).
 */
#if PG_VERSION_NUM >= 160000
typedef TU_UpdateIndexes ReUpdateIndexes;
#define RE_UPDATE_NEEDS_INDEXES(u)		((u) != TU_None)
#define RE_UPDATE_ONLY_SUMMARIZING(u)	((u) == TU_Summarizing)
#define re_insert_update_index_tuples(rri, slot, estate, only_summarizing) \
	ExecInsertIndexTuples((rri), (slot), (estate), true, false, NULL, NIL, \
						  (only_summarizing))
#else
typedef bool ReUpdateIndexes;
#define RE_UPDATE_NEEDS_INDEXES(u)		(u)
#define RE_UPDATE_ONLY_SUMMARIZING(u)	((void) (u), false)
#define re_insert_update_index_tuples(rri, slot, estate, only_summarizing) \
	((void) (only_summarizing), \
	 ExecInsertIndexTuples((rri), (slot), (estate), true, false, NULL, NIL))
#endif

/* 18: index_beginscan takes the scan's instrumentation (NULL: none). */
#if PG_VERSION_NUM >= 180000
#define re_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define re_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/*
 * 17: makeJsonLexContextCstringLen fills a caller's JsonLexContext (NULL: it
 * allocates one) and takes a size_t length.
 */
#if PG_VERSION_NUM >= 170000
#define re_json_lex_context(json, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen(NULL, (json), (len), (encoding), (need_escapes))
#else
#define re_json_lex_context(json, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen((char *) (json), (int) (len), (encoding), (need_escapes))
#endif

/* 16: stringToQualifiedNameList takes an error context (NULL: raise errors). */
#if PG_VERSION_NUM >= 160000
#define re_qualified_name_list(string)	stringToQualifiedNameList((string), NULL)
#else
#define re_qualified_name_list(string)	stringToQualifiedNameList(string)
#endif

/*
 * 16: the per-kind ACL and owner checks became object_aclcheck(class, ...)
 * and object_ownercheck(class, ...).
 */
#if PG_VERSION_NUM >= 160000
#define re_proc_aclcheck(proc, role, mode) \
	object_aclcheck(ProcedureRelationId, (proc), (role), (mode))
#define re_tablespace_aclcheck(spc, role, mode) \
	object_aclcheck(TableSpaceRelationId, (spc), (role), (mode))
#define re_database_ownercheck(db, role) \
	object_ownercheck(DatabaseRelationId, (db), (role))
#else
#define re_proc_aclcheck(proc, role, mode)	pg_proc_aclcheck((proc), (role), (mode))
#define re_tablespace_aclcheck(spc, role, mode) \
	pg_tablespace_aclcheck((spc), (role), (mode))
#define re_database_ownercheck(db, role)	pg_database_ownercheck((db), (role))
#endif

/*
 * 16: ALTER TABLE's recursing subcommands (AT_AddColumnRecurse,
 * AT_DropColumnRecurse) were folded into the plain ones.
 */
#if PG_VERSION_NUM >= 160000
#define RE_AT_IS_ADD_COLUMN(subtype)	((subtype) == AT_AddColumn)
#define RE_AT_IS_DROP_COLUMN(subtype)	((subtype) == AT_DropColumn)
#else
#define RE_AT_IS_ADD_COLUMN(subtype) \
	((subtype) == AT_AddColumn || (subtype) == AT_AddColumnRecurse)
#define RE_AT_IS_DROP_COLUMN(subtype) \
	((subtype) == AT_DropColumn || (subtype) == AT_DropColumnRecurse)
#endif

/*
 * The range table of an executor state for one relation, set up by hand as
 * logical replication's apply does it (create_edata_for_relation).  16: the
 * permissions moved from the RangeTblEntry to an RTEPermissionInfo list;
 * 18: the relations that survived initial pruning are passed too.
 */
static inline void
re_init_range_table(EState *estate, RangeTblEntry *rte)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;

	addRTEPermissionInfo(&perminfos, rte);
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
}

/* 16: EvalPlanQualInit takes the result relations (NIL: none). */
#if PG_VERSION_NUM >= 160000
#define re_epq_init(epq, estate) \
	EvalPlanQualInit((epq), (estate), NULL, NIL, -1, NIL)
#else
#define re_epq_init(epq, estate) \
	EvalPlanQualInit((epq), (estate), NULL, NIL, -1)
#endif

/*
 * 18: RelationGetPrimaryKeyIndex says whether a deferrable primary key will
 * do (it does not here: the callers look rows up by a key that is unique at
 * all times).
 */
#if PG_VERSION_NUM >= 180000
#define re_relation_primary_key(rel)	RelationGetPrimaryKeyIndex((rel), false)
#else
#define re_relation_primary_key(rel)	RelationGetPrimaryKeyIndex(rel)
#endif

/*
 * 17: a WaitEventSet belongs to a resource owner (NULL: to none, kept in
 * TopMemoryContext) instead of a memory context.
 */
#if PG_VERSION_NUM >= 170000
#define re_create_wait_event_set(nevents)	CreateWaitEventSet(NULL, (nevents))
#else
#define re_create_wait_event_set(nevents) \
	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * 16: a GUC check hook's *extra (and a new string value) is freed with
 * guc_free, so it must come from guc_malloc; before, from malloc.  NULL when
 * out of memory (a LOG message on 16+).
 */
#if PG_VERSION_NUM >= 160000
#define re_guc_malloc(size)		guc_malloc(LOG, (size))
#else
#define re_guc_malloc(size)		malloc(size)
#endif

/*
 * The owner scope's search_path (re_enter_owner): pg_catalog only, whatever
 * the caller's.  re_pin_search_path returns what re_unpin_search_path, called
 * in the same transaction and in last-in first-out order, undoes.
 *
 * Before 17: the override search path stack, exactly pg_catalog (no
 * temporary schema at all), at no per-call cost.  17 removed the stack: the
 * scope pins the search_path setting as fmgr_security_definer pins a
 * function's SET search_path (a GUC nest level, AtEOXact_GUC to restore the
 * caller's), to "pg_catalog, pg_temp": the temporary schema is searched last,
 * so it shadows nothing in pg_catalog, and never for functions and operators
 * (as PostgreSQL's own RestrictSearchPath does for maintenance commands).
 * 17's search path cache keeps that cheap; a scope entered where it is
 * already pinned (a nested scope, the worker) adds no level.  (On 15 the
 * setting would cost about 2.5 us of CPU per track_daily_usage call, some 9%,
 * measured with test/bench/run.sh.)
 */
#if PG_VERSION_NUM >= 170000
#define RE_OWNER_SEARCH_PATH	"pg_catalog, pg_temp"

static inline int
re_pin_search_path(void)
{
	int			nestlevel;

	if (namespace_search_path != NULL &&
		strcmp(namespace_search_path, RE_OWNER_SEARCH_PATH) == 0)
		return 0;
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", RE_OWNER_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return nestlevel;
}

static inline void
re_unpin_search_path(int pin)
{
	if (pin > 0)
		AtEOXact_GUC(true, pin);
}
#else
static inline int
re_pin_search_path(void)
{
	static OverrideSearchPath *pinned = NULL;

	if (pinned == NULL)
	{
		pinned = MemoryContextAllocZero(TopMemoryContext, sizeof(OverrideSearchPath));
		pinned->schemas = NIL;
		pinned->addCatalog = true;
		pinned->addTemp = false;
	}
	PushOverrideSearchPath(pinned);
	return 1;
}

static inline void
re_unpin_search_path(int pin)
{
	PopOverrideSearchPath();
}
#endif

/* 18: base64 encodes from and decodes into uint8 bytes instead of char. */
#if PG_VERSION_NUM >= 180000
#define re_b64_encode(src, len, dst, dstlen) \
	pg_b64_encode((const uint8 *) (src), (len), (dst), (dstlen))
#define re_b64_decode(src, len, dst, dstlen) \
	pg_b64_decode((src), (len), (uint8 *) (dst), (dstlen))
#else
#define re_b64_encode(src, len, dst, dstlen) \
	pg_b64_encode((const char *) (src), (len), (dst), (dstlen))
#define re_b64_decode(src, len, dst, dstlen) \
	pg_b64_decode((src), (len), (char *) (dst), (dstlen))
#endif

/* 17: the backend's local transaction id moved into PGPROC.vxid. */
#if PG_VERSION_NUM >= 170000
#define RE_MY_LXID (MyProc->vxid.lxid)
#else
#define RE_MY_LXID (MyProc->lxid)
#endif

#endif							/* RE_COMPAT_H */
