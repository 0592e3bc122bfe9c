/*-------------------------------------------------------------------------
 *
 * enroll.c
 *	  The outbox trigger of campaigns: an event (a webhook_events row) may
 *	  enroll its user's contacts, stop them (exit rules) or resume them
 *	  (wait_event steps); revenue_engine.campaign_on_event does that work.
 *
 * The trigger is on track_daily_usage's path, and most events concern no
 * campaign.  So each backend keeps a cache of (tenant, event type) -> whether
 * any campaign of the tenant names the event type (an active campaign it
 * triggers, a wait_event step, an exit rule of any version), and only a
 * named one costs SPI.  A change of campaigns (status, trigger), versions or
 * steps sends a relcache invalidation of revenue_engine.campaigns at commit
 * (campaign_hooks_changed), and in this backend at the next command; the
 * trigger accepts pending invalidations first, so the next event in every
 * session sees a committed change.  An invalidation that arrives while an
 * entry is being computed discards it (the generation counter).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "revenue_engine.h"
#include "tcop/tcopprot.h"

/* More entries than this: start again (no growth without bound). */
#define HOOK_CACHE_MAX 8192

typedef struct HookKey
{
	char		tenant[RE_MAX_NAME_LEN + 1];
	char		event_type[RE_MAX_NAME_LEN + 1];
} HookKey;

typedef struct HookEntry
{
	HookKey		key;
	bool		hooked;
} HookEntry;

static MemoryContext hook_cxt = NULL;
static HTAB *hook_cache = NULL;
static Oid	campaigns_relid = InvalidOid;
static uint64 hook_generation = 0;
static SPIPlanPtr probe_plan = NULL;
static SPIPlanPtr handler_plan = NULL;

static void
hooks_reset(void)
{
	if (hook_cxt != NULL)
		MemoryContextReset(hook_cxt);
	hook_cache = NULL;
	hook_generation++;
}

static void
hooks_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == campaigns_relid)
	{
		hooks_reset();
		/* the extension may have been dropped and created again */
		campaigns_relid = InvalidOid;
	}
}

