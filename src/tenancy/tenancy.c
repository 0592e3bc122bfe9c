/*-------------------------------------------------------------------------
 *
 * tenancy.c
 *	  Which tenant a call acts for.  A role may be bound to a tenant
 *	  (revenue_engine.bind_role, rows of revenue_engine.role_tenants); a call
 *	  whose session user, SET ROLE user or calling user is bound acts for
 *	  that tenant and no other, whatever revenue_engine.tenant says.  An
 *	  unbound session acts for the tenant of the setting.
 *
 *	  A tenant form of an app-facing function (same name, first argument
 *	  "tenant text", src/tenancy/tenant_forms.sql) names the tenant of one
 *	  call: re_tenant_form runs the plain form with the tenant as a per-call
 *	  override of the setting, which re_current_tenant_name() and
 *	  current_tenant() honour, and restores the previous value however the
 *	  call ends.  A bound role may only name its own tenant.
 *
 *	  Bindings are cached per backend and per role, so the hot path
 *	  (track_daily_usage) reads no table: a trigger on role_tenants sends a
 *	  relcache invalidation of it, and any change of a role (pg_authid)
 *	  resets the cache too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "postmaster/bgworker.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "revenue_engine.h"
#include "compat.h"

/* What the cache knows of one role. */
typedef struct BindingEntry
{
	Oid			role;			/* hash key */
	bool		bound;
	char		tenant[RE_MAX_NAME_LEN + 1];
} BindingEntry;

static HTAB *bindings = NULL;
/* Set by the invalidation callbacks: the cache is emptied at the next use. */
static bool bindings_stale = false;
/* revenue_engine.role_tenants, InvalidOid until looked up (again). */
static Oid	bindings_relid = InvalidOid;
static SPIPlanPtr binding_plan = NULL;

/*
 * The tenant named by the first argument of the tenant form that is running
 * (re_tenant_form), or NULL: it replaces the setting for that call only.
 * Set and restored by re_tenant_form alone, around the plain form's call
 * (PG_FINALLY), so nothing of it outlives the call, also when the call
 * fails inside a savepoint that the caller then rolls back to.
 */
static const char *tenant_override = NULL;

/*
 * Invalidation callbacks may run whenever a lock is taken, also while a
 * binding is being read: they only mark the cache, which is emptied before
 * the next look-up.
 */
static void
bindings_relcache_changed(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == bindings_relid)
	{
		bindings_stale = true;
		bindings_relid = InvalidOid;
	}
}

static void
bindings_role_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	bindings_stale = true;
}

