/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What the rest of the extension needs to know about Citus, without
 *	  linking against it (see src/citus/citus.sql for distribute()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
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
 * user is left alone: the node the call runs on sees the same role.  The plan
 * of such a statement depends on the role (a plan made before SET ROLE is
 * made again after it, and checked then) and on role_tenants (a binding made
 * after the plan is checked too).
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

/* Whether node is a call that Citus may delegate; its tenant checked if check. */
static bool
tenant_form_call(Node *node, ParamListInfo params, bool check)
{
	FuncExpr   *call;
	Node	   *arg;
	Node	   *bare;
	EState	   *estate;
	ExprState  *state;
	Datum		tenant;
	bool		isnull;
	ListCell   *lc;

	if (node == NULL || !IsA(node, FuncExpr))
		return false;
	call = (FuncExpr *) node;
	if (call->args == NIL || !is_tenant_form(call->funcid))
		return false;
	/* the tenant: the first argument, or the one named tenant (named notation) */
	arg = linitial(call->args);
	foreach(lc, call->args)
	{
		if (IsA(lfirst(lc), NamedArgExpr) && ((NamedArgExpr *) lfirst(lc))->argnumber == 0)
			arg = (Node *) ((NamedArgExpr *) lfirst(lc))->arg;
	}
	bare = strip_implicit_coercions(arg);
	if (!IsA(bare, Const) &&
		!(IsA(bare, Param) && ((Param *) bare)->paramkind == PARAM_EXTERN))
		return false;			/* Citus does not delegate it: the call checks */
	if (!check)
		return true;
	/* a generic plan's parameter: Citus delegates no such plan (it plans again with the value) */
	if (IsA(bare, Param) &&
		(params == NULL || ((Param *) bare)->paramid > params->numParams))
		return true;
	estate = CreateExecutorState();
	estate->es_param_list_info = params;
	state = ExecPrepareExpr((Expr *) arg, estate);
	tenant = ExecEvalExprSwitchContext(state, GetPerTupleExprContext(estate), &isnull);
	if (!isnull)
		re_check_tenant_form_tenant(TextDatumGetCString(tenant));
	FreeExecutorState(estate);
	return true;
}

static PlannedStmt *
tenant_form_planner(Query *parse, const char *query_string, int cursor_options,
					ParamListInfo params)
{
	PlannedStmt *result;
	bool		found = false;

	if (parse->commandType == CMD_SELECT)
	{
		bool		check = (GetSessionUserId() != GetUserId() ||
							 GetOuterUserId() != GetUserId());
		ListCell   *lc;

		foreach(lc, parse->targetList)
			found |= tenant_form_call((Node *) ((TargetEntry *) lfirst(lc))->expr, params, check);
		foreach(lc, parse->rtable)
		{
			RangeTblEntry *rte = lfirst(lc);
			ListCell   *f;

			if (rte->rtekind != RTE_FUNCTION)
				continue;
			foreach(f, rte->functions)
				found |= tenant_form_call(((RangeTblFunction *) lfirst(f))->funcexpr, params, check);
		}
	}
	if (prev_planner_hook)
		result = prev_planner_hook(parse, query_string, cursor_options, params);
	else
		result = standard_planner(parse, query_string, cursor_options, params);
	if (found)
	{
		Oid			nsp = get_namespace_oid("revenue_engine", true);
		Oid			bindings = OidIsValid(nsp) ? get_relname_relid("role_tenants", nsp) : InvalidOid;

		result->dependsOnRole = true;
		if (OidIsValid(bindings))
			result->relationOids = lappend_oid(result->relationOids, bindings);
	}
	return result;
}

/* Called by _PG_init, after Citus's (shared_preload_libraries = 'citus,revenue_engine') */
void
re_citus_init(void)
{
	prev_planner_hook = planner_hook;
	planner_hook = tenant_form_planner;
}
