/*-------------------------------------------------------------------------
 *
 * revenue_engine.c
 *	  Module entry point: _PG_init (settings, preload check) and the helpers
 *	  every module shares: owner scope, tenant, names and jsonb building.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/timestamp.h"
#include "access/xact.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "revenue_engine.h"
#include "compat.h"
#include "blasts/blasts.h"
#include "worker/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *re_tenant_setting = NULL;
bool		re_tenant_set_explicitly = false;
char	   *re_user_payload_function = NULL;
int			re_max_count_per_call = 1000000;
char	   *re_clock_override = NULL;
int			re_attempt_retention = 7 * 24 * 60;	/* minutes */

/* Owner of schema revenue_engine; InvalidOid until looked up again. */
static Oid	owner_oid = InvalidOid;


/*
 * The user that entered the outermost owner scope still open, valid while
 * the current user and security context say an owner scope is open (see
 * re_calling_user); an error that leaves the scopes behind leaves a stale
 * value that the next re_enter_owner from outside replaces.
 */
static Oid	scope_caller = InvalidOid;

static bool check_tenant(char **newval, void **extra, GucSource source);
static void assign_tenant(const char *newval, void *extra);
static bool check_user_payload_function(char **newval, void **extra,
										GucSource source);
static void owner_cache_reset(Datum arg, int cacheid, uint32 hashvalue);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("revenue_engine must be loaded via shared_preload_libraries"),
				 errhint("Add revenue_engine to shared_preload_libraries in postgresql.conf and restart the server.")));

	DefineCustomStringVariable("revenue_engine.tenant",
							   "Tenant that rows written by this session belong to.",
							   "Single-tenant applications leave it at 'default'; a role bound to a tenant (revenue_engine.bind_role) acts for that tenant and may not set another.",
							   &re_tenant_setting,
							   "default",
							   PGC_USERSET,
							   0,
							   check_tenant, assign_tenant, NULL);

	DefineCustomStringVariable("revenue_engine.user_payload_function",
							   "Schema-qualified function(uuid) returning jsonb that builds the \"user\" object of event payloads.",
							   "Empty: events carry no user object.",
							   &re_user_payload_function,
							   "",
							   PGC_SUSET,
							   0,
							   check_user_payload_function, NULL, NULL);

	DefineCustomIntVariable("revenue_engine.max_count_per_call",
							"Largest count track_daily_usage accepts in one call.",
							NULL,
							&re_max_count_per_call,
							1000000, 1, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("revenue_engine.clock_override",
							   "For tests and demos: the instant taken as now when computing users' local days.",
							   "Empty: the transaction's start time, as now().",
							   &re_clock_override,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	/* minutes; SHOW gives "7d", which SQL casts to interval */
	DefineCustomIntVariable("revenue_engine.attempt_retention",
							"How long the log of delivery attempts is kept.",
							"A number with a unit: \"7d\", \"168h\", \"10080min\".",
							&re_attempt_retention,
							7 * 24 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("revenue_engine.reply_window",
							"How long after a blast message an inbound message from its phone counts as a reply to it.",
							NULL,
							&re_reply_window_min,
							7 * 24 * 60, 1, 366 * 24 * 60,
							PGC_USERSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	re_status_init();
	re_worker_init();
	re_citus_init();

	MarkGUCPrefixReserved("revenue_engine");
}

/* A SQL function's argument that must not be NULL: 22004 naming it. */
void
re_require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

pg_tz *
re_lookup_timezone(const char *name)
{
	pg_tz	   *tz;

	/* POSIX-style specs ("<+03>-3", "EST5EDT,M3.2.0,...") are not zone names */
	tz = (name[0] != '\0' && strlen(name) < TZ_STRLEN_MAX) ? pg_tzset(name) : NULL;
	if (tz == NULL || !pg_tz_acceptable(tz) || strpbrk(name, "<>,") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" is not recognized", name),
				 errhint("Use an IANA time zone name from pg_timezone_names, such as \"America/New_York\".")));
	return tz;
}

/* A name of a usage type, event type or tenant: 1-63 of [A-Za-z0-9_.:-]. */
void
re_check_name(const char *what, const char *name)
{
	size_t		len = strlen(name);
	const char *p;

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > RE_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is too long", what, name),
				 errdetail("It has %zu bytes; at most %d are allowed.",
						   len, RE_MAX_NAME_LEN)));
	for (p = name; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' ||
			  *p == ':' || *p == '-'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" contains an invalid character", what, name),
					 errhint("Use letters, digits, \"_\", \".\", \":\" and \"-\".")));
	}
}

