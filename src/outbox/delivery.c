/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  The queue side of the delivery worker.  Each function runs one short
 *	  transaction of its own: claim due rows (FOR UPDATE SKIP LOCKED, with a
 *	  lease, the attempt counted at claim), or record a batch of outcomes.
 *	  No transaction is open while requests are on the network.
 *
 * The worker runs these with a pinned search_path, and the texts do not
 * rely on it either: every function is pg_catalog's (a database owner's
 * public.unnest(interval[]) would be a better match than
 * pg_catalog.unnest(anyarray)); a multi-argument unnest, which the parser
 * expands only when unqualified, is written as ROWS FROM.  Operators are
 * left bare: all of them take built-in types, for which pg_catalog's exact
 * match is found first.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "pgstat.h"
#include "utils/array.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "catalog/namespace.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "outbox/delivery.h"
#include "blasts/blasts.h"

/* Leases outlive any request's timeout; a restarted worker reclaims at once. */
#define RE_LEASE "10 minutes"

/*
 * Shard groups.  On a Citus node whose tables are distributed
 * (revenue_engine.distribute()), the tables in this database are shells that
 * Citus routes statements through, and a statement over many tenants would
 * fan out to every node.  The worker of each node drains only the shards it
 * holds instead: its statements are run once per local shard group (the
 * colocated shards of one hash range), with every table of the schema
 * replaced by that group's shard (a reference table by its local shard).
 * A shard is a plain table to PostgreSQL's planner, so the statements are
 * the ones a single node runs, with the same plans; triggers on a shard run
 * as Citus set them up.  A node that holds no shard of the group (the
 * coordinator, usually) has no group and delivers nothing.  Without Citus,
 * or before distribute(), there is one group that names the tables
 * themselves.  The groups are read at start and again at each refresh of
 * the targets; a change frees every plan.
 */
#define RE_MAX_GROUPS 64

typedef struct PlanSet
{
	SPIPlanPtr	claim_event,
				claim_send,
				claim_poll,
				poll_status,
				poll_done,
				record_delivery,
				record_event_status,
				record_send,
				record_attempt,
				record_health;
	int			nmap;			/* 0: the tables themselves */
	char	  **from;			/* table names */
	char	  **to;				/* their shards' names */
} PlanSet;

static PlanSet groups[RE_MAX_GROUPS];
static int	ngroups = 1;
static PlanSet *ps = &groups[0];
static bool groups_loaded = false;
static int	want_group = 0;		/* the group begin_tx makes current */
static char *groups_signature = NULL;
static MemoryContext groups_cxt = NULL;

#define claim_event_plan (ps->claim_event)
#define claim_send_plan (ps->claim_send)
#define claim_poll_plan (ps->claim_poll)
#define poll_status_plan (ps->poll_status)
#define poll_done_plan (ps->poll_done)
#define record_delivery_plan (ps->record_delivery)
#define record_event_status_plan (ps->record_event_status)
#define record_send_plan (ps->record_send)
#define record_attempt_plan (ps->record_attempt)
#define record_health_plan (ps->record_health)

static MemoryContext caller_cxt = NULL;

/* The extension this worker serves; a DROP (and CREATE) EXTENSION ends it. */
static Oid	extension_oid = InvalidOid;
bool		re_delivery_extension_gone = false;

static void end_tx(void);
static void load_groups(void);
static Datum make_array(Datum *elems, bool *nulls, int n, Oid type);

/*
 * A short transaction; the caller's memory context is current again after
 * end_tx.  False (the transaction already ended) when the extension the
 * worker started with is gone: the caller returns and the worker stops.
 */
static bool
begin_tx(const char *activity)
{
	caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	if (get_extension_oid("revenue_engine", true) != extension_oid)
	{
		re_delivery_extension_gone = true;
		end_tx();
		return false;
	}
	if (!groups_loaded)
		load_groups();
	ps = &groups[want_group < ngroups ? want_group : 0];
	return true;
}

static void
end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller_cxt);
	/* a worker never returns to a client loop: flush its table statistics for autovacuum */
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* sql with the current group's shards for the tables (sql itself without Citus) */
static const char *
gsql(const char *sql)
{
	StringInfoData buf;
	const char *p = sql;
	const char *prefix = "revenue_engine.";
	size_t		plen = strlen(prefix);

	if (ps->nmap == 0)
		return sql;
	initStringInfo(&buf);
	for (;;)
	{
		const char *hit = strstr(p, prefix);
		const char *end;
		int			i;

		if (hit == NULL)
			break;
		appendBinaryStringInfo(&buf, p, hit - p + plen);
		p = hit + plen;
		for (end = p; isalnum((unsigned char) *end) || *end == '_'; end++)
			;
		for (i = 0; i < ps->nmap; i++)
			if (strlen(ps->from[i]) == (size_t) (end - p) && strncmp(ps->from[i], p, end - p) == 0)
				break;
		if (i < ps->nmap && *end != '(')
			appendStringInfoString(&buf, ps->to[i]);
		else
			appendBinaryStringInfo(&buf, p, end - p);
		p = end;
	}
	appendStringInfoString(&buf, p);
	return buf.data;
}

/*
 * distribute() and Citus's shard changes invalidate the distributed tables'
 * relcache entries: the groups are read again at the next transaction.
 */
static Oid	groups_watch_relid = InvalidOid;

static void
groups_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == groups_watch_relid)
		groups_loaded = false;
}

static void
free_group_plans(PlanSet *g)
{
	SPIPlanPtr *plans[] = {&g->claim_event, &g->claim_send, &g->claim_poll, &g->poll_status,
		&g->poll_done, &g->record_delivery, &g->record_event_status, &g->record_send,
	&g->record_attempt, &g->record_health};
	int			i;

	for (i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i] != NULL)
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}

/*
 * Read this node's shard groups (in a transaction, connected to SPI).  The
 * plans of every group are freed when the groups changed.
 */
static void
load_groups(void)
{
	StringInfoData sig;
	uint64		i;
	int			g;
	int			nref = 0;
	int			ndist = 0;
	bool		isnull;
	SPITupleTable *tt;
	uint64		n;

	static bool callback_registered = false;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(groups_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	groups_watch_relid = get_relname_relid("deliveries", get_namespace_oid("revenue_engine", false));
	initStringInfo(&sig);
	SPI_execute("SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL"
				"   AND pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL",
				true, 1);
	if (SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		SPI_execute("SELECT s.shardminvalue IS NULL, s.shardminvalue, c.relname::text,"
					"       c.relname || '_' || s.shardid"
					"  FROM pg_catalog.pg_dist_partition d"
					"  JOIN pg_catalog.pg_class c ON c.oid = d.logicalrelid"
					"  JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = d.logicalrelid"
					"  JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid"
					" WHERE c.relnamespace = 'revenue_engine'::regnamespace"
					"   AND pl.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)"
					" ORDER BY 1 DESC, s.shardminvalue::int8, c.relname", true, 0);
		tt = SPI_tuptable;
		n = SPI_processed;
		for (i = 0; i < n; i++)
			appendStringInfo(&sig, "%s=%s;", SPI_getvalue(tt->vals[i], tt->tupdesc, 3),
							 SPI_getvalue(tt->vals[i], tt->tupdesc, 4));
		/* Citus, but revenue_engine's tables are not distributed: one group, the tables */
		if (n == 0)
			SPI_execute("SELECT 1 FROM pg_catalog.pg_dist_partition"
						" WHERE logicalrelid = 'revenue_engine.deliveries'::regclass", true, 1);
		if (n == 0 && SPI_processed == 0)
			resetStringInfo(&sig);
		else if (n == 0)
			appendStringInfoString(&sig, "no shards here");
	}
	else
	{
		tt = NULL;
		n = 0;
	}
	if (groups_signature != NULL && strcmp(groups_signature, sig.data) == 0)
	{
		groups_loaded = true;
		return;
	}

	for (g = 0; g < RE_MAX_GROUPS; g++)
		free_group_plans(&groups[g]);
	if (groups_cxt == NULL)
		groups_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine shard groups",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(groups_cxt);
	memset(groups, 0, sizeof(groups));
	groups_signature = MemoryContextStrdup(groups_cxt, sig.data);
	groups_loaded = true;
	ps = &groups[0];
	if (sig.len == 0)
	{
		ngroups = 1;			/* no Citus table: the tables themselves */
		return;
	}

	/* reference tables' shards first (every group has them), then one group per hash range */
	ngroups = 0;
	for (i = 0; i < n; i++)
	{
		bool		is_ref = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *minv = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);

		if (is_ref)
		{
			nref++;
			continue;
		}
		if (ngroups == 0 || strcmp(minv, SPI_getvalue(tt->vals[i - 1], tt->tupdesc, 2)) != 0 ||
			SPI_getvalue(tt->vals[i - 1], tt->tupdesc, 2) == NULL)
		{
			if (ngroups == RE_MAX_GROUPS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("this node holds more than %d shard groups of revenue_engine's tables",
								RE_MAX_GROUPS)));
			ngroups++;
		}
		ndist++;
	}
	for (g = 0; g < ngroups; g++)
	{
		groups[g].from = MemoryContextAlloc(groups_cxt, sizeof(char *) * (n + 1));
		groups[g].to = MemoryContextAlloc(groups_cxt, sizeof(char *) * (n + 1));
	}
	g = -1;
	for (i = 0; i < n; i++)
	{
		bool		is_ref = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *rel = MemoryContextStrdup(groups_cxt, SPI_getvalue(tt->vals[i], tt->tupdesc, 3));
		char	   *shard = MemoryContextStrdup(groups_cxt, SPI_getvalue(tt->vals[i], tt->tupdesc, 4));
		int			k;

		if (is_ref)
		{
			for (k = 0; k < ngroups; k++)
			{
				groups[k].from[groups[k].nmap] = rel;
				groups[k].to[groups[k].nmap++] = shard;
			}
			continue;
		}
		if (g < 0 || strcmp(SPI_getvalue(tt->vals[i], tt->tupdesc, 2),
							SPI_getvalue(tt->vals[i - 1], tt->tupdesc, 2)) != 0)
			g++;
		groups[g].from[groups[g].nmap] = rel;
		groups[g].to[groups[g].nmap++] = shard;
	}
	if (ngroups == 0)
		elog(LOG, "revenue_engine: this Citus node holds no shard of revenue_engine's distributed tables: its worker delivers nothing");
	else
		elog(LOG, "revenue_engine: delivering from %d local shard group(s) of revenue_engine's tables (%d shards, %d of reference tables)",
			 ngroups, ndist, nref);
}


