/*-------------------------------------------------------------------------
 *
 * revenue_engine.h
 *	  Settings and helpers shared by the modules of revenue_engine: the
 *	  tenant, running statements as the extension owner with a pinned
 *	  search_path, and building jsonb objects.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REVENUE_ENGINE_H
#define REVENUE_ENGINE_H

#include "postgres.h"

#include "fmgr.h"
#include "pgtime.h"

#include "utils/date.h"
#include "utils/inval.h"
#include "utils/relcache.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Settings (GUCs), defined in _PG_init. */
extern char *re_tenant_setting;
extern bool re_tenant_set_explicitly;	/* set by anyone, not the built-in default */
extern char *re_user_payload_function;
extern int	re_max_count_per_call;
extern char *re_clock_override;
extern int	re_attempt_retention;	/* minutes */

/*
 * The version of the SQL objects this library is built for (the control
 * file's default_version, from the Makefile).  An older version's objects
 * stay installed after a package upgrade until ALTER EXTENSION
 * revenue_engine UPDATE: see re_require_installed_version.
 */
#ifndef RE_EXTVERSION
#error "RE_EXTVERSION is defined by the Makefile"
#endif

/* revenue_engine's pg_extension row: false when absent; its owner and version where asked. */
extern bool re_extension_row(Oid *owner, char **version);

/* pg_extension.extversion of revenue_engine in this database (palloc'd), NULL when absent. */
extern char *re_installed_version(void);

/*
 * Error 55000 unless the installed version is the library's: for the C
 * functions whose statements need the current version's tables, reached
 * through an older version's SQL functions.  Once it holds, it is not
 * checked again in this backend.
 */
extern void re_require_installed_version(void);

/* The instant the extension takes as now: revenue_engine.clock_override or now(). */
extern TimestampTz re_clock_now(void);

/* Longest tenant, usage type and event type names, in bytes. */
#define RE_MAX_NAME_LEN 63

/*
 * Statements of the extension run as the owner of schema revenue_engine with
 * search_path pinned to pg_catalog, like a SECURITY DEFINER function with
 * SET search_path (src/compat.h says how on each PostgreSQL version).  Errors
 * restore the caller's identity and path through transaction abort.  The
 * tenant tables' row level security does not apply in the scope (it runs
 * with SECURITY_NOFORCE_RLS): its statements name the tenant themselves.
 */
typedef struct ReOwnerScope
{
	Oid			saved_userid;
	int			saved_sec_context;
	Oid			saved_caller;
	int			path_pin;		/* re_pin_search_path's, for re_unpin_search_path */
	bool		active;
} ReOwnerScope;

extern void re_enter_owner(ReOwnerScope *scope);
extern void re_leave_owner(ReOwnerScope *scope);

/* The current user, or inside an owner scope the user that entered it. */
extern Oid	re_calling_user(void);

/* The owner scope and an SPI connection, as a C function's body uses them */
extern void re_connect_as_owner(ReOwnerScope *scope);
extern void re_disconnect_as_owner(ReOwnerScope *scope);

/*
 * The tenant the current call acts for: the tenant its roles are bound to
 * (src/tenancy/tenancy.c), else the tenant argument of the tenant form that
 * is running, else the setting revenue_engine.tenant.  Raises 42501 when a
 * bound role's setting or tenant argument names another tenant.  The only place
 * where the tenant is decided; the result is a copy in the current memory
 * context.
 */
extern const char *re_current_tenant_name(void);

/* Why a tenant name is not acceptable (a sentence), or NULL. */
extern const char *re_tenant_problem(const char *tenant);

/* Raise 22004 naming the argument when argument argno is NULL. */
extern void re_require_arg(FunctionCallInfo fcinfo, int argno, const char *name);

/*
 * The time zone named name (an IANA name as in pg_timezone_names), or error
 * 22023 naming it.  The one validation of time zone names: canonical_timezone
 * and next_send_time both use it.
 */