/* The cache, empty after a change; false when role_tenants does not exist. */
static bool
bindings_ready(void)
{
	static bool callbacks_registered = false;

	if (!callbacks_registered)
	{
		re_register_relcache_callback(bindings_relcache_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, bindings_role_changed, (Datum) 0);
		callbacks_registered = true;
	}
	if (bindings_stale && bindings != NULL)
	{
		hash_destroy(bindings);
		bindings = NULL;
	}
	bindings_stale = false;
	if (!OidIsValid(bindings_relid))
	{
		Oid			nspid = get_namespace_oid("revenue_engine", true);

		/* during CREATE EXTENSION, before src/tenancy/tenancy.sql ran */
		if (!OidIsValid(nspid))
			return false;
		bindings_relid = get_relname_relid("role_tenants", nspid);
		if (!OidIsValid(bindings_relid))
			return false;
	}
	if (bindings == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(BindingEntry);
		ctl.hcxt = CacheMemoryContext;
		bindings = hash_create("revenue_engine role bindings", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return true;
}

/* The tenant role is bound to, or NULL; read from role_tenants once. */
static const char *
role_tenant(Oid role)
{
	BindingEntry *e;
	bool		found;
	bool		bound = false;
	char		tenant[RE_MAX_NAME_LEN + 1];

	e = hash_search(bindings, &role, HASH_FIND, NULL);
	if (e != NULL)
		return e->bound ? e->tenant : NULL;

	{
		ReOwnerScope scope = {0};
		Datum		arg = ObjectIdGetDatum(role);

		re_connect_as_owner(&scope);
		if (binding_plan == NULL)
		{
			Oid			argtypes[1] = {REGROLEOID};

			binding_plan = re_prepare_saved("SELECT b.tenant FROM revenue_engine.role_tenants b"
											" WHERE b.role = $1", 1, argtypes);
		}
		if (SPI_execute_plan(binding_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "reading the binding of role %u failed", role);
		if (SPI_processed > 0)
		{
			char	   *t = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			strlcpy(tenant, t, sizeof(tenant));
			bound = true;
		}
		re_disconnect_as_owner(&scope);
	}

	/* an invalidation while reading: this answer serves this call only */
	if (bindings_stale)
		return bound ? pstrdup(tenant) : NULL;
	e = hash_search(bindings, &role, HASH_ENTER, &found);
	e->bound = bound;
	strlcpy(e->tenant, bound ? tenant : "", sizeof(e->tenant));
	return e->bound ? e->tenant : NULL;
}

static char *
role_name(Oid role)
{
	char	   *name = GetUserNameFromId(role, true);

	return name != NULL ? name : psprintf("%u", role);
}

/*
 * The roles a call acts as: the session user (the login), the outer user
 * (SET ROLE) and the calling user (the current user, or the one that entered
 * the owner scope).  If any is bound, the call acts for that tenant: a bound
 * login cannot escape by SET ROLE to an unbound role, and an unbound login
 * that SETs ROLE to a bound one is bound.  Two different tenants among them
 * are an error, never a choice.  The result is valid until the next call
 * (a cache entry or the setting's value).
 */
static const char *
decide_tenant(void)
{
	const char *setting;
	bool		explicitly;
	Oid			roles[3];
	const char *bound = NULL;
	Oid			bound_role = InvalidOid;
	int			i;

	if (tenant_override != NULL)
	{
		setting = tenant_override;
		explicitly = true;
	}
	else if (re_citus_remote_backend())
	{
		/*
		 * Citus: a statement that another node sent here (a shard's part of
		 * a query, a policy on a shard).  The client's setting stayed on
		 * that node; this backend's would be a wrong answer, not its.
		 */
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("revenue_engine.current_tenant() cannot be evaluated on a Citus node for a statement sent by another node"),
				 errdetail("The session's revenue_engine.tenant stays on the node where it was set."),
				 errhint("On Citus, read and write a tenant's rows through the tenant-first functions (the tenant as first argument), or as a role that row level security does not apply to.")));
	}
	else
	{
		setting = re_tenant_setting ? re_tenant_setting : "default";
		explicitly = re_tenant_set_explicitly;
	}
	if (!bindings_ready())
		return setting;
	roles[0] = GetSessionUserId();
	roles[1] = GetOuterUserId();
	roles[2] = re_calling_user();
	for (i = 0; i < lengthof(roles); i++)
	{
		const char *t;

		if ((i > 0 && roles[i] == roles[0]) || (i > 1 && roles[i] == roles[1]))
			continue;
		t = role_tenant(roles[i]);
		if (t == NULL)
			continue;
		if (bound != NULL && strcmp(bound, t) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role \"%s\" is bound to tenant \"%s\" and role \"%s\" to tenant \"%s\"",
							role_name(bound_role), bound, role_name(roles[i]), t),
					 errdetail("A call acts as its session user, its SET ROLE user and its calling user, and all of them must be bound to one tenant."),
					 errhint("Connect as a role bound to the tenant the call is for.")));
		bound = t;
		bound_role = roles[i];
	}
	if (bound == NULL)
		return setting;
	if (explicitly && strcmp(setting, bound) != 0 && tenant_override != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is bound to tenant \"%s\" and cannot act for tenant \"%s\"",
						role_name(bound_role), bound, setting),
				 errdetail("The call names tenant \"%s\" in its first argument (tenant).", setting),
				 errhint("A bound role may pass only its own tenant, \"%s\", or call the form without the tenant argument.",
						 bound)));
	if (explicitly && strcmp(setting, bound) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is bound to tenant \"%s\" and cannot act for tenant \"%s\"",
						role_name(bound_role), bound, setting),
				 errdetail("revenue_engine.tenant is set to \"%s\".", setting),
				 errhint("A bound role acts for its own tenant without the setting: reset it, and remove it from the role's and the database's settings if it is set there.")));
	return bound;
}