bool
re_delivery_extension_present(void)
{
	bool		present;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	extension_oid = get_extension_oid("revenue_engine", true);
	present = OidIsValid(extension_oid);
	CommitTransactionCommand();
	return present;
}

/*
 * A reclaimed row goes back to the queue, or is dead when its attempts (each
 * counted at claim) are used up: a row that crashes the worker cannot loop.
 */
#define RECLAIM_DELIVERIES(cond) \
	"WITH r AS (" \
	" UPDATE revenue_engine.deliveries d" \
	"    SET status = CASE WHEN d.attempts > pg_catalog.cardinality(e.retry_schedule) THEN 'dead'" \
	"                      ELSE 'pending' END," \
	"        last_error = coalesce(d.last_error, 'the worker stopped during the attempt')," \
	"        lease_until = NULL, next_attempt_at = pg_catalog.now()" \
	"   FROM revenue_engine.endpoints e" \
	"  WHERE d.status = 'sending' AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id" \
	"    AND " cond \
	" RETURNING d.tenant_id, d.event_id, d.status, d.last_error)" \
	"UPDATE revenue_engine.webhook_events w SET status = 'failed', error_message = r.last_error" \
	"  FROM r WHERE r.status = 'dead' AND w.tenant_id = r.tenant_id AND w.id = r.event_id"
/*
 * A send of an at-most-once channel may have reached the provider: it
 * becomes unknown, never sent again (its campaign message is settled by the
 * provider's status callbacks: src/campaigns/outcomes.sql).  Others are sent
 * again with the same Idempotency-Key (the send's id: job_from_row).
 */
#define RECLAIM_SENDS(cond) \
	"UPDATE revenue_engine.sends s" \
	"   SET status = CASE WHEN c.delivery = 'at_most_once' THEN 'unknown'" \
	"                     WHEN s.attempts > pg_catalog.cardinality(c.retry_schedule) THEN 'failed'" \
	"                     ELSE 'queued' END," \
	"       last_error = CASE WHEN c.delivery = 'at_most_once' THEN" \
	"                'the worker stopped during the attempt; at-most-once channel: not sent again'" \
	"            ELSE coalesce(s.last_error, 'the worker stopped during the attempt') END," \
	"       lease_until = NULL, next_attempt_at = pg_catalog.now()" \
	"  FROM revenue_engine.channels c" \
	" WHERE s.status = 'sending' AND c.tenant_id = s.tenant_id AND c.id = s.channel_id AND " cond

/* At start: this is the database's only worker, so every lease is stale. */
void
re_delivery_reclaim_all(void)
{
	int			g;

	if (!begin_tx("revenue_engine: reclaiming leases of a previous worker"))
		return;
	for (g = 0; g < ngroups; g++)
	{
		ps = &groups[g];
		SPI_execute(gsql(RECLAIM_DELIVERIES("true")), false, 0);
		SPI_execute(gsql(RECLAIM_SENDS("true")), false, 0);
	}
	end_tx();
}

/* Expired leases come back (attempts stay counted). */
int
re_delivery_reclaim_expired(void)
{
	int			n = 0;
	int			g;

	if (!begin_tx("revenue_engine: reclaiming expired leases"))
		return 0;
	for (g = 0; g < ngroups; g++)
	{
		ps = &groups[g];
		SPI_execute(gsql(RECLAIM_DELIVERIES("d.lease_until < pg_catalog.now()")), false, 0);
		n += SPI_processed;
		SPI_execute(gsql(RECLAIM_SENDS("s.lease_until < pg_catalog.now()")), false, 0);
		n += SPI_processed;
	}
	end_tx();
	return n;
}

/* Retention of the attempt log and the circuit breaker. */
bool
re_delivery_maintenance(void)
{
	bool		disabled;
	uint64		ndisabled = 0;
	int			g;

	if (!begin_tx("revenue_engine: maintenance"))
		return false;
	for (g = 0; g < ngroups; g++)
	{
		ps = &groups[g];
		SPI_execute(gsql("DELETE FROM revenue_engine.delivery_attempts WHERE id IN ("
					" SELECT id FROM revenue_engine.delivery_attempts"
					"  WHERE started_at < pg_catalog.now() - pg_catalog.current_setting('revenue_engine.attempt_retention')::interval"
					"  LIMIT 10000)"), false, 0);
		SPI_execute(gsql("UPDATE revenue_engine.endpoints"
					"   SET enabled = false, disabled_at = pg_catalog.now(), updated_at = pg_catalog.now(),"
					"       disabled_reason = 'circuit breaker: failing since ' || failing_since"
					" WHERE enabled AND failing_since < pg_catalog.now() - circuit_break_after"), false, 0);
		ndisabled += SPI_processed;
		/* polling stops at the channel's poll_max_age, or when the channel stops polling */
		SPI_execute(gsql("DELETE FROM revenue_engine.poll_queue q"
					" WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.channels c"
					"                    WHERE c.tenant_id = q.tenant_id AND c.id = q.channel_id"
					"                      AND c.status_url IS NOT NULL"
					"                      AND q.sent_at >= pg_catalog.now() - c.poll_max_age)"), false, 0);
	}
	disabled = ndisabled > 0;
	if (disabled)
		elog(LOG, "revenue_engine: disabled %lu endpoint(s) failing longer than their circuit_break_after",
			 (unsigned long) ndisabled);
	end_tx();
	return disabled;
}

