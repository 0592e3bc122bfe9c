/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  The queue side of the delivery worker.  Each function runs one short
 *	  transaction of its own: claim due rows (FOR UPDATE SKIP LOCKED, with a
 *	  lease, the attempt counted at claim), or record a batch of outcomes.
 *	  No transaction is open while requests are on the network.
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
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "outbox/delivery.h"
#include "blasts/blasts.h"

/* Leases outlive any request's timeout; a restarted worker reclaims at once. */
#define RE_LEASE "10 minutes"

static SPIPlanPtr claim_event_plan = NULL;
static SPIPlanPtr claim_send_plan = NULL;
static SPIPlanPtr claim_poll_plan = NULL;
static SPIPlanPtr poll_status_plan = NULL;
static SPIPlanPtr poll_done_plan = NULL;
static SPIPlanPtr record_delivery_plan = NULL;
static SPIPlanPtr record_event_status_plan = NULL;
static SPIPlanPtr record_send_plan = NULL;
static SPIPlanPtr record_attempt_plan = NULL;
static SPIPlanPtr record_health_plan = NULL;

static MemoryContext caller_cxt = NULL;

/* The extension this worker serves; a DROP (and CREATE) EXTENSION ends it. */
static Oid	extension_oid = InvalidOid;
bool		re_delivery_extension_gone = false;

static void end_tx(void);

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
	"    SET status = CASE WHEN d.attempts > cardinality(e.retry_schedule) THEN 'dead'" \
	"                      ELSE 'pending' END," \
	"        last_error = coalesce(d.last_error, 'the worker stopped during the attempt')," \
	"        lease_until = NULL, next_attempt_at = now()" \
	"   FROM revenue_engine.endpoints e" \
	"  WHERE d.status = 'sending' AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id" \
	"    AND " cond \
	" RETURNING d.tenant_id, d.event_id, d.status, d.last_error)" \
	"UPDATE revenue_engine.webhook_events w SET status = 'failed', error_message = r.last_error" \
	"  FROM r WHERE r.status = 'dead' AND w.tenant_id = r.tenant_id AND w.id = r.event_id"
#define RECLAIM_SENDS(cond) \
	"UPDATE revenue_engine.sends s" \
	"   SET status = CASE WHEN s.attempts > cardinality(c.retry_schedule) THEN 'failed'" \
	"                     ELSE 'queued' END," \
	"       last_error = coalesce(s.last_error, 'the worker stopped during the attempt')," \
	"       lease_until = NULL, next_attempt_at = now()" \
	"  FROM revenue_engine.channels c" \
	" WHERE s.status = 'sending' AND c.tenant_id = s.tenant_id AND c.id = s.channel_id AND " cond

/* At start: this is the database's only worker, so every lease is stale. */
void
re_delivery_reclaim_all(void)
{
	if (!begin_tx("revenue_engine: reclaiming leases of a previous worker"))
		return;
	SPI_execute(RECLAIM_DELIVERIES("true"), false, 0);
	SPI_execute(RECLAIM_SENDS("true"), false, 0);
	end_tx();
}

/* Expired leases come back (attempts stay counted). */
int
re_delivery_reclaim_expired(void)
{
	int			n;

	if (!begin_tx("revenue_engine: reclaiming expired leases"))
		return 0;
	SPI_execute(RECLAIM_DELIVERIES("d.lease_until < now()"), false, 0);
	n = SPI_processed;
	SPI_execute(RECLAIM_SENDS("s.lease_until < now()"), false, 0);
	n += SPI_processed;
	end_tx();
	return n;
}

/* Retention of the attempt log and the circuit breaker. */
void
re_delivery_maintenance(void)
{
	if (!begin_tx("revenue_engine: maintenance"))
		return;
	SPI_execute("DELETE FROM revenue_engine.delivery_attempts WHERE id IN ("
				" SELECT id FROM revenue_engine.delivery_attempts"
				"  WHERE started_at < now() - current_setting('revenue_engine.attempt_retention')::interval"
				"  LIMIT 10000)", false, 0);
	SPI_execute("UPDATE revenue_engine.endpoints"
				"   SET enabled = false, disabled_at = now(), updated_at = now(),"
				"       disabled_reason = 'circuit breaker: failing since ' || failing_since"
				" WHERE enabled AND failing_since < now() - circuit_break_after", false, 0);
	if (SPI_processed > 0)
		elog(LOG, "revenue_engine: disabled %lu endpoint(s) failing longer than their circuit_break_after",
			 (unsigned long) SPI_processed);
	/* polling stops at the channel's poll_max_age, or when the channel stops polling */
	SPI_execute("DELETE FROM revenue_engine.poll_queue q"
				" WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.channels c"
				"                    WHERE c.tenant_id = q.tenant_id AND c.id = q.channel_id"
				"                      AND c.status_url IS NOT NULL"
				"                      AND q.sent_at >= now() - c.poll_max_age)", false, 0);
	end_tx();
}

