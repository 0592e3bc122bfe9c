/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The outbox: events are rows of revenue_engine.webhook_events written in
 *	  the transaction that caused them, so they commit or roll back with it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "parser/parse_func.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "revenue_engine.h"
#include "compat.h"
#include "funcapi.h"
#include "http/http.h"
#include "outbox/outbox.h"
#include "worker/worker.h"

/* Event types the extension itself writes. */
static const char *const builtin_event_types[] = {
	"milestone_reached",
	"daily_goal_achieved",
	"feature_first_used",
	"phone_number_changed",		/* a WhatsApp contact's new number (status.c) */
};

static SPIPlanPtr insert_event_plan = NULL;
static SPIPlanPtr insert_deliveries_plan = NULL;

/* The resolved user payload function, for the setting's value it came from. */
static char *payload_fn_name = NULL;
static Oid	payload_fn_oid = InvalidOid;

void
re_new_event_id(pg_uuid_t *id)
{
	/* core's gen_random_uuid(): pg_strong_random, RFC 4122 version 4 */
	*id = *DatumGetUUIDP(DirectFunctionCall1(gen_random_uuid, (Datum) 0));
}

static Oid
user_payload_function_oid(void)
{
	const char *name = re_user_payload_function;
	Oid			argtypes[1] = {UUIDOID};
	Oid			fn;

	if (name == NULL || name[0] == '\0')
		return InvalidOid;
	if (payload_fn_name != NULL && strcmp(payload_fn_name, name) == 0 &&
		SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(payload_fn_oid)))
		return payload_fn_oid;

	fn = LookupFuncName(re_qualified_name_list(name), 1, argtypes, true);
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("user payload function %s(uuid) does not exist", name),
				 errhint("Set revenue_engine.user_payload_function to a schema-qualified function(uuid) returning jsonb, or to ''.")));
	if (get_func_rettype(fn) != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("user payload function %s(uuid) must return jsonb", name)));

	if (payload_fn_name)
		pfree(payload_fn_name);
	payload_fn_name = MemoryContextStrdup(TopMemoryContext, name);
	payload_fn_oid = fn;
	return fn;
}

/*
 * The payload function runs as the current user, which every caller makes
 * the role that called the app-facing function (track_daily_usage,
 * enqueue_event, backfill_usage ...), the role active before the switch to
 * the owner: it is called outside the owner scope, never inside it.  Not the
 * session user: a session that authenticated as a superuser and then
 * dropped its rights (SET ROLE, SECURITY DEFINER functions of a less trusted
 * owner, maintenance commands that run as a table's owner) would run the
 * function with the rights it had dropped.  The current user is what any
 * other function call runs as.  Called
 * directly through fmgr, the function gets no EXECUTE check from the
 * executor, so it is checked here, for that role.
 */
Jsonb *
re_build_user_payload(const pg_uuid_t *user_id)
{
	Oid			fn = user_payload_function_oid();
	LOCAL_FCINFO(fcinfo, 1);
	FmgrInfo	flinfo;
	Datum		result;
	Jsonb	   *payload;

	if (!OidIsValid(fn) || user_id == NULL)
		return NULL;

	if (re_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for user payload function %s",
						re_user_payload_function),
				 errdetail("Role \"%s\" may not execute it; the function runs as the role that calls revenue_engine, never as the extension's owner.",
						   GetUserNameFromId(GetUserId(), false)),
				 errhint("GRANT EXECUTE ON FUNCTION %s(uuid) to the application's role.",
						 re_user_payload_function)));
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = UUIDPGetDatum((pg_uuid_t *) user_id);
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	if (fcinfo->isnull)
		return NULL;
	payload = DatumGetJsonbP(result);
	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("user payload function %s returned a JSON value that is not an object",
						re_user_payload_function)));
	return payload;
}

void
re_outbox_enqueue(const char *tenant, const pg_uuid_t *user_id,
				  const char *event_type, Jsonb *event_data,
				  Jsonb *user_data, const pg_uuid_t *event_id)
{
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			ret;

	/*
	 * The event, then one delivery per subscribed endpoint: two statements,
	 * each on one table and routed by tenant_id = $1, which Citus runs on
	 * the tenant's shards (webhook_events, endpoints and deliveries are
	 * colocated; one statement with a modifying CTE feeding an INSERT ...
	 * SELECT is not plannable there).
	 */
	if (insert_event_plan == NULL)
	{
		Oid			types[6] = {TEXTOID, UUIDOID, UUIDOID, TEXTOID, JSONBOID, JSONBOID};
		Oid			delivery_types[3] = {TEXTOID, UUIDOID, TEXTOID};

		insert_event_plan = re_prepare_saved("INSERT INTO revenue_engine.webhook_events"
											 "   (tenant_id, id, user_id, event_type, event_data, user_data)"
											 " VALUES ($1, $2, $3, $4, $5, $6)",
											 6, types);
		insert_deliveries_plan = re_prepare_saved("INSERT INTO revenue_engine.deliveries"
												  "   (tenant_id, event_id, endpoint_id)"
												  " SELECT ep.tenant_id, $2, ep.id"
												  "   FROM revenue_engine.endpoints ep"
												  "  WHERE ep.tenant_id = $1"
												  "    AND (ep.event_types IS NULL OR $3 = ANY (ep.event_types))",
												  3, delivery_types);
	}

	values[0] = CStringGetTextDatum(tenant);
	values[1] = UUIDPGetDatum((pg_uuid_t *) event_id);
	if (user_id)
		values[2] = UUIDPGetDatum((pg_uuid_t *) user_id);
	else
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(event_type);
	values[4] = JsonbPGetDatum(event_data);
	if (user_data)
		values[5] = JsonbPGetDatum(user_data);
	else
		nulls[5] = 'n';

	ret = SPI_execute_plan(insert_event_plan, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT || SPI_processed != 1)
		elog(ERROR, "inserting an event failed: %s", SPI_result_code_string(ret));
	/* $1 tenant, $2 event id, $3 event type */
	values[2] = values[3];
	ret = SPI_execute_plan(insert_deliveries_plan, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inserting an event's deliveries failed: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
		re_worker_wake_at_commit();
}

static bool
is_builtin_event_type(const char *event_type)
{
	int			i;

	for (i = 0; i < lengthof(builtin_event_types); i++)
		if (strcmp(builtin_event_types[i], event_type) == 0)
			return true;
	return false;
}

/* Built-in or registered; call connected to SPI, inside the owner scope. */
static void
check_event_type_known(const char *event_type)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	int			ret;

	if (is_builtin_event_type(event_type))
		return;
	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = re_prepare_saved("SELECT 1 FROM revenue_engine.event_types WHERE event_type = $1",
								1, types);
	}
	values[0] = CStringGetTextDatum(event_type);
	ret = SPI_execute_plan(plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "event type look-up failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown event type \"%s\"", event_type),
				 errhint("Register it first with revenue_engine.register_event_type('%s').",
						 event_type)));
}