/* The earliest next_attempt_at of any due-able row, or 0 when none. */
TimestampTz
re_delivery_next_due(void)
{
	TimestampTz result = 0;
	bool		isnull;
	Datum		d;
	int			g;

	if (!begin_tx("revenue_engine: looking for the next due row"))
		return 0;
	/* one index probe per endpoint and channel */
	for (g = 0; g < ngroups; g++)
	{
		ps = &groups[g];
		SPI_execute(gsql("SELECT least("
					" (SELECT pg_catalog.min(x.at) FROM revenue_engine.endpoints e,"
					"   LATERAL (SELECT d.next_attempt_at AS at FROM revenue_engine.deliveries d"
					"             WHERE d.endpoint_id = e.id AND d.tenant_id = e.tenant_id"
					"               AND d.status = 'pending' ORDER BY d.next_attempt_at LIMIT 1) x"
					"   WHERE e.enabled),"
					" (SELECT pg_catalog.min(x.at) FROM revenue_engine.channels c,"
					"   LATERAL (SELECT s.next_attempt_at AS at FROM revenue_engine.sends s"
					"             WHERE s.channel_id = c.id AND s.tenant_id = c.tenant_id"
					"               AND s.status = 'queued' ORDER BY s.next_attempt_at LIMIT 1) x"
					"   WHERE c.enabled),"
					" (SELECT pg_catalog.min(x.at) FROM revenue_engine.channels c,"
					"   LATERAL (SELECT q.next_poll_at AS at FROM revenue_engine.poll_queue q"
					"             WHERE q.channel_id = c.id AND q.tenant_id = c.tenant_id"
					"             ORDER BY q.next_poll_at LIMIT 1) x"
					"   WHERE c.enabled AND c.status_url IS NOT NULL))"), true, 1);
		if (SPI_processed == 1)
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (!isnull && (result == 0 || DatumGetTimestampTz(d) < result))
				result = DatumGetTimestampTz(d);
		}
	}
	end_tx();
	return result;
}

static char **
text_array(Datum d, bool isnull, int *n, MemoryContext cxt)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;
	int			i;
	int			k = 0;

	*n = 0;
	if (isnull)
		return NULL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, n);
	out = MemoryContextAlloc(cxt, sizeof(char *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		if (!nulls[i])
			out[k++] = MemoryContextStrdup(cxt, TextDatumGetCString(elems[i]));
	*n = k;
	return out;
}

typedef struct ReTargetKey
{
	ReJobKind	kind;
	int64		id;
	char		tenant[64];
} ReTargetKey;

typedef struct ReTargetEntry
{
	ReTargetKey key;
	ReTarget   *target;
} ReTargetEntry;

ReTargetSet *
re_delivery_target_set(MemoryContext cxt)
{
	ReTargetSet *set = MemoryContextAllocZero(cxt, sizeof(ReTargetSet));
	HASHCTL		ctl;

	set->cxt = cxt;
	ctl.keysize = sizeof(ReTargetKey);
	ctl.entrysize = sizeof(ReTargetEntry);
	ctl.hcxt = cxt;
	set->by_key = hash_create("revenue_engine targets", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return set;
}

static ReTargetEntry *
target_entry(ReTargetSet *set, ReJobKind kind, const char *tenant, int64 id,
			 HASHACTION action, bool *found)
{
	ReTargetKey key;

	memset(&key, 0, sizeof(key));	/* the key is hashed as bytes */
	key.kind = kind;
	key.id = id;
	strlcpy(key.tenant, tenant, sizeof(key.tenant));
	return hash_search(set->by_key, &key, action, found);
}

static ReTarget *
find_target(ReTargetSet *set, ReJobKind kind, const char *tenant, int64 id)
{
	ReTargetEntry *e = target_entry(set, kind, tenant, id, HASH_FIND, NULL);

	return e ? e->target : NULL;
}

static ReTarget *
add_target(ReTargetSet *set, ReJobKind kind, const char *tenant, int64 id)
{
	ReTarget   *t = MemoryContextAllocZero(set->cxt, sizeof(ReTarget));
	bool		found;

	t->kind = kind;
	strlcpy(t->tenant, tenant, sizeof(t->tenant));
	t->id = id;
	t->cxt = AllocSetContextCreate(set->cxt, "revenue_engine target", ALLOCSET_SMALL_SIZES);
	t->tokens_at = GetCurrentTimestamp();
	t->may_have_more = true;
	target_entry(set, kind, tenant, id, HASH_ENTER, &found)->target = t;
	if (set->n == set->size)
	{
		set->size = Max(16, set->size * 2);
		set->all = set->all == NULL ?
			MemoryContextAlloc(set->cxt, sizeof(ReTarget *) * set->size) :
			repalloc(set->all, sizeof(ReTarget *) * set->size);
	}
	set->all[set->n++] = t;
	return t;
}

/* Targets gone from the tables that no job holds any more are freed. */
static void
free_unseen_targets(ReTargetSet *set)
{
	int			j = 0;

	while (j < set->n)
	{
		ReTarget   *t = set->all[j];

		if (t->seen || t->held > 0)
		{
			j++;
			continue;
		}
		target_entry(set, t->kind, t->tenant, t->id, HASH_REMOVE, NULL);
		MemoryContextDelete(t->cxt);
		pfree(t);
		set->all[j] = set->all[--set->n];
	}
}

/*
 * Reload enabled endpoints and channels.  Targets are kept across refreshes
 * (jobs in flight point at them); one that disappeared is marked unseen.
 * Returns false when the extension is no longer installed.
 */
bool
re_delivery_refresh_targets(ReTargetSet *set)
{
	uint64		i;
	int			j;
	int			g;

	for (j = 0; j < set->n; j++)
		set->all[j]->seen = false;

	if (!begin_tx("revenue_engine: loading endpoints and channels"))
		return false;
	load_groups();
	for (g = 0; g < ngroups; g++)
	{
		ps = &groups[g];
		SPI_execute(gsql("SELECT 0 AS kind, tenant_id, id, url, 'POST' AS method,"
					"       ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM pg_catalog.jsonb_each(headers) h),"
					"       signing_secrets, NULL::text, NULL::text, timeout_ms, connect_timeout_ms,"
					"       max_in_flight, rate_limit, rate_period = 'minute',"
					"       ARRAY(SELECT extract(epoch FROM x)::float8 FROM pg_catalog.unnest(retry_schedule) x),"
					"       false"
					"  FROM revenue_engine.endpoints WHERE enabled"
					" UNION ALL "
					"SELECT 1, tenant_id, id, url, method,"
					"       ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM pg_catalog.jsonb_each(headers) h),"
					"       '{}'::text[], body_template::text, message_id_path::text, timeout_ms,"
					"       connect_timeout_ms, max_in_flight, rate_limit, rate_period = 'minute',"
					"       ARRAY(SELECT extract(epoch FROM x)::float8 FROM pg_catalog.unnest(retry_schedule) x),"
					"       delivery = 'at_most_once'"
					"  FROM revenue_engine.channels WHERE enabled"
					" UNION ALL "
					"SELECT 2, tenant_id, id, status_url, 'GET',"
					"       ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM pg_catalog.jsonb_each(headers) h),"
					"       '{}'::text[], NULL::text, NULL::text, timeout_ms,"
					"       connect_timeout_ms, max_in_flight, rate_limit, rate_period = 'minute',"
					"       '{}'::float8[], false"
					"  FROM revenue_engine.channels WHERE enabled AND status_url IS NOT NULL"),
					true, 0);

		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int			k0 = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			ReJobKind	kind = k0 == 0 ? RE_JOB_EVENT : k0 == 1 ? RE_JOB_SEND : RE_JOB_POLL;
			char	   *tenant = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			ReTarget   *t = find_target(set, kind, tenant, id);
			Datum		d;
			Datum	   *elems;
			bool	   *nulls;
			int			n;
			int			k;

			if (t == NULL)
				t = add_target(set, kind, tenant, id);
			else
				MemoryContextReset(t->cxt);
			t->seen = true;
			t->group = g;
			t->url = MemoryContextStrdup(t->cxt, TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull)));
			t->method = MemoryContextStrdup(t->cxt, TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull)));
			d = SPI_getbinval(tup, desc, 6, &isnull);
			t->headers = text_array(d, isnull, &t->nheaders, t->cxt);
			d = SPI_getbinval(tup, desc, 7, &isnull);
			t->secrets = text_array(d, isnull, &t->nsecrets, t->cxt);
			d = SPI_getbinval(tup, desc, 8, &isnull);
			t->body_template = isnull ? NULL : MemoryContextStrdup(t->cxt, TextDatumGetCString(d));
			d = SPI_getbinval(tup, desc, 9, &isnull);
			t->message_id_path = isnull ? NULL : MemoryContextStrdup(t->cxt, TextDatumGetCString(d));
			t->timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 10, &isnull));
			t->connect_timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
			t->max_in_flight = DatumGetInt32(SPI_getbinval(tup, desc, 12, &isnull));
			d = SPI_getbinval(tup, desc, 13, &isnull);
			t->rate_limit = isnull ? 0 : DatumGetInt32(d);
			t->rate_period_s = DatumGetBool(SPI_getbinval(tup, desc, 14, &isnull)) ? 60.0 : 1.0;
			d = SPI_getbinval(tup, desc, 15, &isnull);
			deconstruct_array(DatumGetArrayTypeP(d), FLOAT8OID, 8, FLOAT8PASSBYVAL,
							  TYPALIGN_DOUBLE, &elems, &nulls, &n);
			t->retry_s = MemoryContextAlloc(t->cxt, sizeof(double) * Max(n, 1));
			for (k = 0; k < n; k++)
				t->retry_s[k] = DatumGetFloat8(elems[k]);
			t->nretry = n;
			t->at_most_once = DatumGetBool(SPI_getbinval(tup, desc, 16, &isnull));
		}
	}
	end_tx();
	free_unseen_targets(set);
	/* polls spend their channel's tokens */
	for (j = 0; j < set->n; j++)
		if (set->all[j]->kind == RE_JOB_POLL)
			set->all[j]->bucket = find_target(set, RE_JOB_SEND, set->all[j]->tenant,
											  set->all[j]->id);
	return true;
}