/* The earliest next_attempt_at of any due-able row, or 0 when none. */
TimestampTz
re_delivery_next_due(void)
{
	TimestampTz result = 0;
	bool		isnull;
	Datum		d;

	if (!begin_tx("revenue_engine: looking for the next due row"))
		return 0;
	/* one index probe per endpoint and channel */
	SPI_execute("SELECT least("
				" (SELECT min(x.at) FROM revenue_engine.endpoints e,"
				"   LATERAL (SELECT d.next_attempt_at AS at FROM revenue_engine.deliveries d"
				"             WHERE d.endpoint_id = e.id AND d.tenant_id = e.tenant_id"
				"               AND d.status = 'pending' ORDER BY d.next_attempt_at LIMIT 1) x"
				"   WHERE e.enabled),"
				" (SELECT min(x.at) FROM revenue_engine.channels c,"
				"   LATERAL (SELECT s.next_attempt_at AS at FROM revenue_engine.sends s"
				"             WHERE s.channel_id = c.id AND s.tenant_id = c.tenant_id"
				"               AND s.status = 'queued' ORDER BY s.next_attempt_at LIMIT 1) x"
				"   WHERE c.enabled),"
				" (SELECT min(x.at) FROM revenue_engine.channels c,"
				"   LATERAL (SELECT q.next_poll_at AS at FROM revenue_engine.poll_queue q"
				"             WHERE q.channel_id = c.id AND q.tenant_id = c.tenant_id"
				"             ORDER BY q.next_poll_at LIMIT 1) x"
				"   WHERE c.enabled AND c.status_url IS NOT NULL))", true, 1);
	if (SPI_processed == 1)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			result = DatumGetTimestampTz(d);
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

static ReTarget *
find_target(ReTarget **targets, int ntargets, ReJobKind kind, const char *tenant, int64 id)
{
	int			i;

	for (i = 0; i < ntargets; i++)
		if (targets[i]->kind == kind && targets[i]->id == id &&
			strcmp(targets[i]->tenant, tenant) == 0)
			return targets[i];
	return NULL;
}

/*
 * Reload enabled endpoints and channels.  Targets are kept across refreshes
 * (jobs in flight point at them); one that disappeared is marked unseen.
 * Returns false when the extension is no longer installed.
 */
bool
re_delivery_refresh_targets(ReTarget ***targets, int *ntargets, MemoryContext cxt)
{
	uint64		i;
	int			j;

	for (j = 0; j < *ntargets; j++)
		(*targets)[j]->seen = false;

	if (!begin_tx("revenue_engine: loading endpoints and channels"))
		return false;
	SPI_execute("SELECT 0 AS kind, tenant_id, id, url, 'POST' AS method,"
				"       ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM jsonb_each(headers) h),"
				"       signing_secrets, NULL::text, NULL::text, timeout_ms, connect_timeout_ms,"
				"       max_in_flight, rate_limit, rate_period = 'minute',"
				"       ARRAY(SELECT extract(epoch FROM x)::float8 FROM unnest(retry_schedule) x)"
				"  FROM revenue_engine.endpoints WHERE enabled"
				" UNION ALL "
				"SELECT 1, tenant_id, id, url, method,"
				"       ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM jsonb_each(headers) h),"
				"       '{}'::text[], body_template::text, message_id_path::text, timeout_ms,"
				"       connect_timeout_ms, max_in_flight, rate_limit, rate_period = 'minute',"
				"       ARRAY(SELECT extract(epoch FROM x)::float8 FROM unnest(retry_schedule) x)"
				"  FROM revenue_engine.channels WHERE enabled"
				" UNION ALL "
				"SELECT 2, tenant_id, id, status_url, 'GET',"
				"       ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM jsonb_each(headers) h),"
				"       '{}'::text[], NULL::text, NULL::text, timeout_ms,"
				"       connect_timeout_ms, max_in_flight, rate_limit, rate_period = 'minute',"
				"       '{}'::float8[]"
				"  FROM revenue_engine.channels WHERE enabled AND status_url IS NOT NULL",
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
		ReTarget   *t = find_target(*targets, *ntargets, kind, tenant, id);
		Datum		d;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		int			k;

		if (t == NULL)
		{
			t = MemoryContextAllocZero(cxt, sizeof(ReTarget));
			t->kind = kind;
			strlcpy(t->tenant, tenant, sizeof(t->tenant));
			t->id = id;
			t->cxt = AllocSetContextCreate(cxt, "revenue_engine target", ALLOCSET_SMALL_SIZES);
			t->tokens_at = GetCurrentTimestamp();
			*targets = *ntargets == 0 ? MemoryContextAlloc(cxt, sizeof(ReTarget *) * 16) :
				(*ntargets % 16 == 0 ? repalloc(*targets, sizeof(ReTarget *) * (*ntargets + 16)) : *targets);
			(*targets)[(*ntargets)++] = t;
			t->may_have_more = true;
		}
		else
			MemoryContextReset(t->cxt);
		t->seen = true;
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
	}
	/* polls spend their channel's tokens */
	for (j = 0; j < *ntargets; j++)
		if ((*targets)[j]->kind == RE_JOB_POLL)
			(*targets)[j]->bucket = find_target(*targets, *ntargets, RE_JOB_SEND,
												(*targets)[j]->tenant, (*targets)[j]->id);
	end_tx();
	return true;
}

static void
prepare_claim_plans(void)
{
	Oid			types[4] = {TEXTOID, INT8OID, INT4OID, TEXTOID};

	if (claim_event_plan != NULL)
		return;
	/*
	 * Batch statements are planned for each batch: a generic plan knows neither
	 * the LIMIT nor how many rows the arrays hold, and can scan whole indexes.
	 */
	claim_event_plan = re_prepare_saved_custom(
							"WITH c AS ("
							"  SELECT d.tenant_id, d.event_id, d.endpoint_id FROM revenue_engine.deliveries d"
							"   WHERE d.endpoint_id = $2 AND d.tenant_id = $1 AND d.status = 'pending'"
							"     AND d.next_attempt_at <= now()"
							"   ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED"
							"), u AS ("
							"  UPDATE revenue_engine.deliveries d"
							"     SET status = 'sending', attempts = d.attempts + 1,"
							"         lease_until = now() + '" RE_LEASE "'::interval"
							"    FROM c WHERE d.tenant_id = c.tenant_id AND d.event_id = c.event_id"
							"     AND d.endpoint_id = c.endpoint_id"
							"  RETURNING d.tenant_id, d.event_id, d.attempts"
							")"
							"SELECT u.event_id::text, u.attempts,"
							"       jsonb_build_object('id', e.id, 'event', e.event_type,"
							"                          'timestamp', e.created_at, 'user', e.user_data,"
							"                          'metadata', e.event_data)::text"
							"  FROM u JOIN revenue_engine.webhook_events e"
							"    ON e.tenant_id = u.tenant_id AND e.id = u.event_id",
							3, types);
	claim_send_plan = re_prepare_saved_custom(
						   "WITH c AS ("
						   "  SELECT s.tenant_id, s.id FROM revenue_engine.sends s"
						   "   WHERE s.channel_id = $2 AND s.tenant_id = $1 AND s.status = 'queued'"
						   "     AND s.next_attempt_at <= now()"
						   "   ORDER BY s.next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED"
						   "), u AS ("
						   "  UPDATE revenue_engine.sends s"
						   "     SET status = 'sending', attempts = s.attempts + 1,"
						   "         lease_until = now() + '" RE_LEASE "'::interval"
						   "    FROM c WHERE s.tenant_id = c.tenant_id AND s.id = c.id"
						   "  RETURNING s.id, s.attempts, s.payload"
						   ")"
						   "SELECT u.id::text, u.attempts, ($4::jsonb || u.payload)::text FROM u",
						   4, types);
	/* a polled recipient's next poll is set at claim: a failed poll waits its turn */
	claim_poll_plan = re_prepare_saved_custom(
						   "WITH c AS ("
						   "  SELECT q.tenant_id, q.recipient_id FROM revenue_engine.poll_queue q"
						   "   WHERE q.channel_id = $2 AND q.tenant_id = $1 AND q.next_poll_at <= now()"
						   "   ORDER BY q.next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED"
						   "), u AS ("
						   "  UPDATE revenue_engine.poll_queue q"
						   "     SET next_poll_at = now() + ch.poll_interval, polls = q.polls + 1"
						   "    FROM c, revenue_engine.channels ch"
						   "   WHERE q.tenant_id = c.tenant_id AND q.recipient_id = c.recipient_id"
						   "     AND ch.tenant_id = q.tenant_id AND ch.id = q.channel_id"
						   "  RETURNING q.recipient_id, q.polls, q.message_id"
						   ")"
						   "SELECT u.recipient_id::text, u.polls, u.message_id FROM u",
						   3, types);
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

/* Claim up to limit due rows of a target; jobs are allocated in batch->cxt. */
int
re_delivery_claim(ReTarget *target, int limit, ReJob **jobs, ReBatch *batch)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	uint64		i;
	int			ret;
	int			n = 0;

	if (!begin_tx(target->kind == RE_JOB_EVENT ? "revenue_engine: claiming events" :
				  target->kind == RE_JOB_SEND ? "revenue_engine: claiming sends" :
				  "revenue_engine: claiming status polls"))
	{
		target->may_have_more = false;
		return 0;
	}
	prepare_claim_plans();
	values[0] = CStringGetTextDatum(target->tenant);
	values[1] = Int64GetDatum(target->id);
	values[2] = Int32GetDatum(limit);
	values[3] = CStringGetTextDatum(target->body_template ? target->body_template : "{}");
	ret = SPI_execute_plan(target->kind == RE_JOB_EVENT ? claim_event_plan :
						   target->kind == RE_JOB_SEND ? claim_send_plan : claim_poll_plan,
						   values, nulls, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claiming failed: %s", SPI_result_code_string(ret));

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		ReJob	   *job = MemoryContextAllocZero(batch->cxt, sizeof(ReJob));
		char	   *id = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
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
		job->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		if (job->kind == RE_JOB_POLL)
		{
			/* a GET of the status URL, no body */
			job->message_id = MemoryContextStrdup(batch->cxt,
												  TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull)));
			job->req.url = poll_url(target->url, job->message_id, batch->cxt);
			job->req.body = NULL;
			job->req.body_len = 0;
		}
		else
		{
			job->body = MemoryContextStrdup(batch->cxt,
											TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull)));
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
		jobs[n++] = job;
	}
	end_tx();
	batch->remaining += n;
	target->may_have_more = (n == limit);
	return n;
}