/* SQL: revenue_engine.enqueue_event(user_id uuid, event_type text, event_data jsonb) */
PG_FUNCTION_INFO_V1(re_enqueue_event);
Datum
re_enqueue_event(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id = PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0);
	char	   *event_type;
	Jsonb	   *event_data;
	Jsonb	   *user_data;
	pg_uuid_t  *event_id = palloc(sizeof(pg_uuid_t));
	ReOwnerScope scope = {0};

	re_require_arg(fcinfo, 1, "event_type");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_data must not be null"),
				 errhint("Pass '{}' for an event without data.")));
	event_type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	re_check_name("event type", event_type);
	event_data = PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_OBJECT(event_data) || JB_ROOT_IS_SCALAR(event_data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_data must be a JSON object"),
				 errdetail("It is %s.", JsonbToCString(NULL, &event_data->root,
													   VARSIZE(event_data)))));

	user_data = re_build_user_payload(user_id);
	re_new_event_id(event_id);

	re_connect_as_owner(&scope);
	check_event_type_known(event_type);
	re_outbox_enqueue(re_current_tenant_name(), user_id, event_type,
					  event_data, user_data, event_id);
	re_disconnect_as_owner(&scope);

	PG_RETURN_UUID_P(event_id);
}

/* SQL: revenue_engine.user_payload(user_id uuid) */
PG_FUNCTION_INFO_V1(re_user_payload);
Datum
re_user_payload(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	payload = re_build_user_payload(PG_GETARG_UUID_P(0));
	if (payload == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(payload);
}

/* SQL: revenue_engine.builtin_event_types() */
PG_FUNCTION_INFO_V1(re_builtin_event_types);
Datum
re_builtin_event_types(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	for (i = 0; i < lengthof(builtin_event_types); i++)
	{
		Datum		value = CStringGetTextDatum(builtin_event_types[i]);
		bool		isnull = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
	}
	return (Datum) 0;
}

/* SQL: revenue_engine.check_name(what text, name text) */
PG_FUNCTION_INFO_V1(re_check_name_sql);
Datum
re_check_name_sql(PG_FUNCTION_ARGS)
{
	char	   *what = PG_ARGISNULL(0) ? "name" : text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	re_check_name(what, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_DATUM(PG_GETARG_DATUM(1));
}

/*
 * SQL: revenue_engine.http_address_class(address text): the class of
 * address that the worker refuses to connect to (revenue_engine.
 * http_allow_private off), or NULL when it connects.
 */
PG_FUNCTION_INFO_V1(re_http_address_class);
Datum
re_http_address_class(PG_FUNCTION_ARGS)
{
	char	   *address;
	struct sockaddr_storage ss;
	const char *cls;

	re_require_arg(fcinfo, 0, "address");
	address = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!re_http_parse_address(address, &ss))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid IP address \"%s\"", address),
				 errhint("Give an IPv4 or IPv6 address literal, such as \"192.0.2.1\" or \"2001:db8::1\".")));
	cls = re_http_internal_address_class(&ss);
	if (cls == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(cls));
}

/* SQL: revenue_engine.check_url(url text) */
PG_FUNCTION_INFO_V1(re_check_url);
Datum
re_check_url(PG_FUNCTION_ARGS)
{
	char	   *url;
	const char *reason;

	re_require_arg(fcinfo, 0, "url");
	url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	reason = re_http_check_url(url);
	if (reason != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid URL \"%s\": %s", url, reason),
				 errhint("Use an absolute http:// or https:// URL, such as \"https://hooks.example.com/revenue\".")));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/* SQL: revenue_engine.check_signing_secret(secret text) */
PG_FUNCTION_INFO_V1(re_check_signing_secret);
Datum
re_check_signing_secret(PG_FUNCTION_ARGS)
{
	const char *reason;

	re_require_arg(fcinfo, 0, "signing secret");
	reason = re_http_check_secret(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	if (reason != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid signing secret: %s", reason),
				 errhint("Use a Standard Webhooks secret: \"whsec_\" followed by base64 of 24 to 64 random bytes.")));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}