/*
 * One statement per kind claims for many targets: each target's due rows in
 * its own index probe (LATERAL, up to its limit, SKIP LOCKED), at most $4 in
 * all; a row comes back with its target's place in the arrays ($1, $2, $3).
 */
#define CLAIM_TARGETS \
	"WITH t AS (" \
	"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::int8[])," \
	"                           pg_catalog.unnest($3::int4[]))" \
	"         WITH ORDINALITY AS t(tenant_id, target_id, lim, i)" \
	"), c AS MATERIALIZED ("

static void
prepare_claim_plans(void)
{
	Oid			types[4] = {TEXTARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4OID};

	/* the last one prepared: an ERROR half-way prepares them all again */
	if (claim_poll_plan != NULL)
		return;

	/*
	 * Batch statements are planned for each batch: a generic plan knows neither
	 * the LIMIT nor how many rows the arrays hold, and can scan whole indexes.
	 */
	claim_event_plan = re_prepare_saved_custom(gsql(
							CLAIM_TARGETS
							"  SELECT t.i, d.tenant_id, d.event_id, d.endpoint_id FROM t,"
							"   LATERAL (SELECT d.tenant_id, d.event_id, d.endpoint_id"
							"              FROM revenue_engine.deliveries d"
							"             WHERE d.endpoint_id = t.target_id AND d.tenant_id = t.tenant_id"
							"               AND d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now()"
							"             ORDER BY d.next_attempt_at LIMIT t.lim FOR UPDATE SKIP LOCKED) d"
							"  LIMIT $4"
							"), u AS ("
							"  UPDATE revenue_engine.deliveries d"
							"     SET status = 'sending', attempts = d.attempts + 1,"
							"         lease_until = pg_catalog.now() + '" RE_LEASE "'::interval"
							"    FROM c WHERE d.tenant_id = c.tenant_id AND d.event_id = c.event_id"
							"     AND d.endpoint_id = c.endpoint_id"
							"  RETURNING c.i, d.tenant_id, d.event_id, d.attempts"
							")"
							"SELECT u.i, u.event_id::text, u.attempts,"
							"       pg_catalog.jsonb_build_object('id', e.id, 'event', e.event_type,"
							"                          'timestamp', e.created_at, 'user', e.user_data,"
							"                          'metadata', e.event_data)::text"
							"  FROM u JOIN revenue_engine.webhook_events e"
							"    ON e.tenant_id = u.tenant_id AND e.id = u.event_id"),
							4, types);
	claim_send_plan = re_prepare_saved_custom(gsql(
						   CLAIM_TARGETS
						   "  SELECT t.i, s.tenant_id, s.id FROM t,"
						   "   LATERAL (SELECT s.tenant_id, s.id FROM revenue_engine.sends s"
						   "             WHERE s.channel_id = t.target_id AND s.tenant_id = t.tenant_id"
						   "               AND s.status = 'queued' AND s.next_attempt_at <= pg_catalog.now()"
						   "             ORDER BY s.next_attempt_at LIMIT t.lim FOR UPDATE SKIP LOCKED) s"
						   "  LIMIT $4"
						   "), u AS ("
						   "  UPDATE revenue_engine.sends s"
						   "     SET status = 'sending', attempts = s.attempts + 1,"
						   "         lease_until = pg_catalog.now() + '" RE_LEASE "'::interval"
						   "    FROM c WHERE s.tenant_id = c.tenant_id AND s.id = c.id"
						   "  RETURNING c.i, s.tenant_id, s.channel_id, s.id, s.attempts, s.payload,"
						   "            s.idempotency_key"
						   ")"
						   /*
							* a campaign's WhatsApp message carries its key back in
							* status callbacks: a message whose answer a crash lost
							* is found by it (src/campaigns/outcomes.sql)
							*/
						   "SELECT u.i, u.id::text, u.attempts, (ch.body_template"
						   "       || CASE WHEN ch.kind = 'whatsapp' AND u.idempotency_key LIKE 'campaign:%'"
						   "               THEN pg_catalog.jsonb_build_object('biz_opaque_callback_data', u.idempotency_key)"
						   "               ELSE '{}'::jsonb END"
						   "       || u.payload)::text"
						   "  FROM u JOIN revenue_engine.channels ch"
						   "    ON ch.tenant_id = u.tenant_id AND ch.id = u.channel_id"),
						   4, types);
	/* a polled recipient's next poll is set at claim: a failed poll waits its turn */
	claim_poll_plan = re_prepare_saved_custom(gsql(
						   CLAIM_TARGETS
						   "  SELECT t.i, q.tenant_id, q.recipient_id FROM t,"
						   "   LATERAL (SELECT q.tenant_id, q.recipient_id FROM revenue_engine.poll_queue q"
						   "             WHERE q.channel_id = t.target_id AND q.tenant_id = t.tenant_id"
						   "               AND q.next_poll_at <= pg_catalog.now()"
						   "             ORDER BY q.next_poll_at LIMIT t.lim FOR UPDATE SKIP LOCKED) q"
						   "  LIMIT $4"
						   "), u AS ("
						   "  UPDATE revenue_engine.poll_queue q"
						   "     SET next_poll_at = pg_catalog.now() + ch.poll_interval, polls = q.polls + 1"
						   "    FROM c, revenue_engine.channels ch"
						   "   WHERE q.tenant_id = c.tenant_id AND q.recipient_id = c.recipient_id"
						   "     AND ch.tenant_id = q.tenant_id AND ch.id = q.channel_id"
						   "  RETURNING c.i, q.recipient_id, q.polls, q.message_id"
						   ")"
						   "SELECT u.i, u.recipient_id::text, u.polls, u.message_id FROM u"),
						   4, types);
}

/* The status URL with {message_id} replaced by the id, percent-encoded. */
static char *
poll_url(const char *tmpl, const char *message_id, MemoryContext cxt)
{
	StringInfoData buf;
	const char *p = tmpl;
	const char *hit;

	initStringInfo(&buf);
	while ((hit = strstr(p, "{message_id}")) != NULL)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		re_http_append_escaped(&buf, message_id);
		p = hit + strlen("{message_id}");
	}
	appendStringInfoString(&buf, p);
	return MemoryContextStrdup(cxt, buf.data);
}