/*
 * Decide what an attempt's result means: 2xx sent; 408, 429, 3xx, 5xx and
 * transport errors retried while attempts remain (Retry-After honoured);
 * other 4xx dead; 410 dead and the endpoint disabled; a refused address dead.
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

	if (record_delivery_plan != NULL)
		return;
	record_delivery_plan = re_prepare_saved_custom(
								"UPDATE revenue_engine.deliveries d"
								"   SET status = o.status, lease_until = NULL, last_status = o.code,"
								"       last_error = o.err,"
								"       next_attempt_at = coalesce(o.next_at, d.next_attempt_at),"
								"       sent_at = CASE WHEN o.status = 'sent' THEN now() END"
								"  FROM unnest($1, $2::uuid[], $3, $4, $5, $6, $7)"
								"       AS o(tenant_id, event_id, endpoint_id, status, next_at, code, err)"
								" WHERE d.tenant_id = o.tenant_id AND d.event_id = o.event_id"
								"   AND d.endpoint_id = o.endpoint_id AND d.status = 'sending'",
								7, dtypes);
	record_event_status_plan = re_prepare_saved_custom(
									"UPDATE revenue_engine.webhook_events e"
									"   SET status = x.status, attempts = x.attempts, sent_at = x.sent_at,"
									"       error_message = x.err"
									"  FROM (SELECT d.tenant_id, d.event_id,"
									"               CASE WHEN bool_and(d.status = 'sent') THEN 'sent'"
									"                    WHEN bool_or(d.status = 'dead') THEN 'failed'"
									"                    ELSE 'pending' END AS status,"
									"               max(d.attempts) AS attempts, max(d.sent_at) AS sent_at,"
									"               string_agg(d.last_error, '; ') FILTER (WHERE d.status <> 'sent') AS err"
									"          FROM revenue_engine.deliveries d"
									"          JOIN (SELECT DISTINCT * FROM unnest($1, $2::uuid[]) AS k(tenant_id, event_id)) k"
									"            ON d.tenant_id = k.tenant_id AND d.event_id = k.event_id"
									"         GROUP BY 1, 2) x"
									" WHERE e.tenant_id = x.tenant_id AND e.id = x.event_id",
									2, etypes);
	record_send_plan = re_prepare_saved_custom(
							"UPDATE revenue_engine.sends s"
							"   SET status = o.status, lease_until = NULL, response_status = o.code,"
							"       last_error = o.err, response_body = o.body,"
							"       next_attempt_at = coalesce(o.next_at, s.next_attempt_at),"
							"       sent_at = CASE WHEN o.status = 'sent' THEN now() END,"
							"       provider_message_id = CASE WHEN o.status = 'sent' AND o.is_json"
							"            AND o.path IS NOT NULL THEN o.body::jsonb #>> o.path::text[] END"
							"  FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9)"
							"       AS o(tenant_id, id, status, next_at, code, err, body, path, is_json)"
							" WHERE s.tenant_id = o.tenant_id AND s.id = o.id AND s.status = 'sending'",
							9, stypes);
	record_attempt_plan = re_prepare_saved_custom(
							   "INSERT INTO revenue_engine.delivery_attempts"
							   " (tenant_id, kind, event_id, endpoint_id, send_id, channel_id, attempt,"
							   "  started_at, latency_ms, status_code, outcome, error, response_body)"
							   "SELECT o.tenant_id, o.kind, o.event_id::uuid,"
							   "       CASE WHEN o.kind = 'event' THEN o.target END, o.send_id,"
							   "       CASE WHEN o.kind = 'send' THEN o.target END,"
							   "       o.attempt, o.started_at, o.latency, o.code, o.outcome, o.err, o.body"
							   "  FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
							   "       AS o(tenant_id, kind, event_id, target, send_id, unused, attempt,"
							   "            started_at, latency, code, outcome, err, body)",
							   13, atypes);
	record_health_plan = re_prepare_saved_custom(
							  "UPDATE revenue_engine.endpoints e"
							  "   SET failing_since = CASE WHEN o.any_ok THEN NULL"
							  "                            ELSE coalesce(e.failing_since, now()) END,"
							  "       enabled = e.enabled AND NOT o.gone,"
							  "       disabled_at = CASE WHEN o.gone THEN now() ELSE e.disabled_at END,"
							  "       disabled_reason = CASE WHEN o.gone THEN"
							  "            'the endpoint answered 410 Gone' ELSE e.disabled_reason END"
							  "  FROM unnest($1, $2, $3, $4) AS o(tenant_id, id, any_ok, gone)"
							  " WHERE e.tenant_id = o.tenant_id AND e.id = o.id"
							  "   AND (e.failing_since IS DISTINCT FROM"
							  "        CASE WHEN o.any_ok THEN NULL ELSE coalesce(e.failing_since, now()) END"
							  "        OR o.gone)",
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

/* Record the outcomes of completed jobs in one transaction. */
void
re_delivery_record(ReJob **jobs, int njobs, int *nsent, int *nretry, int *ndead)
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
		if (outcome == RE_OUTCOME_SENT)
			(*nsent)++;
		else if (outcome == RE_OUTCOME_RETRY)
			(*nretry)++;
		else
			(*ndead)++;

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
				outcome == RE_OUTCOME_RETRY ? "queued" : "failed";
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
}