/* A copy: a call may outlive the cache entry or the setting's value. */
const char *
re_current_tenant_name(void)
{
	return pstrdup(decide_tenant());
}

/* SQL: revenue_engine.current_tenant(), evaluated by every tenant policy */
PG_FUNCTION_INFO_V1(re_current_tenant);
Datum
re_current_tenant(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(decide_tenant()));
}

/*
 * SQL: revenue_engine.is_delivery_worker(), the second half of every tenant
 * policy: true in the extension's background workers, which deliver for
 * every tenant whichever role they connect as (a superuser bypasses row
 * level security anyway; an owner that is not one would not).  Declared
 * IMMUTABLE although it is a property of the process, so that the planner
 * folds it to a constant: everywhere else the policy becomes exactly
 * tenant_id = (SELECT current_tenant()), an index condition, and nothing is
 * evaluated per row.  That is sound because a process never changes kind and
 * a plan never leaves the process that made it (a parallel worker runs its
 * leader's plan, folded by the leader).
 */
PG_FUNCTION_INFO_V1(re_is_delivery_worker);
Datum
re_is_delivery_worker(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(MyBgworkerEntry != NULL &&
				   strcmp(MyBgworkerEntry->bgw_library_name, "revenue_engine") == 0);
}

/* Argument argno of a SQL function as a tenant: 22004 if NULL, 22023 if invalid. */
static char *
tenant_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *tenant;
	const char *problem;

	re_require_arg(fcinfo, argno, "tenant");
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	problem = re_tenant_problem(tenant);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tenant \"%s\"", tenant),
				 errdetail("%s", problem)));
	return tenant;
}

/* SQL: revenue_engine.check_tenant(tenant text): the tenant, or 22023 */
PG_FUNCTION_INFO_V1(re_check_tenant);
Datum
re_check_tenant(PG_FUNCTION_ARGS)
{
	(void) tenant_arg(fcinfo, 0);
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/*
 * What a tenant form calls, looked up at its first call in an expression
 * (kept in fn_extra): the plain form, the function of the same schema and
 * name whose arguments are the tenant form's after the first.
 */
typedef struct TenantFormTarget
{
	FmgrInfo	flinfo;
	bool		strict;
	bool		retset;
	FunctionCallInfo fcinfo;	/* the plain form's call, reused */
} TenantFormTarget;

static TenantFormTarget *
tenant_form_target(FunctionCallInfo fcinfo)
{
	TenantFormTarget *target = fcinfo->flinfo->fn_extra;
	HeapTuple	tup;
	HeapTuple	plain_tup;
	Form_pg_proc form;
	Form_pg_proc plain;
	oidvector  *plain_args;
	Oid			plain_oid;
	int			nargs;

	if (target != NULL)
		return target;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	form = (Form_pg_proc) GETSTRUCT(tup);
	nargs = form->pronargs - 1;
	if (nargs < 0 || form->proargtypes.values[0] != TEXTOID)
		elog(ERROR, "function %u is not a tenant form: its first argument is not tenant text",
			 fcinfo->flinfo->fn_oid);
	plain_args = buildoidvector(&form->proargtypes.values[1], nargs);
	plain_tup = SearchSysCache3(PROCNAMEARGSNSP, NameGetDatum(&form->proname),
								PointerGetDatum(plain_args),
								ObjectIdGetDatum(form->pronamespace));
	if (!HeapTupleIsValid(plain_tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("tenant form %s has no plain form",
						format_procedure(fcinfo->flinfo->fn_oid)),
				 errdetail("A tenant form runs the function of the same name that takes its arguments after the tenant.")));
	plain = (Form_pg_proc) GETSTRUCT(plain_tup);
	if (plain->prorettype != form->prorettype || plain->proretset != form->proretset)
		elog(ERROR, "tenant form %s does not return what its plain form returns",
			 format_procedure(fcinfo->flinfo->fn_oid));
	plain_oid = plain->oid;

	/* the plain form's privilege too: a tenant form is no way around it */
	if (re_proc_aclcheck(plain_oid, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, NameStr(plain->proname));

	target = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(TenantFormTarget));
	fmgr_info_cxt(plain_oid, &target->flinfo, fcinfo->flinfo->fn_mcxt);
	target->strict = plain->proisstrict;
	target->retset = plain->proretset;
	target->fcinfo = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, SizeForFunctionCallInfo(nargs));
	ReleaseSysCache(plain_tup);
	ReleaseSysCache(tup);
	fcinfo->flinfo->fn_extra = target;
	return target;
}