static void
hooks_ensure(void)
{
	HASHCTL		ctl;

	if (hook_cxt == NULL)
	{
		hook_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine campaign hooks",
										 ALLOCSET_DEFAULT_SIZES);
		CacheRegisterRelcacheCallback(hooks_relcache_callback, (Datum) 0);
	}
	if (!OidIsValid(campaigns_relid))
		campaigns_relid = get_relname_relid("campaigns",
											get_namespace_oid("revenue_engine", false));
	if (hook_cache == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(HookKey);
		ctl.entrysize = sizeof(HookEntry);
		ctl.hcxt = hook_cxt;
		hook_cache = hash_create("revenue_engine campaign hooks", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
}

static void
prepare_plans(void)
{
	Oid			probe_types[2] = {TEXTOID, TEXTOID};
	Oid			handler_types[5] = {TEXTOID, UUIDOID, TEXTOID, JSONBOID, UUIDOID};

	if (handler_plan != NULL)
		return;
	/* three index probes, each routed by the tenant */
	probe_plan = re_prepare_saved(
								  "SELECT EXISTS (SELECT 1 FROM revenue_engine.campaigns c"
								  "                WHERE c.tenant_id = $1 AND c.trigger_kind = 'event'"
								  "                  AND c.trigger_value = $2 AND c.status = 'active')"
								  "    OR EXISTS (SELECT 1 FROM revenue_engine.campaign_steps s"
								  "                WHERE s.tenant_id = $1 AND s.kind = 'wait_event'"
								  "                  AND s.event_type = $2)"
								  "    OR EXISTS (SELECT 1 FROM revenue_engine.campaign_versions v"
								  "                WHERE v.tenant_id = $1 AND v.exit_rules @>"
								  "                      pg_catalog.jsonb_build_array("
								  "                        pg_catalog.jsonb_build_object('event_type', $2)))",
								  2, probe_types);
	handler_plan = re_prepare_saved("SELECT revenue_engine.campaign_on_event($1, $2, $3, $4, $5)",
									5, handler_types);
}

/* Whether a campaign of tenant names event_type; connected to SPI as the owner. */
static bool
event_type_hooked(const char *tenant, const char *event_type)
{
	HookKey		key;
	HookEntry  *entry;
	bool		found;
	bool		hooked;
	bool		isnull;
	bool		cacheable;
	uint64		generation;
	Datum		values[2];
	int			ret;

	cacheable = strlen(tenant) <= RE_MAX_NAME_LEN && strlen(event_type) <= RE_MAX_NAME_LEN;
	if (cacheable)
	{
		memset(&key, 0, sizeof(key));
		strlcpy(key.tenant, tenant, sizeof(key.tenant));
		strlcpy(key.event_type, event_type, sizeof(key.event_type));
		hooks_ensure();
		entry = hash_search(hook_cache, &key, HASH_FIND, NULL);
		if (entry != NULL)
			return entry->hooked;
	}

	generation = hook_generation;
	prepare_plans();
	values[0] = CStringGetTextDatum(tenant);
	values[1] = CStringGetTextDatum(event_type);
	ret = SPI_execute_plan(probe_plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "campaign hook look-up failed: %s", SPI_result_code_string(ret));
	hooked = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		hooked = false;

	/* an invalidation during the look-up: do not keep what may be stale */
	if (cacheable && generation == hook_generation)
	{
		hooks_ensure();
		if (hash_get_num_entries(hook_cache) >= HOOK_CACHE_MAX)
		{
			hooks_reset();
			hooks_ensure();
		}
		entry = hash_search(hook_cache, &key, HASH_ENTER, &found);
		entry->hooked = hooked;
	}
	return hooked;
}

/*
 * Whether the client's statement is COPY (FROM: triggers fire on loading
 * only): pg_restore and a plain dump load the tables with COPY, and the
 * rows they load are the enrollments, events and consents as they were.
 * Enrolling the restored contacts again, or applying restored events' exit
 * rules to restored enrollments, would change or duplicate them (and the
 * enrollments' COPY would then fail on its unique keys).  So the campaign
 * triggers do nothing for rows loaded by COPY; the application writes
 * through the functions, never by COPY.  Leading blanks and comments are
 * skipped.
 */
static bool
statement_is_copy(void)
{
	const char *p = debug_query_string;

	if (p == NULL)
		return false;
	for (;;)
	{
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f')
			p++;
		if (p[0] == '-' && p[1] == '-')
		{
			while (*p != '\0' && *p != '\n')
				p++;
			continue;
		}
		if (p[0] == '/' && p[1] == '*')
		{
			const char *end = strstr(p + 2, "*/");

			if (end == NULL)
				return false;
			p = end + 2;
			continue;
		}
		break;
	}
	return pg_strncasecmp(p, "copy", 4) == 0 &&
		(p[4] == ' ' || p[4] == '\t' || p[4] == '\n' || p[4] == '\r');
}

/* SQL: revenue_engine.campaign_rows_copied(), for the triggers in enroll.sql */
PG_FUNCTION_INFO_V1(re_campaign_rows_copied);
Datum
re_campaign_rows_copied(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(statement_is_copy());
}

/*
 * Trigger: AFTER INSERT FOR EACH ROW on revenue_engine.webhook_events.
 * Events without a user concern no contact, events loaded by COPY (a
 * restore) are the past.  Runs its statements as the
 * extension owner with a pinned search_path; the row is data only.
 */
PG_FUNCTION_INFO_V1(re_campaign_event_trigger);
Datum
re_campaign_event_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tuple;
	bool		isnull;
	Datum		user_id;
	Datum		values[5];
	char	   *tenant;
	char	   *event_type;
	ReOwnerScope scope = {0};
	int			ret;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("revenue_engine.campaign_event_trigger() must be called as an AFTER INSERT FOR EACH ROW trigger")));

	tuple = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	user_id = heap_getattr(tuple, SPI_fnumber(desc, "user_id"), desc, &isnull);
	if (isnull || statement_is_copy())
		return PointerGetDatum(NULL);
	tenant = TextDatumGetCString(heap_getattr(tuple, SPI_fnumber(desc, "tenant_id"), desc, &isnull));
	event_type = TextDatumGetCString(heap_getattr(tuple, SPI_fnumber(desc, "event_type"), desc, &isnull));

	/* a change committed by another session is seen now */
	AcceptInvalidationMessages();
	if (hook_cache != NULL)
	{
		HookKey		key;
		HookEntry  *entry;

		if (strlen(tenant) <= RE_MAX_NAME_LEN && strlen(event_type) <= RE_MAX_NAME_LEN)
		{
			memset(&key, 0, sizeof(key));
			strlcpy(key.tenant, tenant, sizeof(key.tenant));
			strlcpy(key.event_type, event_type, sizeof(key.event_type));
			entry = hash_search(hook_cache, &key, HASH_FIND, NULL);
			if (entry != NULL && !entry->hooked)
				return PointerGetDatum(NULL);
		}
	}

	re_connect_as_owner(&scope);
	if (event_type_hooked(tenant, event_type))
	{
		values[0] = CStringGetTextDatum(tenant);
		values[1] = user_id;
		values[2] = CStringGetTextDatum(event_type);
		values[3] = heap_getattr(tuple, SPI_fnumber(desc, "event_data"), desc, &isnull);
		values[4] = heap_getattr(tuple, SPI_fnumber(desc, "id"), desc, &isnull);
		ret = SPI_execute_plan(handler_plan, values, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "campaign_on_event failed: %s", SPI_result_code_string(ret));
	}
	re_disconnect_as_owner(&scope);
	return PointerGetDatum(NULL);
}

/*
 * Trigger: a change of campaigns, campaign_versions or campaign_steps
 * empties every backend's cache above (at commit; in this backend at the
 * next command).
 */
PG_FUNCTION_INFO_V1(re_campaign_hooks_changed);
Datum
re_campaign_hooks_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("revenue_engine.campaign_hooks_changed() must be called as a trigger")));
	re_invalidate_table(trigdata->tg_relation, "campaigns");
	return PointerGetDatum(NULL);
}