/* Why a tenant name is not acceptable, or NULL: 1-63 bytes, no control characters. */
const char *
re_tenant_problem(const char *tenant)
{
	const char *p;

	if (tenant == NULL || *tenant == '\0' || strlen(tenant) > RE_MAX_NAME_LEN)
		return "The tenant must have 1 to " CppAsString2(RE_MAX_NAME_LEN) " bytes.";
	for (p = tenant; *p; p++)
	{
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			return "The tenant must not contain control characters.";
	}
	return NULL;
}

/*
 * The setting's extra records whether the value was set by anyone (SET,
 * set_config, ALTER ROLE/DATABASE ... SET, a connection option, the server's
 * configuration) or is the built-in default: a role bound to a tenant may
 * leave the setting alone, but not set it to another tenant (see
 * re_current_tenant_name).  GUC keeps the extra with each value, so RESET,
 * SET LOCAL and rollbacks restore it along with the value.
 */
static bool
check_tenant(char **newval, void **extra, GucSource source)
{
	const char *problem = re_tenant_problem(*newval);
	bool	   *set_explicitly;

	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		return false;
	}
	set_explicitly = re_guc_malloc(sizeof(bool));
	if (set_explicitly == NULL)
		return false;
	*set_explicitly = (source > PGC_S_DEFAULT);
	*extra = set_explicitly;
	return true;
}

static void
assign_tenant(const char *newval, void *extra)
{
	re_tenant_set_explicitly = extra != NULL && *(bool *) extra;
}

static bool
check_user_payload_function(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || **newval == '\0')
		return true;
	if (strchr(*newval, '.') == NULL)
	{
		GUC_check_errdetail("The function name must be schema-qualified, such as \"app.user_payload\".");
		return false;
	}
	return true;
}

TimestampTz
re_clock_now(void)
{
	if (re_clock_override != NULL && re_clock_override[0] != '\0')
		return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													   CStringGetDatum(re_clock_override),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
	return GetCurrentTransactionStartTimestamp();
}

PG_FUNCTION_INFO_V1(re_clock_now_sql);
Datum
re_clock_now_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(re_clock_now());
}

/*
 * revenue_engine's row of pg_extension in this database: false when the
 * extension is not installed; otherwise its owner and its version (palloc'd),
 * each only where asked for.  The one look-up of it, for the worker's owner
 * and the library-versus-installed check alike.
 */