/*
 * SQL: the tenant forms, revenue_engine.f(tenant text, <f's arguments>),
 * all of them this one C function (src/tenancy/tenant_forms.sql): the plain
 * form f runs with the tenant argument in place of the setting
 * revenue_engine.tenant, for this call only.  The tenant is checked like the
 * setting (22023); a session whose roles are bound to a tenant may name only
 * that one (42501 naming both, from decide_tenant, before the plain form
 * runs).  A set-returning plain form gets the caller's ReturnSetInfo, so it
 * returns its rows as it would when called directly; a plain form that
 * returns one row per call (value-per-call) has the override around each.
 */
PG_FUNCTION_INFO_V1(re_tenant_form);
Datum
re_tenant_form(PG_FUNCTION_ARGS)
{
	TenantFormTarget *target = tenant_form_target(fcinfo);
	FunctionCallInfo plain_fcinfo = target->fcinfo;
	const char *saved = tenant_override;
	char	   *tenant = tenant_arg(fcinfo, 0);
	volatile Datum result = (Datum) 0;
	int			i;

	InitFunctionCallInfoData(*plain_fcinfo, &target->flinfo, PG_NARGS() - 1,
							 fcinfo->fncollation, fcinfo->context, fcinfo->resultinfo);
	for (i = 1; i < PG_NARGS(); i++)
	{
		plain_fcinfo->args[i - 1] = fcinfo->args[i];
		if (target->strict && fcinfo->args[i].isnull)
		{
			/* what the executor does for a strict function given a NULL */
			if (target->retset)
				((ReturnSetInfo *) fcinfo->resultinfo)->isDone = ExprEndResult;
			PG_RETURN_NULL();
		}
	}

	tenant_override = tenant;
	PG_TRY();
	{
		(void) decide_tenant();
		result = FunctionCallInvoke(plain_fcinfo);
	}
	PG_FINALLY();
	{
		tenant_override = saved;
	}
	PG_END_TRY();
	fcinfo->isnull = plain_fcinfo->isnull;
	return result;
}

/*
 * What a tenant form's call for tenant checks before its plain form runs:
 * 42501 unless the session's roles may act for it.  For the planner hook of
 * src/citus/citus.c, which checks a call before Citus runs it on another
 * node.
 */
void
re_check_tenant_form_tenant(const char *tenant)
{
	const char *saved = tenant_override;

	/* an invalid tenant: the call's own 22023, wherever it runs */
	if (re_tenant_problem(tenant) != NULL)
		return;
	tenant_override = tenant;
	PG_TRY();
	{
		(void) decide_tenant();
	}
	PG_FINALLY();
	{
		tenant_override = saved;
	}
	PG_END_TRY();
}

/*
 * Trigger on role_tenants, once per statement: every backend drops its
 * cached bindings (at its next transaction or lock, as for any catalog
 * change; this one at the end of the statement, or at rollback).
 */
PG_FUNCTION_INFO_V1(re_role_tenants_changed);
Datum
re_role_tenants_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("role_tenants_changed() must be called as a trigger")));
	re_invalidate_table(trigdata->tg_relation, "role_tenants");
	return PointerGetDatum(NULL);
}