/* A claimed row as a job, its request ready to start (but for signing). */
static ReJob *
job_from_row(ReTarget *target, HeapTuple tup, TupleDesc desc, ReBatch *batch)
{
	bool		isnull;
	ReJob	   *job = MemoryContextAllocZero(batch->cxt, sizeof(ReJob));
	char	   *id = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	char	   *value = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
	int			h = 0;
	int			k;

	job->kind = target->kind;
	job->target = target;
	job->batch = batch;
	strlcpy(job->tenant, target->tenant, sizeof(job->tenant));
	if (job->kind == RE_JOB_EVENT)
		strlcpy(job->event_id, id, sizeof(job->event_id));
	else
		job->send_id = pg_strtoint64(id);
	job->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	if (job->kind == RE_JOB_POLL)
	{
		/* a GET of the status URL, no body */
		job->message_id = MemoryContextStrdup(batch->cxt, value);
		job->req.url = poll_url(target->url, job->message_id, batch->cxt);
		job->req.body = NULL;
		job->req.body_len = 0;
	}
	else
	{
		job->body = MemoryContextStrdup(batch->cxt, value);
		job->hdrs[h++] = "Content-Type: application/json";
		job->req.url = MemoryContextStrdup(batch->cxt, target->url);
		job->req.body = job->body;
		job->req.body_len = strlen(job->body);
	}
	for (k = 0; k < target->nheaders && h < lengthof(job->hdrs) - 4; k++)
		job->hdrs[h++] = MemoryContextStrdup(batch->cxt, target->headers[k]);
	if (job->kind == RE_JOB_SEND)
	{
		snprintf(job->key_header, sizeof(job->key_header),
				 "Idempotency-Key: revenue-engine-send-%s-" INT64_FORMAT,
				 job->tenant, job->send_id);
		job->hdrs[h++] = job->key_header;
	}
	job->req.method = MemoryContextStrdup(batch->cxt, target->method);
	job->req.headers = job->hdrs;
	job->req.nheaders = h;
	job->req.timeout_ms = target->timeout_ms;
	job->req.connect_timeout_ms = target->connect_timeout_ms;
	job->req.owner = job;
	return job;
}

static int
claim_group(ReJobKind kind, ReTarget **targets, const int *limits, int ntargets,
			int max, ReJob **jobs, ReBatch *batch)
{
	Datum	   *tenants = palloc(sizeof(Datum) * ntargets);
	Datum	   *ids = palloc(sizeof(Datum) * ntargets);
	Datum	   *lims = palloc(sizeof(Datum) * ntargets);
	Datum		values[4];
	uint64		i;
	int			k;
	int			ret;
	int			n = 0;

	for (k = 0; k < ntargets; k++)
	{
		tenants[k] = CStringGetTextDatum(targets[k]->tenant);
		ids[k] = Int64GetDatum(targets[k]->id);
		lims[k] = Int32GetDatum(limits[k]);
	}
	if (!begin_tx(kind == RE_JOB_EVENT ? "revenue_engine: claiming events" :
				  kind == RE_JOB_SEND ? "revenue_engine: claiming sends" :
				  "revenue_engine: claiming status polls"))
		return 0;
	prepare_claim_plans();
	values[0] = make_array(tenants, NULL, ntargets, TEXTOID);
	values[1] = make_array(ids, NULL, ntargets, INT8OID);
	values[2] = make_array(lims, NULL, ntargets, INT4OID);
	values[3] = Int32GetDatum(max);
	ret = SPI_execute_plan(kind == RE_JOB_EVENT ? claim_event_plan :
						   kind == RE_JOB_SEND ? claim_send_plan : claim_poll_plan,
						   values, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claiming failed: %s", SPI_result_code_string(ret));

	for (i = 0; i < SPI_processed && n < max; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		at = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));

		if (at < 1 || at > ntargets)
			elog(ERROR, "claimed a row of target " INT64_FORMAT " of %d", at, ntargets);
		jobs[n++] = job_from_row(targets[at - 1], tup, SPI_tuptable->tupdesc, batch);
	}
	end_tx();
	batch->remaining += n;
	return n;
}

/*
 * Whether a response body carries a WhatsApp Cloud API error that sending
 * the same request again cannot cure: 131047 (24-hour window closed),
 * 131049 (per-user marketing limit), 131050 (the user stopped marketing).
 * Campaigns act on them (src/campaigns/outcomes.sql).  A scan for
 * "code": <n>, as the body may not be JSON at all.
 */
static bool
whatsapp_final_error(const char *body)
{
	const char *p = body;

	while (p != NULL && (p = strstr(p, "\"code\"")) != NULL)
	{
		long		code;

		p += 6;
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (*p != ':')
			continue;
		p++;
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!isdigit((unsigned char) *p))
			continue;
		code = strtol(p, NULL, 10);
		if (code == 131047 || code == 131049 || code == 131050)
			return true;
	}
	return false;
}

/*
 * Decide what an attempt's result means: 2xx sent; 408, 429, 3xx, 5xx and
 * transport errors retried while attempts remain (Retry-After honoured);
 * other 4xx dead; 410 dead and the endpoint disabled; a refused address dead.
 * Sends: a WhatsApp error that a retry cannot cure is dead whatever the
 * status; on an at-most-once channel, a request that may have arrived and
 * got no answer (a timeout, a reset, the worker stopping; a 502 or 504 from
 * a gateway) is unknown, never sent again.
 */
static ReOutcome
classify(ReJob *job, TimestampTz *next_attempt_at, bool *disable_target)
{
	ReHttpRequest *req = &job->req;
	ReTarget   *t = job->target;
	long		s = req->status;
	double		delay;

	*disable_target = false;
	*next_attempt_at = 0;
	if (req->blocked)
		return RE_OUTCOME_DEAD;
	if (!req->transport_error && s >= 200 && s < 300)
		return RE_OUTCOME_SENT;
	if (job->kind == RE_JOB_SEND && req->response != NULL && whatsapp_final_error(req->response))
		return RE_OUTCOME_DEAD;
	if (job->kind == RE_JOB_SEND && t->at_most_once &&
		((req->transport_error && req->request_sent) || s == 502 || s == 504))
		return RE_OUTCOME_UNKNOWN;
	if (!req->transport_error && s == 410)
	{
		*disable_target = (job->kind == RE_JOB_EVENT);
		return RE_OUTCOME_DEAD;
	}
	if (!req->transport_error && s >= 400 && s < 500 && s != 408 && s != 429)
		return RE_OUTCOME_DEAD;
	if (job->attempt > t->nretry)
		return RE_OUTCOME_DEAD;

	/* the n-th attempt failed: wait retry_s[n - 1], +-10% jitter */
	delay = t->retry_s[job->attempt - 1] * (0.9 + 0.2 * pg_prng_double(&pg_global_prng_state));
	if (req->retry_after_s > 0)
		delay = Max(delay, Min(req->retry_after_s, 86400.0));
	*next_attempt_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) (delay * 1000));
	return RE_OUTCOME_RETRY;
}

#define ATTEMPT_ROWS(id) \
	"SELECT " id "o.tenant_id, o.kind, o.event_id::uuid," \
	"       CASE WHEN o.kind = 'event' THEN o.target END, o.send_id," \
	"       CASE WHEN o.kind = 'send' THEN o.target END," \
	"       o.attempt, o.started_at, o.latency, o.code, o.outcome, o.err, o.body" \
	"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)," \
	"       pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)," \
	"       pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8)," \
	"       pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11)," \
	"       pg_catalog.unnest($12), pg_catalog.unnest($13))" \
	"       AS o(tenant_id, kind, event_id, target, send_id, unused, attempt," \
	"            started_at, latency, code, outcome, err, body)"