extern pg_tz *re_lookup_timezone(const char *name);

/* Validate a name of a usage type or event type; ereport on bad input. */
extern void re_check_name(const char *what, const char *name);

/* jsonb object building on top of pushJsonbValue. */
extern void re_jb_begin(JsonbParseState **state);
extern Jsonb *re_jb_end(JsonbParseState **state);
extern void re_jb_key(JsonbParseState **state, const char *key);
extern void re_jb_str(JsonbParseState **state, const char *key, const char *value);
extern void re_jb_int(JsonbParseState **state, const char *key, int64 value);
extern void re_jb_bool(JsonbParseState **state, const char *key, bool value);
extern void re_jb_null(JsonbParseState **state, const char *key);
extern void re_jb_date(JsonbParseState **state, const char *key, DateADT value);
extern void re_jb_timestamptz(JsonbParseState **state, const char *key,
							  TimestampTz value);
extern void re_jb_jsonb(JsonbParseState **state, const char *key, Jsonb *value);
extern void re_jb_int_array(JsonbParseState **state, const char *key,
							const int64 *values, int n);

/*
 * SPI_prepare + SPI_keepplan with a generic plan: every plan of the extension
 * takes key values as parameters, so planning once per backend is right.
 * In a database with Citus the plan cache chooses instead (Citus cannot plan
 * every statement with unbound parameters; see revenue_engine.c).
 */
extern struct _SPI_plan *re_prepare_saved(const char *sql, int nargs, Oid *argtypes);

/*
 * The same, planned anew for each execution: for statements whose best plan
 * depends on the parameters' values (a LIMIT, a skewed key, the length of an
 * array passed to unnest) and that run once per batch, not once per row.
 */
extern struct _SPI_plan *re_prepare_saved_custom(const char *sql, int nargs, Oid *argtypes);

/*
 * A relcache invalidation callback of the extension: every part registers
 * here, and the extension takes one of the process's ten slots
 * (MAX_RELCACHE_CALLBACKS), which PostgreSQL's own caches and other
 * extensions (Citus takes several) share.
 */
extern void re_register_relcache_callback(RelcacheCallbackFunction fn, Datum arg);

/*
 * Whether text is JSON that jsonb_in accepts (it does not throw): for
 * responses from the network, cast to jsonb only when this says so.
 */
extern bool re_is_json(const char *text, size_t len);

/*
 * Bytes from the network as valid text: stored as received when valid; else
 * each invalid byte and NUL is written \xNN and a backslash \\.
 */
extern char *re_text_from_bytes(const char *s, size_t len);

/* ISO 8601 text of a date, independent of DateStyle. */
extern char *re_date_text(DateADT value);

/*
 * A query of the caller's, run as the caller (outside any owner scope), its
 * columns handed on as arrays (caller_query.c).  re_caller_query_width: how
 * many columns sql returns.  re_caller_query_arrays: when sql returns
 * min_cols .. max_cols columns, arrays[i] is column i as an array of
 * types[i] (text: other types through their output function, as the
 * caller); returns the number of columns either way.
 */
#define RE_CALLER_QUERY_MAX_COLS 8
extern int	re_caller_query_width(const char *sql);
extern int	re_caller_query_arrays(const char *sql, int min_cols, int max_cols,
								   const Oid *types, Datum *arrays, int *nrows);

/* src/citus/citus.c: statements sent by another Citus node run in this backend */
extern bool re_citus_remote_backend(void);
/* src/citus/citus.c: invalidate a table's caches, also when its trigger fires on a Citus shard */
extern void re_invalidate_table(Relation rel, const char *relname);
/* src/citus/citus.c: the planner hook that checks delegated tenant forms' tenants */
extern void re_citus_init(void);
/* src/tenancy/tenancy.c: 42501 unless the session's roles may act for tenant */
extern void re_check_tenant_form_tenant(const char *tenant);

#endif							/* REVENUE_ENGINE_H */