bool
re_extension_row(Oid *owner, char **version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("revenue_engine"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found && owner != NULL)
		*owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	if (found && version != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		*version = isnull ? NULL : text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

char *
re_installed_version(void)
{
	char	   *version = NULL;

	(void) re_extension_row(NULL, &version);
	return version;
}

void
re_require_installed_version(void)
{
	static bool holds = false;
	char	   *installed;

	if (holds)
		return;
	installed = re_installed_version();
	if (installed == NULL || strcmp(installed, RE_EXTVERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("revenue_engine %s is installed in database \"%s\" but the library is version %s",
						installed ? installed : "(none)", get_database_name(MyDatabaseId),
						RE_EXTVERSION),
				 errhint("Run ALTER EXTENSION revenue_engine UPDATE.")));
	pfree(installed);
	holds = true;
}

static void
owner_cache_reset(Datum arg, int cacheid, uint32 hashvalue)
{
	owner_oid = InvalidOid;
}

static Oid
extension_owner(void)
{
	static bool callback_registered = false;

	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(NAMESPACEOID, owner_cache_reset, (Datum) 0);
		callback_registered = true;
	}
	if (!OidIsValid(owner_oid))
	{
		Oid			nspid = get_namespace_oid("revenue_engine", false);
		HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for namespace %u", nspid);
		owner_oid = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
		ReleaseSysCache(tup);
	}
	return owner_oid;
}

/*
 * Whether a user and security context are those of an open owner scope: the
 * owner, with SECURITY_NOFORCE_RLS, which nothing else of the extension sets
 * (PostgreSQL sets it for its referential integrity queries only).
 */
static bool
is_owner_scope(Oid userid, int sec_context)
{
	return OidIsValid(owner_oid) && userid == owner_oid &&
		(sec_context & SECURITY_NOFORCE_RLS) != 0;
}

/*
 * The owner scope runs as the owner of the extension's tables with
 * SECURITY_NOFORCE_RLS, as PostgreSQL runs its foreign key checks: the row
 * level security that src/tenancy forces on every tenant table does not
 * apply to the extension's own statements, which name the tenant in every
 * key (it still applies to the owner's own queries outside the scope, and to
 * everyone else).  So statements prepared in the scope carry no policy and
 * are executed only in the scope; that is how every saved plan of the C code
 * is used.  The user that entered the outermost scope is kept: the tenant it
 * is bound to is the one the scope acts for (re_calling_user).
 *
 * search_path is pinned to pg_catalog (re_pin_search_path, src/compat.h): the
 * caller's search_path and temporary objects are never looked up by name in
 * the scope.  An error restores the caller's through transaction or
 * subtransaction abort.
 */
void
re_enter_owner(ReOwnerScope *scope)
{
	Oid			owner = extension_owner();

	GetUserIdAndSecContext(&scope->saved_userid, &scope->saved_sec_context);
	scope->saved_caller = scope_caller;
	if (!is_owner_scope(scope->saved_userid, scope->saved_sec_context))
		scope_caller = scope->saved_userid;
	SetUserIdAndSecContext(owner,
						   scope->saved_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	scope->path_pin = re_pin_search_path();
	scope->active = true;
}

void
re_leave_owner(ReOwnerScope *scope)
{
	if (!scope->active)
		return;
	re_unpin_search_path(scope->path_pin);
	SetUserIdAndSecContext(scope->saved_userid, scope->saved_sec_context);
	scope_caller = scope->saved_caller;
	scope->active = false;
}

Oid
re_calling_user(void)
{
	Oid			userid;
	int			sec_context;

	GetUserIdAndSecContext(&userid, &sec_context);
	(void) extension_owner();
	if (is_owner_scope(userid, sec_context) && OidIsValid(scope_caller))
		return scope_caller;
	return userid;
}

void
re_connect_as_owner(ReOwnerScope *scope)
{
	re_enter_owner(scope);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
re_disconnect_as_owner(ReOwnerScope *scope)
{
	SPI_finish();
	re_leave_owner(scope);
}

static SPIPlanPtr
prepare_and_keep(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * A generic plan, except in a database with Citus: Citus cannot plan many
 * statements with parameters left unbound (a CTE, a LIMIT $n, an INSERT ...
 * SELECT: "could not create distributed plan ... parameters in SQL
 * functions"), and a forced generic plan makes that an error.  Left to the
 * plan cache, such a statement gets custom plans (Citus makes the generic
 * one look too expensive), and a statement Citus routes with its
 * parameters (tenant_id = $1) gets its generic plan after five executions.
 * Checked when the plan is prepared, once per backend.
 */
struct _SPI_plan *
re_prepare_saved(const char *sql, int nargs, Oid *argtypes)
{
	bool		citus = OidIsValid(get_extension_oid("citus", true));

	return prepare_and_keep(sql, nargs, argtypes, citus ? 0 : CURSOR_OPT_GENERIC_PLAN);
}

struct _SPI_plan *
re_prepare_saved_custom(const char *sql, int nargs, Oid *argtypes)
{
	return prepare_and_keep(sql, nargs, argtypes, CURSOR_OPT_CUSTOM_PLAN);
}

/*
 * The extension's one relcache callback, calling the parts' own.  A process
 * that touches every part (the worker on a Citus node: delivery, blasts'
 * funnel, campaigns' counters and hooks, tenancy) registered seven, and with
 * PostgreSQL's and Citus's own passed the ten a process has room for (FATAL:
 * out of relcache_callback_list slots).
 */
#define RE_MAX_RELCACHE_CALLBACKS 16

static struct
{
	RelcacheCallbackFunction fn;
	Datum		arg;
}			relcache_callbacks[RE_MAX_RELCACHE_CALLBACKS];
static int	nrelcache_callbacks = 0;

static void
relcache_dispatch(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < nrelcache_callbacks; i++)
		relcache_callbacks[i].fn(relcache_callbacks[i].arg, relid);
}

void
re_register_relcache_callback(RelcacheCallbackFunction fn, Datum arg)
{
	if (nrelcache_callbacks >= RE_MAX_RELCACHE_CALLBACKS)
		elog(FATAL, "out of revenue_engine relcache callback slots");
	if (nrelcache_callbacks == 0)
		CacheRegisterRelcacheCallback(relcache_dispatch, (Datum) 0);
	relcache_callbacks[nrelcache_callbacks].fn = fn;
	relcache_callbacks[nrelcache_callbacks].arg = arg;
	nrelcache_callbacks++;
}

/* jsonb building */

void
re_jb_begin(JsonbParseState **state)
{
	*state = NULL;
	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
}

Jsonb *
re_jb_end(JsonbParseState **state)
{
	JsonbValue *res = pushJsonbValue(state, WJB_END_OBJECT, NULL);

	return JsonbValueToJsonb(res);
}

void
re_jb_key(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.len = strlen(key);
	k.val.string.val = (char *) key;
	pushJsonbValue(state, WJB_KEY, &k);
}

static void
push_string(JsonbParseState **state, JsonbIteratorToken tok, const char *value)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.len = strlen(value);
	v.val.string.val = (char *) value;
	pushJsonbValue(state, tok, &v);
}

void
re_jb_str(JsonbParseState **state, const char *key, const char *value)
{
	re_jb_key(state, key);
	push_string(state, WJB_VALUE, value);
}

static void
push_int(JsonbParseState **state, JsonbIteratorToken tok, int64 value)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	pushJsonbValue(state, tok, &v);
}

void
re_jb_int(JsonbParseState **state, const char *key, int64 value)
{
	re_jb_key(state, key);
	push_int(state, WJB_VALUE, value);
}

void
re_jb_bool(JsonbParseState **state, const char *key, bool value)
{
	JsonbValue	v;

	re_jb_key(state, key);
	v.type = jbvBool;
	v.val.boolean = value;
	pushJsonbValue(state, WJB_VALUE, &v);
}

void
re_jb_null(JsonbParseState **state, const char *key)
{
	JsonbValue	v;

	re_jb_key(state, key);
	v.type = jbvNull;
	pushJsonbValue(state, WJB_VALUE, &v);
}

char *
re_date_text(DateADT value)
{
	int			y,
				m,
				d;

	if (DATE_NOT_FINITE(value))
		return pstrdup(DATE_IS_NOBEGIN(value) ? "-infinity" : "infinity");
	j2date(value + POSTGRES_EPOCH_JDATE, &y, &m, &d);
	if (y <= 0)
		return psprintf("%04d-%02d-%02d BC", -y + 1, m, d);
	return psprintf("%04d-%02d-%02d", y, m, d);
}

void
re_jb_date(JsonbParseState **state, const char *key, DateADT value)
{
	re_jb_str(state, key, re_date_text(value));
}

void
re_jb_timestamptz(JsonbParseState **state, const char *key, TimestampTz value)
{
	char		buf[MAXDATELEN + 1];

	JsonEncodeDateTime(buf, TimestampTzGetDatum(value), TIMESTAMPTZOID, NULL);
	/* pushJsonbValue keeps the pointer, not a copy */
	re_jb_str(state, key, pstrdup(buf));
}

void
re_jb_jsonb(JsonbParseState **state, const char *key, Jsonb *value)
{
	JsonbValue	v;

	re_jb_key(state, key);
	if (value == NULL)
	{
		v.type = jbvNull;
		pushJsonbValue(state, WJB_VALUE, &v);
		return;
	}
	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	pushJsonbValue(state, WJB_VALUE, &v);
}

void
re_jb_int_array(JsonbParseState **state, const char *key,
				const int64 *values, int n)
{
	int			i;

	re_jb_key(state, key);
	pushJsonbValue(state, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < n; i++)
		push_int(state, WJB_ELEM, values[i]);
	pushJsonbValue(state, WJB_END_ARRAY, NULL);
}

bool
re_is_json(const char *text, size_t len)
{
	JsonLexContext *lex;

	if (text == NULL || len == 0)
		return false;
	/* the lexer does not check the encoding: text input would, and NUL ends text */
	if (pg_encoding_verifymbstr(GetDatabaseEncoding(), text, (int) len) != (int) len)
		return false;
	/* with escapes decoded, \u0000 and unconvertible escapes fail as in jsonb_in */
	lex = re_json_lex_context(text, len, GetDatabaseEncoding(), true);
	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

/*
 * Bytes from the network (a response body) as text of the database
 * encoding: as they are when valid; otherwise every byte that is not part of
 * a valid character, NUL included, is written \xNN (two hex digits), so the
 * text is valid and no byte is rewritten silently.
 */
char *
re_text_from_bytes(const char *s, size_t len)
{
	int			enc = GetDatabaseEncoding();
	StringInfoData buf;
	size_t		i = 0;

	if (pg_encoding_verifymbstr(enc, s, (int) len) == (int) len)
		return pnstrdup(s, len);
	/* escaped: each invalid byte and NUL as \xNN, and a backslash as \\ */
	initStringInfo(&buf);
	while (i < len)
	{
		int			n = pg_encoding_verifymbchar(enc, s + i, (int) (len - i));

		if (n <= 0)
			appendStringInfo(&buf, "\\x%02x", (unsigned char) s[i++]);
		else if (s[i] == '\\')
		{
			appendStringInfoString(&buf, "\\\\");
			i++;
		}
		else
		{
			appendBinaryStringInfo(&buf, s + i, n);
			i += n;
		}
	}
	return buf.data;
}