static void
prepare_record_plans(void)
{
	Oid			dtypes[7] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, INT4ARRAYOID, TEXTARRAYOID};
	Oid			etypes[2] = {TEXTARRAYOID, TEXTARRAYOID};
	Oid			stypes[9] = {TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, BOOLARRAYOID};
	Oid			atypes[13] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
		INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID, FLOAT4ARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Oid			htypes[4] = {TEXTARRAYOID, INT8ARRAYOID, BOOLARRAYOID, BOOLARRAYOID};

	/* the last one prepared: an ERROR half-way prepares them all again */
	if (record_health_plan != NULL)
		return;
	record_delivery_plan = re_prepare_saved_custom(gsql(
								"UPDATE revenue_engine.deliveries d"
								"   SET status = o.status, lease_until = NULL, last_status = o.code,"
								"       last_error = o.err,"
								"       next_attempt_at = coalesce(o.next_at, d.next_attempt_at),"
								"       sent_at = CASE WHEN o.status = 'sent' THEN pg_catalog.now() END"
								"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2::uuid[]),"
								"       pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
								"       pg_catalog.unnest($6), pg_catalog.unnest($7))"
								"       AS o(tenant_id, event_id, endpoint_id, status, next_at, code, err)"
								" WHERE d.tenant_id = o.tenant_id AND d.event_id = o.event_id"
								"   AND d.endpoint_id = o.endpoint_id AND d.status = 'sending'"),
								7, dtypes);
	record_event_status_plan = re_prepare_saved_custom(gsql(
									"UPDATE revenue_engine.webhook_events e"
									"   SET status = x.status, attempts = x.attempts, sent_at = x.sent_at,"
									"       error_message = x.err"
									"  FROM (SELECT d.tenant_id, d.event_id,"
									"               CASE WHEN pg_catalog.bool_and(d.status = 'sent') THEN 'sent'"
									"                    WHEN pg_catalog.bool_or(d.status = 'dead') THEN 'failed'"
									"                    ELSE 'pending' END AS status,"
									"               pg_catalog.max(d.attempts) AS attempts, pg_catalog.max(d.sent_at) AS sent_at,"
									"               pg_catalog.string_agg(d.last_error, '; ') FILTER (WHERE d.status <> 'sent') AS err"
									"          FROM revenue_engine.deliveries d"
									"          JOIN (SELECT DISTINCT * FROM ROWS FROM (pg_catalog.unnest($1),"
									"       pg_catalog.unnest($2::uuid[])) AS k(tenant_id, event_id)) k"
									"            ON d.tenant_id = k.tenant_id AND d.event_id = k.event_id"
									"         GROUP BY 1, 2) x"
									" WHERE e.tenant_id = x.tenant_id AND e.id = x.event_id"),
									2, etypes);
	record_send_plan = re_prepare_saved_custom(gsql(
							"UPDATE revenue_engine.sends s"
							"   SET status = o.status, lease_until = NULL, response_status = o.code,"
							"       last_error = o.err, response_body = o.body,"
							"       next_attempt_at = coalesce(o.next_at, s.next_attempt_at),"
							"       sent_at = CASE WHEN o.status = 'sent' THEN pg_catalog.now() END,"
							"       provider_message_id = CASE WHEN o.status = 'sent' AND o.is_json"
							"            AND o.path IS NOT NULL THEN o.body::jsonb #>> o.path::text[] END"
							"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							"       pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							"       pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							"       pg_catalog.unnest($9))"
							"       AS o(tenant_id, id, status, next_at, code, err, body, path, is_json)"
							" WHERE s.tenant_id = o.tenant_id AND s.id = o.id AND s.status = 'sending'"),
							9, stypes);
	/*
	 * A shard has no identity column: its ids come from the table's identity
	 * sequence on this node (whose range distribute() made this node's own).
	 */
	record_attempt_plan = re_prepare_saved_custom(gsql(ps->nmap == 0 ?
							   "INSERT INTO revenue_engine.delivery_attempts"
							   " (tenant_id, kind, event_id, endpoint_id, send_id, channel_id, attempt,"
							   "  started_at, latency_ms, status_code, outcome, error, response_body)"
							   ATTEMPT_ROWS("") :
							   "INSERT INTO revenue_engine.delivery_attempts"
							   " (id, tenant_id, kind, event_id, endpoint_id, send_id, channel_id, attempt,"
							   "  started_at, latency_ms, status_code, outcome, error, response_body)"
							   ATTEMPT_ROWS("pg_catalog.nextval(pg_catalog.pg_get_serial_sequence("
											"'\"revenue_engine\".delivery_attempts', 'id')::regclass), ")),
							   13, atypes);
	record_health_plan = re_prepare_saved_custom(gsql(
							  "UPDATE revenue_engine.endpoints e"
							  "   SET failing_since = CASE WHEN o.any_ok THEN NULL"
							  "                            ELSE coalesce(e.failing_since, pg_catalog.now()) END,"
							  "       enabled = e.enabled AND NOT o.gone,"
							  "       disabled_at = CASE WHEN o.gone THEN pg_catalog.now() ELSE e.disabled_at END,"
							  "       disabled_reason = CASE WHEN o.gone THEN"
							  "            'the endpoint answered 410 Gone' ELSE e.disabled_reason END"
							  "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							  "       pg_catalog.unnest($3),"
							  "       pg_catalog.unnest($4)) AS o(tenant_id, id, any_ok, gone)"
							  " WHERE e.tenant_id = o.tenant_id AND e.id = o.id"
							  "   AND (e.failing_since IS DISTINCT FROM"
							  "        CASE WHEN o.any_ok THEN NULL ELSE coalesce(e.failing_since, pg_catalog.now()) END"
							  "        OR o.gone)"),
							  4, htypes);
}

static Datum
make_array(Datum *elems, bool *nulls, int n, Oid type)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, type,
											  typlen, typbyval, typalign));
}

/*
 * A response body as text.  Valid in the database encoding and without NUL,
 * it is kept byte for byte (UTF-8 included).  Otherwise, as text columns
 * refuse such bytes, each byte that is not part of a valid character (and
 * NUL) is written \xNN and a backslash \\: what came stays readable and
 * nothing valid is changed; such a body is not JSON any more, so no message
 * id is taken from it.
 */
static char *
clean_text(const char *s, size_t len)
{
	/* text columns refuse NUL bytes and invalid encoding: those bytes escaped */
	return re_text_from_bytes(s, len);
}

/*
 * Record the outcomes of completed jobs in one transaction.  An ERROR leaves
 * the rows leased as they were: the caller records them again, one by one.
 */