/*
 * Polls' answers: a 2xx JSON response's status (at the channel's
 * status_path, mapped by its status_map) is applied to the recipient with
 * source polling; a recipient that reached a final status is polled no more.
 * Failed polls change nothing: the next poll was set at claim.
 */
void
re_delivery_record_polls(ReJob **jobs, int njobs)
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
	if (poll_status_plan == NULL)
	{
		/* OFFSET 0 keeps the subquery: each body is parsed once, not at each use */
		poll_status_plan = re_prepare_saved_custom(
								  "SELECT o.tenant_id, o.message_id,"
								  "       coalesce(c.status_map ->> (j.body #>> c.status_path),"
								  "                j.body #>> c.status_path), j.body"
								  "  FROM unnest($1, $2, $3, $4) AS o(tenant_id, channel_id, message_id, body)"
								  "  JOIN revenue_engine.channels c ON c.tenant_id = o.tenant_id AND c.id = o.channel_id"
								  " CROSS JOIN LATERAL (SELECT o.body::jsonb AS body OFFSET 0) j",
								  4, stypes);
		poll_done_plan = re_prepare_saved_custom(
								"DELETE FROM revenue_engine.poll_queue q"
								" USING unnest($1, $2) AS o(tenant_id, recipient_id)"
								" WHERE q.tenant_id = o.tenant_id AND q.recipient_id = o.recipient_id"
								"   AND NOT EXISTS (SELECT 1 FROM revenue_engine.blast_recipients r"
								"                    WHERE r.tenant_id = q.tenant_id AND r.id = q.recipient_id"
								"                      AND r.status IN ('pending', 'sent', 'delivered'))",
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

/* Parked statuses whose id has landed while a callback was parking them. */
void
re_delivery_sweep_parked(void)
{
	if (!begin_tx("revenue_engine: applying parked statuses"))
		return;
	re_status_sweep();
	end_tx();
}

