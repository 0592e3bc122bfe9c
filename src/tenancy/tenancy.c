/*-------------------------------------------------------------------------
 *
 * tenancy.c
 *	  Which tenant a call acts for.  A role may be bound to a tenant
 *	  (revenue_engine.bind_role, rows of revenue_engine.role_tenants); a call
 *	  whose session user, SET ROLE user or calling user is bound acts for
 *	  that tenant and no other, whatever revenue_engine.tenant says.  An
 *	  unbound session acts for the tenant of the setting.
 *
 *	  Bindings are cached per backend and per role, so the hot path
 *	  (track_daily_usage) reads no table: a trigger on role_tenants sends a
 *	  relcache invalidation of it, and any change of a role (pg_authid)
 *	  resets the cache too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "revenue_engine.h"

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
		CacheRegisterRelcacheCallback(bindings_relcache_changed, (Datum) 0);
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
	const char *setting = re_tenant_setting ? re_tenant_setting : "default";
	Oid			roles[3];
	const char *bound = NULL;
	Oid			bound_role = InvalidOid;
	int			i;

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
	if (re_tenant_set_explicitly && strcmp(setting, bound) != 0)
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

/* SQL: revenue_engine.check_tenant(tenant text): the tenant, or 22023 */
PG_FUNCTION_INFO_V1(re_check_tenant);
Datum
re_check_tenant(PG_FUNCTION_ARGS)
{
	char	   *tenant;
	const char *problem;

	re_require_arg(fcinfo, 0, "tenant");
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	problem = re_tenant_problem(tenant);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tenant \"%s\"", tenant),
				 errdetail("%s", problem)));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
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
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