static void
record_group(ReJob **jobs, int njobs, int *nsent, int *nretry, int *ndead)
{
	Datum	   *d_tenant = palloc(sizeof(Datum) * njobs);
	Datum	   *d_event = palloc(sizeof(Datum) * njobs);
	Datum	   *d_target = palloc(sizeof(Datum) * njobs);
	Datum	   *d_status = palloc(sizeof(Datum) * njobs);
	Datum	   *d_next = palloc(sizeof(Datum) * njobs);
	Datum	   *d_code = palloc(sizeof(Datum) * njobs);
	Datum	   *d_err = palloc(sizeof(Datum) * njobs);
	bool	   *n_next = palloc(sizeof(bool) * njobs);
	bool	   *n_code = palloc(sizeof(bool) * njobs);
	bool	   *n_err = palloc(sizeof(bool) * njobs);
	Datum	   *s_tenant = palloc(sizeof(Datum) * njobs);
	Datum	   *s_id = palloc(sizeof(Datum) * njobs);
	Datum	   *s_status = palloc(sizeof(Datum) * njobs);
	Datum	   *s_next = palloc(sizeof(Datum) * njobs);
	Datum	   *s_code = palloc(sizeof(Datum) * njobs);
	Datum	   *s_err = palloc(sizeof(Datum) * njobs);
	Datum	   *s_body = palloc(sizeof(Datum) * njobs);
	Datum	   *s_path = palloc(sizeof(Datum) * njobs);
	Datum	   *s_json = palloc(sizeof(Datum) * njobs);
	bool	   *sn_next = palloc(sizeof(bool) * njobs);
	bool	   *sn_code = palloc(sizeof(bool) * njobs);
	bool	   *sn_err = palloc(sizeof(bool) * njobs);
	bool	   *sn_body = palloc(sizeof(bool) * njobs);
	bool	   *sn_path = palloc(sizeof(bool) * njobs);
	/* attempt log */
	Datum	   *a[13];
	bool	   *an[13];
	/* endpoint health */
	Datum	   *h_tenant = palloc(sizeof(Datum) * njobs);
	Datum	   *h_id = palloc(sizeof(Datum) * njobs);
	Datum	   *h_ok = palloc(sizeof(Datum) * njobs);
	Datum	   *h_gone = palloc(sizeof(Datum) * njobs);
	int			nd = 0,
				ns = 0,
				nh = 0;
	int			sent = 0,
				retried = 0,
				dead = 0;
	int			i,
				k;

	for (k = 0; k < 13; k++)
	{
		a[k] = palloc(sizeof(Datum) * njobs);
		an[k] = palloc0(sizeof(bool) * njobs);
	}

	for (i = 0; i < njobs; i++)
	{
		ReJob	   *job = jobs[i];
		ReHttpRequest *req = &job->req;
		TimestampTz next_at;
		bool		disable;
		ReOutcome	outcome = classify(job, &next_at, &disable);
		const char *status;
		char	   *err = req->error[0] ? req->error : NULL;
		char	   *body = req->response ? clean_text(req->response, req->response_len) : NULL;
		int			j;

		if (err == NULL && outcome != RE_OUTCOME_SENT)
			err = psprintf("HTTP %ld", req->status);
		if (outcome == RE_OUTCOME_UNKNOWN)
			err = psprintf("outcome unknown (%s); at-most-once channel: not sent again", err);
		if (job->record_error != NULL)
		{
			/*
			 * Its outcome could not be recorded (a trigger raised ...): the row
			 * carries that error.  A request that was delivered is not
			 * repeated: it is dead (redrivable), not retried.
			 */
			err = psprintf("could not record the outcome (%s): %s",
						   outcome == RE_OUTCOME_SENT ? psprintf("HTTP %ld", req->status) : err,
						   job->record_error);
			if (outcome == RE_OUTCOME_SENT)
			{
				outcome = RE_OUTCOME_DEAD;
				next_at = 0;
			}
			disable = false;
		}
		if (outcome == RE_OUTCOME_SENT)
			sent++;
		else if (outcome == RE_OUTCOME_RETRY)
			retried++;
		else
			dead++;

		if (job->kind == RE_JOB_EVENT)
		{
			status = outcome == RE_OUTCOME_SENT ? "sent" :
				outcome == RE_OUTCOME_RETRY ? "pending" : "dead";
			d_tenant[nd] = CStringGetTextDatum(job->tenant);
			d_event[nd] = CStringGetTextDatum(job->event_id);
			d_target[nd] = Int64GetDatum(job->target->id);
			d_status[nd] = CStringGetTextDatum(status);
			d_next[nd] = TimestampTzGetDatum(next_at);
			n_next[nd] = (next_at == 0);
			d_code[nd] = Int32GetDatum((int32) req->status);
			n_code[nd] = (req->status == 0);
			/* a 2xx whose body was cut off is sent: its note stays in the attempt log */
			d_err[nd] = (err && outcome != RE_OUTCOME_SENT) ? CStringGetTextDatum(err) : (Datum) 0;
			n_err[nd] = (err == NULL || outcome == RE_OUTCOME_SENT);
			nd++;

			/* one health row per endpoint in this batch */
			for (j = 0; j < nh; j++)
				if (DatumGetInt64(h_id[j]) == job->target->id &&
					strcmp(TextDatumGetCString(h_tenant[j]), job->tenant) == 0)
					break;
			if (j == nh)
			{
				h_tenant[nh] = CStringGetTextDatum(job->tenant);
				h_id[nh] = Int64GetDatum(job->target->id);
				h_ok[nh] = BoolGetDatum(false);
				h_gone[nh] = BoolGetDatum(false);
				nh++;
			}
			if (outcome == RE_OUTCOME_SENT)
				h_ok[j] = BoolGetDatum(true);
			if (disable)
				h_gone[j] = BoolGetDatum(true);
		}
		else
		{
			status = outcome == RE_OUTCOME_SENT ? "sent" :
				outcome == RE_OUTCOME_RETRY ? "queued" :
				outcome == RE_OUTCOME_UNKNOWN ? "unknown" : "failed";
			s_tenant[ns] = CStringGetTextDatum(job->tenant);
			s_id[ns] = Int64GetDatum(job->send_id);
			s_status[ns] = CStringGetTextDatum(status);
			s_next[ns] = TimestampTzGetDatum(next_at);
			sn_next[ns] = (next_at == 0);
			s_code[ns] = Int32GetDatum((int32) req->status);
			sn_code[ns] = (req->status == 0);
			s_err[ns] = (err && outcome != RE_OUTCOME_SENT) ? CStringGetTextDatum(err) : (Datum) 0;
			sn_err[ns] = (err == NULL || outcome == RE_OUTCOME_SENT);
			s_body[ns] = body ? CStringGetTextDatum(body) : (Datum) 0;
			sn_body[ns] = (body == NULL);
			s_path[ns] = job->target->message_id_path ?
				CStringGetTextDatum(job->target->message_id_path) : (Datum) 0;
			sn_path[ns] = (job->target->message_id_path == NULL);
			s_json[ns] = BoolGetDatum(body != NULL && !req->response_truncated &&
									  re_is_json(body, strlen(body)));
			ns++;
		}

		a[0][i] = CStringGetTextDatum(job->tenant);
		a[1][i] = CStringGetTextDatum(job->kind == RE_JOB_EVENT ? "event" : "send");
		a[2][i] = job->kind == RE_JOB_EVENT ? CStringGetTextDatum(job->event_id) : (Datum) 0;
		an[2][i] = (job->kind != RE_JOB_EVENT);
		a[3][i] = Int64GetDatum(job->target->id);
		a[4][i] = Int64GetDatum(job->send_id);
		an[4][i] = (job->kind != RE_JOB_SEND);
		a[5][i] = Int64GetDatum(0);
		an[5][i] = true;
		a[6][i] = Int32GetDatum(job->attempt);
		a[7][i] = TimestampTzGetDatum(job->started_at);
		a[8][i] = Float4GetDatum((float4) req->latency_ms);
		a[9][i] = Int32GetDatum((int32) req->status);
		an[9][i] = (req->status == 0);
		a[10][i] = CStringGetTextDatum(outcome == RE_OUTCOME_SENT ? "sent" :
									   outcome == RE_OUTCOME_RETRY ? "retry" : "dead");
		a[11][i] = err ? CStringGetTextDatum(err) : (Datum) 0;
		an[11][i] = (err == NULL);
		a[12][i] = body ? CStringGetTextDatum(body) : (Datum) 0;
		an[12][i] = (body == NULL);
	}

	if (!begin_tx("revenue_engine: recording outcomes"))
		return;
	prepare_record_plans();
	if (nd > 0)
	{
		Datum		v[7];
		char		nl[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

		v[0] = make_array(d_tenant, NULL, nd, TEXTOID);
		v[1] = make_array(d_event, NULL, nd, TEXTOID);
		v[2] = make_array(d_target, NULL, nd, INT8OID);
		v[3] = make_array(d_status, NULL, nd, TEXTOID);
		v[4] = make_array(d_next, n_next, nd, TIMESTAMPTZOID);
		v[5] = make_array(d_code, n_code, nd, INT4OID);
		v[6] = make_array(d_err, n_err, nd, TEXTOID);
		if (SPI_execute_plan(record_delivery_plan, v, nl, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "recording deliveries failed");
		if (SPI_execute_plan(record_event_status_plan, v, nl, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating event status failed");
	}
	if (nh > 0)
	{
		Datum		v[4];
		char		nl[4] = {' ', ' ', ' ', ' '};

		v[0] = make_array(h_tenant, NULL, nh, TEXTOID);
		v[1] = make_array(h_id, NULL, nh, INT8OID);
		v[2] = make_array(h_ok, NULL, nh, BOOLOID);
		v[3] = make_array(h_gone, NULL, nh, BOOLOID);
		if (SPI_execute_plan(record_health_plan, v, nl, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating endpoint health failed");
	}
	if (ns > 0)
	{
		Datum		v[9];
		char		nl[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		v[0] = make_array(s_tenant, NULL, ns, TEXTOID);
		v[1] = make_array(s_id, NULL, ns, INT8OID);
		v[2] = make_array(s_status, NULL, ns, TEXTOID);
		v[3] = make_array(s_next, sn_next, ns, TIMESTAMPTZOID);
		v[4] = make_array(s_code, sn_code, ns, INT4OID);
		v[5] = make_array(s_err, sn_err, ns, TEXTOID);
		v[6] = make_array(s_body, sn_body, ns, TEXTOID);
		v[7] = make_array(s_path, sn_path, ns, TEXTOID);
		v[8] = make_array(s_json, NULL, ns, BOOLOID);
		if (SPI_execute_plan(record_send_plan, v, nl, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "recording sends failed");
	}
	{
		Datum		v[13];
		char		nl[13];
		static const Oid types[13] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID,
		INT4OID, TIMESTAMPTZOID, FLOAT4OID, INT4OID, TEXTOID, TEXTOID, TEXTOID};

		for (k = 0; k < 13; k++)
		{
			v[k] = make_array(a[k], an[k], njobs, types[k]);
			nl[k] = ' ';
		}
		if (SPI_execute_plan(record_attempt_plan, v, nl, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "logging attempts failed");
	}
	end_tx();
	/* counted once committed: a batch that failed is recorded again */
	*nsent += sent;
	*nretry += retried;
	*ndead += dead;
}

/*
 * Polls' answers: a 2xx JSON response's status (at the channel's
 * status_path, mapped by its status_map) is applied to the recipient with
 * source polling; a recipient that reached a final status is polled no more.
 * Failed polls change nothing: the next poll was set at claim.
 */
static void
record_polls_group(ReJob **jobs, int njobs)
{
	Datum	   *p_tenant = palloc(sizeof(Datum) * njobs);
	Datum	   *p_channel = palloc(sizeof(Datum) * njobs);
	Datum	   *p_message = palloc(sizeof(Datum) * njobs);
	Datum	   *p_body = palloc(sizeof(Datum) * njobs);
	Datum	   *p_recipient = palloc(sizeof(Datum) * njobs);
	int			np = 0;
	int			i;
	uint64		k;
	Oid			stypes[4] = {TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Oid			dtypes[2] = {TEXTARRAYOID, INT8ARRAYOID};

	for (i = 0; i < njobs; i++)
	{
		ReHttpRequest *req = &jobs[i]->req;

		if (req->status < 200 || req->status > 299 || req->response_truncated ||
			!re_is_json(req->response, req->response_len))
			continue;
		p_tenant[np] = CStringGetTextDatum(jobs[i]->tenant);
		p_channel[np] = Int64GetDatum(jobs[i]->target->id);
		p_message[np] = CStringGetTextDatum(jobs[i]->message_id);
		p_body[np] = CStringGetTextDatum(req->response);
		p_recipient[np] = Int64GetDatum(jobs[i]->send_id);
		np++;
	}
	if (np == 0)
		return;
	if (!begin_tx("revenue_engine: recording status polls"))
		return;
	if (poll_done_plan == NULL)
	{
		/* OFFSET 0 keeps the subquery: each body is parsed once, not at each use */
		poll_status_plan = re_prepare_saved_custom(gsql(
								  "SELECT o.tenant_id, o.message_id,"
								  "       coalesce(c.status_map ->> (j.body #>> c.status_path),"
								  "                j.body #>> c.status_path), j.body"
								  "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
								  "       pg_catalog.unnest($3),"
								  "       pg_catalog.unnest($4)) AS o(tenant_id, channel_id, message_id, body)"
								  "  JOIN revenue_engine.channels c ON c.tenant_id = o.tenant_id AND c.id = o.channel_id"
								  " CROSS JOIN LATERAL (SELECT o.body::jsonb AS body OFFSET 0) j"),
								  4, stypes);
		poll_done_plan = re_prepare_saved_custom(gsql(
								"DELETE FROM revenue_engine.poll_queue q"
								" USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS o(tenant_id, recipient_id)"
								" WHERE q.tenant_id = o.tenant_id AND q.recipient_id = o.recipient_id"
								"   AND NOT EXISTS (SELECT 1 FROM revenue_engine.blast_recipients r"
								"                    WHERE r.tenant_id = q.tenant_id AND r.id = q.recipient_id"
								"                      AND r.status IN ('pending', 'sent', 'delivered'))"
								/* a campaign message is polled as recipient -send_id (outcomes.sql) */
								"   AND NOT EXISTS (SELECT 1 FROM revenue_engine.campaign_messages m"
								"                    WHERE m.tenant_id = q.tenant_id AND m.send_id = - q.recipient_id"
								"                      AND m.status IN ('queued', 'sent', 'delivered', 'unknown'))"),
								2, dtypes);
	}
	{
		Datum		v[4];
		SPITupleTable *tt;
		uint64		n;

		v[0] = make_array(p_tenant, NULL, np, TEXTOID);
		v[1] = make_array(p_channel, NULL, np, INT8OID);
		v[2] = make_array(p_message, NULL, np, TEXTOID);
		v[3] = make_array(p_body, NULL, np, TEXTOID);
		if (SPI_execute_plan(poll_status_plan, v, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading polled statuses failed");
		tt = SPI_tuptable;
		n = SPI_processed;
		for (k = 0; k < n; k++)
		{
			bool		isnull;
			char	   *tenant = TextDatumGetCString(SPI_getbinval(tt->vals[k], tt->tupdesc, 1, &isnull));
			char	   *message = TextDatumGetCString(SPI_getbinval(tt->vals[k], tt->tupdesc, 2, &isnull));
			Datum		st = SPI_getbinval(tt->vals[k], tt->tupdesc, 3, &isnull);
			Datum		body;
			bool		bnull;

			if (isnull)
				continue;
			body = SPI_getbinval(tt->vals[k], tt->tupdesc, 4, &bnull);
			re_status_polled(tenant, message, TextDatumGetCString(st), DatumGetJsonbP(body));
		}
		v[0] = make_array(p_tenant, NULL, np, TEXTOID);
		v[1] = make_array(p_recipient, NULL, np, INT8OID);
		if (SPI_execute_plan(poll_done_plan, v, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "updating the poll queue failed");
	}
	end_tx();
}

/*
 * The jobs of many targets, per shard group of their targets (one group,
 * the common case, is the call itself): each group's statements name its
 * own shards, in a transaction of its own.
 */
int
re_delivery_claim(ReJobKind kind, ReTarget **targets, const int *limits, int ntargets,
				  int max, ReJob **jobs, ReBatch *batch)
{
	ReTarget  **sub;
	int		   *sublim;
	int			n = 0;
	int			g;

	if (ngroups <= 1)
	{
		want_group = 0;
		return ngroups == 0 ? 0 : claim_group(kind, targets, limits, ntargets, max, jobs, batch);
	}
	sub = palloc(sizeof(ReTarget *) * ntargets);
	sublim = palloc(sizeof(int) * ntargets);
	for (g = 0; g < ngroups && n < max; g++)
	{
		int			k,
					m = 0;

		for (k = 0; k < ntargets; k++)
			if (targets[k]->group == g)
			{
				sub[m] = targets[k];
				sublim[m++] = limits[k];
			}
		if (m == 0)
			continue;
		want_group = g;
		n += claim_group(kind, sub, sublim, m, max - n, jobs + n, batch);
	}
	want_group = 0;
	pfree(sub);
	pfree(sublim);
	return n;
}

/* Split jobs by their targets' shard group; calls fn once per group. */
static void
per_group(ReJob **jobs, int njobs, void (*fn) (ReJob **, int, void *), void *arg)
{
	ReJob	  **sub;
	int			g;

	if (ngroups <= 1)
	{
		want_group = 0;
		fn(jobs, njobs, arg);
		return;
	}
	sub = palloc(sizeof(ReJob *) * njobs);
	for (g = 0; g < ngroups; g++)
	{
		int			k,
					m = 0;

		for (k = 0; k < njobs; k++)
			if (jobs[k]->target->group == g)
				sub[m++] = jobs[k];
		if (m == 0)
			continue;
		want_group = g;
		fn(sub, m, arg);
	}
	want_group = 0;
	pfree(sub);
}

typedef struct RecordCounts
{
	int		   *nsent,
			   *nretry,
			   *ndead;
} RecordCounts;

static void
record_fn(ReJob **jobs, int njobs, void *arg)
{
	RecordCounts *c = arg;

	record_group(jobs, njobs, c->nsent, c->nretry, c->ndead);
}

void
re_delivery_record(ReJob **jobs, int njobs, int *nsent, int *nretry, int *ndead)
{
	RecordCounts c = {nsent, nretry, ndead};

	per_group(jobs, njobs, record_fn, &c);
}

static void
record_polls_fn(ReJob **jobs, int njobs, void *arg)
{
	record_polls_group(jobs, njobs);
}

void
re_delivery_record_polls(ReJob **jobs, int njobs)
{
	per_group(jobs, njobs, record_polls_fn, NULL);
}

/* Parked statuses whose id has landed while a callback was parking them. */
void
re_delivery_sweep_parked(void)
{
	static bool told = false;

	if (!begin_tx("revenue_engine: applying parked statuses"))
		return;

	/*
	 * Its statements read every tenant's parked statuses at once, which a
	 * Citus node cannot plan: on Citus a status parked for a message id is
	 * applied when the id lands (the send's outcome), not by the sweep.
	 */
	if (ngroups != 1 || groups[0].nmap > 0)
	{
		if (!told)
			elog(LOG, "revenue_engine: the sweep of parked statuses does not run on a Citus node");
		told = true;
		re_status_sweep_wanted = false;
		end_tx();
		return;
	}
	re_status_sweep();
	end_tx();
}

