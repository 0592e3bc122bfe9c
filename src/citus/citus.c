/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What the rest of the extension needs to know about Citus, without
 *	  linking against it (see src/citus/citus.sql for distribute()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/planner.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "revenue_engine.h"

/*
 * Whether this backend runs statements that another Citus node sent it: a
 * shard's part of a query planned on the coordinator, or a call of a
 * distributed function.  Citus names these connections "citus_internal
 * gpid=..." (its CITUS_APPLICATION_NAME_PREFIX; "citus_rebalancer" for
 * shard moves).  A session setting of the client, such as
 * revenue_engine.tenant, does not reach such a backend.
 */
bool
re_citus_remote_backend(void)
{
	return application_name != NULL &&
		(strncmp(application_name, "citus_internal", 14) == 0 ||
		 strncmp(application_name, "citus_rebalancer", 16) == 0);
}

/*
 * Invalidate rel, the table of the extension named relname, for every
 * backend that caches what it holds.  A trigger of a Citus reference table
 * fires on the table's shard of each node (usage_types_102008), and the
 * caches watch the table itself: then both are invalidated.
 */
void
re_invalidate_table(Relation rel, const char *relname)
{
	CacheInvalidateRelcache(rel);
	if (strcmp(RelationGetRelationName(rel), relname) != 0)
	{
		Oid			table = get_relname_relid(relname, RelationGetNamespace(rel));

		if (OidIsValid(table))
			CacheInvalidateRelcacheByRelid(table);
	}
}

/*
 * Citus runs a call of a distributed function (the tenant forms, after
 * distribute()) on the node holding its tenant, over a connection made as
 * the current user: there, the call's session user is that role.  A bound
 * login that SET ROLE to an unbound role, or calls through a SECURITY
 * DEFINER function of one, would be bound nowhere on that node.  So before
 * Citus plans (and delegates) a statement whose user is not its session or
 * SET ROLE user, each tenant form called at its top level, the only calls
 * Citus delegates, with a constant or parameter tenant, the only ones it
 * delegates, has its tenant checked here, against every role of the session
 * (42501 as the call itself would raise).  A statement run as its session
 * user is left alone: the node the call runs on sees the same role.
 */
static planner_hook_type prev_planner_hook = NULL;

static bool
is_tenant_form(Oid funcid)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);

		if (proc->prolang == ClanguageId && proc->pronargs > 0)
		{
			bool		isnull;
			Datum		src = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);

			result = !isnull && strcmp(TextDatumGetCString(src), "re_tenant_form") == 0;
		}
		ReleaseSysCache(tup);
	}
	return result;
}

static void
check_tenant_form_call(Node *node, ParamListInfo params)
{
	FuncExpr   *call;
	Node	   *arg;
	Node	   *bare;
	EState	   *estate;
	ExprState  *state;
	Datum		tenant;
	bool		isnull;

	if (node == NULL || !IsA(node, FuncExpr))
		return;
	call = (FuncExpr *) node;
	if (call->args == NIL || !is_tenant_form(call->funcid))
		return;
	arg = linitial(call->args);
	bare = strip_implicit_coercions(arg);
	if (!IsA(bare, Const) &&
		!(IsA(bare, Param) && ((Param *) bare)->paramkind == PARAM_EXTERN))
		return;					/* Citus does not delegate it: the call checks */
	estate = CreateExecutorState();
	estate->es_param_list_info = params;
	state = ExecPrepareExpr((Expr *) arg, estate);
	tenant = ExecEvalExprSwitchContext(state, GetPerTupleExprContext(estate), &isnull);
	if (!isnull)
		re_check_tenant_form_tenant(TextDatumGetCString(tenant));
	FreeExecutorState(estate);
}

static PlannedStmt *
tenant_form_planner(Query *parse, const char *query_string, int cursor_options,
					ParamListInfo params)
{
	if (parse->commandType == CMD_SELECT &&
		(GetSessionUserId() != GetUserId() || GetOuterUserId() != GetUserId()))
	{
		ListCell   *lc;

		foreach(lc, parse->targetList)
			check_tenant_form_call((Node *) ((TargetEntry *) lfirst(lc))->expr, params);
		foreach(lc, parse->rtable)
		{
			RangeTblEntry *rte = lfirst(lc);
			ListCell   *f;

			if (rte->rtekind != RTE_FUNCTION)
				continue;
			foreach(f, rte->functions)
				check_tenant_form_call(((RangeTblFunction *) lfirst(f))->funcexpr, params);
		}
	}
	if (prev_planner_hook)
		return prev_planner_hook(parse, query_string, cursor_options, params);
	return standard_planner(parse, query_string, cursor_options, params);
}

/* Called by _PG_init, after Citus's (shared_preload_libraries = 'citus,revenue_engine') */
void
re_citus_init(void)
{
	prev_planner_hook = planner_hook;
	planner_hook = tenant_form_planner;
}
