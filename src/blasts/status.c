/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Blast recipients' statuses: one update (record_message_status), a
 *	  provider's signed callback batch (ingest_status_webhook), inbound
 *	  messages as replies, closed sales, and the send's own outcome (a
 *	  trigger on sends).
 *
 * The rules, in one place (next_state):
 *	- pending < sent < delivered < read < replied < closed; a status fills
 *	  the timestamp of its stage and of every lower stage not reached yet
 *	  (a read before its delivered also marks delivered), and the status
 *	  never moves backwards;
 *	- a late lower status only moves its own stage's timestamp earlier, and
 *	  no stage's timestamp is later than the next stage's;
 *	- failed is taken only before delivered; a later higher status (the
 *	  provider delivered after all) moves a failed recipient on;
 *	- no stage's timestamp is earlier than the send (a provider's clock or a
 *	  replayed callback cannot move sent_at back);
 *	- a change of status writes one status_history row; a callback's status
 *	  or message that changes nothing writes one too (result duplicate or
 *	  stale; once, not again for the provider's retry), so the provider's
 *	  data of every item (conversation, pricing, biz_opaque_callback_data)
 *	  is kept; other updates that change nothing write nothing.
 *
 * Inbound messages are replies only when a person wrote something: a
 * reaction (on the message it names) and a system message (a number or
 * identity change) are recorded in channel_events, as are errors a callback
 * reports for the channel itself; a number change is also an outbox event.
 * A reply goes to the recipient of the message its context names, and only
 * without a context to the latest recipient of the sender's phone.
 *
 * Campaign messages (src/campaigns/outcomes.sql) are found by message id
 * after blast recipients, before a status is parked, and a campaign
 * message's id landing applies its parked statuses as a recipient's does;
 * every inbound message (never an outbound copy) is also handed to the
 * campaigns (campaign_inbound: the sender's contacts, stop on reply).
 *
 * A status for a message id no recipient carries yet is parked and applied
 * when the id lands.  When a callback and the send's response race (neither
 * sees the other's uncommitted work), the one that comes second finds the
 * id's lock taken, and the sweep, which the worker runs every few seconds,
 * applies the parked status once both committed: nothing is lost.  Parked
 * statuses are capped per callback and per tenant (the excess is rejected on
 * its row) and expire after revenue_engine.parked_retention.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/hmac.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "blasts/blasts.h"
#include "http/http.h"
#include "outbox/outbox.h"
#include "worker/worker.h"

PG_FUNCTION_INFO_V1(re_phone_problem);
PG_FUNCTION_INFO_V1(re_normalize_phone);
PG_FUNCTION_INFO_V1(re_record_message_status);
PG_FUNCTION_INFO_V1(re_record_inbound_message);
PG_FUNCTION_INFO_V1(re_mark_closed);
PG_FUNCTION_INFO_V1(re_ingest_status_webhook);
PG_FUNCTION_INFO_V1(re_send_outcome_trigger);
PG_FUNCTION_INFO_V1(re_apply_parked_statuses);
PG_FUNCTION_INFO_V1(re_campaign_message_landed);

/* A landing left parked statuses to the sweep (read by the worker) */
bool		re_status_sweep_wanted = false;

/* revenue_engine.reply_window, in minutes */
int			re_reply_window_min = 7 * 24 * 60;

/* revenue_engine.parked_retention (minutes) and the caps on parking */
static int	re_parked_retention_min = 24 * 60;
static int	re_parked_max_per_tenant = 100000;
static int	re_parked_max_per_callback = 1000;

/* Statuses may be stamped this far ahead of the database's clock. */
#define RE_MAX_CLOCK_SKEW_S 300
/* Longest provider message id */
#define RE_MAX_MESSAGE_ID 200
/* Advisory lock class of message ids (the first key of the two-key form) */
#define RE_MESSAGE_LOCK_CLASS 0x52454d53
#define RE_MESSAGE_LOCKS 1024

/* At most 64 bytes of s, whole characters, for a reason */
static char *
clipped(const char *s)
{
	int			len = strlen(s);

	if (len <= 64)
		return pstrdup(s);
	return psprintf("%s...", pnstrdup(s, pg_mbcliplen(s, len, 64)));
}

/* ---------------------------------------------------------------------------
 * Phone numbers
 * ---------------------------------------------------------------------------
 */

/*
 * Check in as E.164, ignoring spaces, dots, dashes and parentheses; on
 * success write "+<digits>" to out (at least 17 bytes) and return NULL, else
 * return why not.
 */
static const char *
phone_check(const char *in, char *out)
{
	const char *p = in;
	int			ndigits = 0;
	bool		plus = false;

	if (in == NULL)
		return "is empty";
	for (; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == ' ' || c == '\t' || c == '.' || c == '-' || c == '(' || c == ')')
			continue;
		if (c == '+' && !plus && ndigits == 0)
		{
			plus = true;
			continue;
		}
		if (!isdigit(c))
			return "has a character other than digits, spaces, dots, dashes and parentheses";
		if (!plus)
			return "does not start with + and a country code";
		if (ndigits == 0 && c == '0')
			return "has a country code starting with 0";
		if (ndigits < 15)
			out[1 + ndigits] = (char) c;
		ndigits++;
	}
	if (!plus && ndigits == 0)
		return "is empty";
	if (ndigits < 7 || ndigits > 15)
		return "does not have 7 to 15 digits";
	out[0] = '+';
	out[1 + ndigits] = '\0';
	return NULL;
}

Datum
re_phone_problem(PG_FUNCTION_ARGS)
{
	char		buf[17];
	const char *problem;

	problem = phone_check(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)), buf);
	if (problem == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(problem));
}

static void
normalize_or_error(const char *in, char *out)
{
	const char *problem = phone_check(in, out);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("phone number \"%s\" is not E.164: it %s", in ? in : "", problem),
				 errhint("Write numbers as +<country code><number>, such as +14155552671.")));
}

Datum
re_normalize_phone(PG_FUNCTION_ARGS)
{
	char		buf[17];

	re_require_arg(fcinfo, 0, "phone number");
	normalize_or_error(text_to_cstring(PG_GETARG_TEXT_PP(0)), buf);
	PG_RETURN_TEXT_P(cstring_to_text(buf));
}

/* ---------------------------------------------------------------------------
 * Recipients and the rules
 * ---------------------------------------------------------------------------
 */

typedef struct Recipient
{
	int64		id;
	int64		blast_id;
	ReStatus	status;
	bool		has[RE_NSTAGES];
	TimestampTz at[RE_NSTAGES];
	bool		has_failed;
	TimestampTz failed_at;
} Recipient;

typedef struct StatusUpdate
{
	ReStatus	status;
	TimestampTz at;
	const char *source;
	Jsonb	   *metadata;		/* history metadata, NULL: {} */
	Jsonb	   *error;			/* failed: the provider's error */
	Datum		amount;			/* closed: numeric, or 0 */
	bool		has_amount;
	const char *message_id;		/* the send's outcome: the id that lands */
	Jsonb	   *send_response;
} StatusUpdate;

typedef enum ReResult
{
	RE_RES_APPLIED,
	RE_RES_DUPLICATE,
	RE_RES_STALE,
	RE_RES_PARKED,
	RE_RES_UNMATCHED,
	RE_RES_REJECTED,
	RE_RES_RECORDED				/* a channel event */
} ReResult;

static const char *const result_names[] = {
	"applied", "duplicate", "stale", "parked", "unmatched", "rejected", "recorded"
};

#define RECIPIENT_COLS \
	"SELECT r.id, r.blast_id, r.status, r.sent_at, r.delivered_at, r.read_at," \
	" r.replied_at, r.closed_at, r.failed_at FROM revenue_engine.blast_recipients r "

static SPIPlanPtr find_by_message_plan;
static SPIPlanPtr find_by_id_plan;
static SPIPlanPtr find_reply_plan;
static SPIPlanPtr reply_message_id_plan;
static SPIPlanPtr find_close_plan;
static SPIPlanPtr write_plan;
static SPIPlanPtr park_plan;
static SPIPlanPtr unpark_plan;
static SPIPlanPtr progress_plan;
static SPIPlanPtr channel_plan;
static SPIPlanPtr poll_queue_plan;
static SPIPlanPtr count_parked_plan;
static SPIPlanPtr expire_parked_plan;
static SPIPlanPtr landed_parked_plan;
static SPIPlanPtr report_plan;
static SPIPlanPtr channel_event_plan;
static SPIPlanPtr campaign_status_plan;
static SPIPlanPtr campaign_inbound_plan;

static void
prepare_plans(void)
{
	Oid			t2[2] = {TEXTOID, TEXTOID};
	Oid			tid[2] = {TEXTOID, INT8OID};
	Oid			treply[4] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Oid			tclose[3] = {TEXTOID, TEXTOID, INT8OID};
	Oid			twrite[20] = {TEXTOID, INT8OID, TEXTOID,
		TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, JSONBOID, NUMERICOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONBOID,
	TEXTOID, JSONBOID, BOOLOID, TEXTOID, TIMESTAMPTZOID};
	Oid			tprogress[3] = {TEXTOID, INT8OID, TIMESTAMPTZOID};
	Oid			treport[6] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, JSONBOID, TEXTOID};
	Oid			tevent[9] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TIMESTAMPTZOID, JSONBOID};
	Oid			tcount[2] = {TEXTOID, INT8OID};
	Oid			tcut[1] = {TIMESTAMPTZOID};
	Oid			tpark[7] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONBOID, JSONBOID};

	if (find_by_message_plan != NULL)
		return;
	/* 0.2.0's status_history and channel_events, not an older version's */
	re_require_installed_version();
	find_by_message_plan = re_prepare_saved(
											RECIPIENT_COLS
											"WHERE r.tenant_id = $1 AND r.provider_message_id = $2"
											" ORDER BY r.id DESC LIMIT 1 FOR UPDATE", 2, t2);
	find_by_id_plan = re_prepare_saved(
									   RECIPIENT_COLS
									   "WHERE r.tenant_id = $1 AND r.id = $2 FOR UPDATE", 2, tid);
	/* the latest recipient of the phone sent within the window, not failed */
	find_reply_plan = re_prepare_saved(
									   RECIPIENT_COLS
									   "WHERE r.tenant_id = $1 AND r.phone = $2 AND r.sent_at IS NOT NULL"
									   "  AND r.sent_at > $3 AND r.sent_at <= $4 AND r.status <> 'failed'"
									   " ORDER BY r.sent_at DESC, r.id DESC LIMIT 1 FOR UPDATE", 4, treply);
	/* the same recipient's message id, without locking it */
	reply_message_id_plan = re_prepare_saved(
											 "SELECT r.provider_message_id FROM revenue_engine.blast_recipients r"
											 " WHERE r.tenant_id = $1 AND r.phone = $2 AND r.sent_at IS NOT NULL"
											 "   AND r.sent_at > $3 AND r.sent_at <= $4 AND r.status <> 'failed'"
											 " ORDER BY r.sent_at DESC, r.id DESC LIMIT 1", 4, treply);
	find_close_plan = re_prepare_saved(
									   RECIPIENT_COLS
									   "WHERE r.tenant_id = $1 AND r.phone = $2 AND r.sent_at IS NOT NULL"
									   "  AND ($3::bigint IS NULL OR r.blast_id = $3)"
									   " ORDER BY r.sent_at DESC, r.id DESC LIMIT 1 FOR UPDATE", 3, tclose);
	write_plan = re_prepare_saved(
								  "WITH u AS ("
								  " UPDATE revenue_engine.blast_recipients r"
								  "    SET status = $3, sent_at = $4, delivered_at = $5, read_at = $6,"
								  "        replied_at = $7, closed_at = $8, failed_at = $9,"
								  "        error = coalesce($10, r.error), amount = coalesce($11, r.amount),"
								  "        provider_message_id = coalesce($16, r.provider_message_id),"
								  "        send_response = coalesce($17, r.send_response),"
								  "        updated_at = $20"
								  "  WHERE r.tenant_id = $1 AND r.id = $2"
								  "  RETURNING r.blast_id, r.provider_message_id)"
								  "INSERT INTO revenue_engine.status_history"
								  " (tenant_id, recipient_id, blast_id, message_id, old_status, new_status,"
								  "  occurred_at, source, metadata, result)"
								  "SELECT $1, $2, u.blast_id, u.provider_message_id, $12, $3, $13, $14,"
								  "       coalesce($15, '{}'), $19 FROM u WHERE $3 <> $12 OR $18",
								  20, twrite);
	/* a callback's item that changes nothing: its history row alone, once (retries) */
	report_plan = re_prepare_saved(
								   "INSERT INTO revenue_engine.status_history"
								   " (tenant_id, recipient_id, blast_id, message_id, old_status, new_status,"
								   "  occurred_at, source, metadata, result)"
								   "SELECT r.tenant_id, r.id, r.blast_id, r.provider_message_id, r.status, r.status,"
								   "       $3, $4, coalesce($5, '{}'), $6"
								   "  FROM revenue_engine.blast_recipients r WHERE r.tenant_id = $1 AND r.id = $2"
								   "   AND NOT EXISTS (SELECT 1 FROM revenue_engine.status_history h"
								   "                    WHERE h.tenant_id = $1 AND h.recipient_id = $2"
								   "                      AND h.metadata OPERATOR(pg_catalog.=) $5)",
								   6, treport);
	count_parked_plan = re_prepare_saved(
										 "SELECT pg_catalog.count(*) FROM (SELECT 1 FROM revenue_engine.status_parked p"
										 "  WHERE p.tenant_id = $1 LIMIT $2) x", 2, tcount);
	expire_parked_plan = re_prepare_saved(
										  "DELETE FROM revenue_engine.status_parked p"
										  " WHERE (p.tenant_id, p.id) IN (SELECT q.tenant_id, q.id"
										  "   FROM revenue_engine.status_parked q WHERE q.received_at < $1 LIMIT 10000)",
										  1, tcut);
	/* landed on a blast recipient (its id), or on a campaign message (0) */
	landed_parked_plan = re_prepare_saved(
										  "SELECT DISTINCT p.tenant_id, p.message_id, coalesce(r.id, 0)"
										  "  FROM revenue_engine.status_parked p"
										  "  LEFT JOIN LATERAL (SELECT r.id FROM revenue_engine.blast_recipients r"
										  "                 WHERE r.tenant_id = p.tenant_id"
										  "                   AND r.provider_message_id = p.message_id"
										  "                 ORDER BY r.id DESC LIMIT 1) r ON true"
										  " WHERE p.received_at >= $1"
										  "   AND (r.id IS NOT NULL OR EXISTS (SELECT 1 FROM revenue_engine.campaign_messages m"
										  "         WHERE m.tenant_id = p.tenant_id AND m.message_id = p.message_id))"
										  " LIMIT 10000", 1, tcut);
	{
		Oid			tcs[6] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONBOID};
		Oid			tci[7] = {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, INTERVALOID, JSONBOID};

		/* campaigns (src/campaigns/outcomes.sql): a message id no blast recipient carries */
		campaign_status_plan = re_prepare_saved(
												"SELECT revenue_engine.campaign_message_status($1, $2, $3, $4, $5, $6)",
												6, tcs);
		/* an inbound message: the sender's contacts, stop on reply */
		campaign_inbound_plan = re_prepare_saved(
												 "SELECT revenue_engine.campaign_inbound($1, $2, $3, $4, $5, $6, $7)",
												 7, tci);
	}
	/*
	 * A reaction, system message or channel error; a repeated callback's item
	 * (same provider id and kind) is recorded once.  The recipient is the
	 * one whose message it names, if any.
	 */
	channel_event_plan = re_prepare_saved(
										  "INSERT INTO revenue_engine.channel_events"
										  " (tenant_id, channel_id, kind, item_id, message_id, recipient_id, blast_id,"
										  "  sender, detail, occurred_at, data)"
										  "SELECT $1, $2, $3, $4, $5, r.id, r.blast_id, $6, $7, $8, $9"
										  "  FROM (SELECT 1) one LEFT JOIN LATERAL"
										  "       (SELECT r.id, r.blast_id FROM revenue_engine.blast_recipients r"
										  "         WHERE r.tenant_id = $1 AND r.provider_message_id = $5"
										  "         ORDER BY r.id DESC LIMIT 1) r ON true"
										  "    ON CONFLICT (tenant_id, channel_id, item_id, kind) WHERE item_id IS NOT NULL"
										  "    DO NOTHING RETURNING recipient_id",
										  9, tevent);
	park_plan = re_prepare_saved(
								 "INSERT INTO revenue_engine.status_parked"
								 " (tenant_id, message_id, status, occurred_at, source, raw, error)"
								 " VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, tpark);
	unpark_plan = re_prepare_saved(
								   "WITH d AS (DELETE FROM revenue_engine.status_parked p"
								   "  WHERE p.tenant_id = $1 AND p.message_id = $2"
								   "  RETURNING p.id, p.status, p.occurred_at, p.source, p.raw, p.error)"
								   "SELECT d.status, d.occurred_at, d.source, d.raw, d.error FROM d ORDER BY d.id",
								   2, t2);
	/*
	 * Sending at the first outcome; completed (or failed: none sent) when no
	 * send is open.  The time is a parameter ($3, now() of the transaction),
	 * as in write_plan ($20): Citus takes no STABLE function in CASE or
	 * COALESCE, nor on columns in an UPDATE.
	 */
	progress_plan = re_prepare_saved(
									 "UPDATE revenue_engine.blasts b"
									 "   SET status = CASE WHEN o.open THEN 'sending'"
									 "                     WHEN EXISTS (SELECT 1 FROM revenue_engine.blast_recipients r"
									 "                                   WHERE r.tenant_id = b.tenant_id AND r.blast_id = b.id"
									 "                                     AND r.sent_at IS NOT NULL) THEN 'completed'"
									 "                     ELSE 'failed' END,"
									 "       started_at = coalesce(b.started_at, $3),"
									 "       completed_at = CASE WHEN o.open THEN NULL ELSE $3 END"
									 "  FROM (SELECT EXISTS (SELECT 1 FROM revenue_engine.sends s"
									 "                        WHERE s.tenant_id = $1 AND s.blast_id = $2"
									 "                          AND s.status IN ('queued', 'sending')) AS open) o"
									 " WHERE b.tenant_id = $1 AND b.id = $2 AND b.status IN ('pending', 'sending')"
									 "   AND (b.status = 'pending' OR NOT o.open)",
									 3, tprogress);
	{
		Oid			tq[5] = {TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID, INT8OID};

		/* a recipient of a polling channel is polled from a poll_interval after sending */
		poll_queue_plan = re_prepare_saved(
										   "INSERT INTO revenue_engine.poll_queue"
										   " (tenant_id, recipient_id, channel_id, message_id, sent_at, next_poll_at)"
										   "SELECT $1, $2, c.id, $3, $4, $4 + c.poll_interval"
										   "  FROM revenue_engine.channels c"
										   " WHERE c.tenant_id = $1 AND c.id = $5 AND c.status_url IS NOT NULL"
										   "   ON CONFLICT (tenant_id, recipient_id) DO UPDATE"
										   "   SET message_id = EXCLUDED.message_id, sent_at = EXCLUDED.sent_at,"
										   "       next_poll_at = EXCLUDED.next_poll_at",
										   5, tq);
	}
	channel_plan = re_prepare_saved(
									"SELECT c.webhook_kind, c.webhook_secret, c.status_map, c.id"
									"  FROM revenue_engine.channels c WHERE c.tenant_id = $1 AND c.name = $2",
									2, t2);
}

/* Run a lookup plan; true and *r filled if a recipient was found (and locked). */
static bool
find_recipient(SPIPlanPtr plan, Datum *values, const char *nulls, Recipient *r)
{
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int			k;
	char	   *s;

	if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up a blast recipient failed");
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return false;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	r->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	r->blast_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	s = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	r->status = re_status_from_name(s);
	if (r->status == RE_ST_UNKNOWN)
		elog(ERROR, "blast recipient " INT64_FORMAT " has status \"%s\"", r->id, s);
	for (k = 0; k < RE_NSTAGES; k++)
	{
		Datum		d = SPI_getbinval(tup, desc, 4 + k, &isnull);

		r->has[k] = !isnull;
		r->at[k] = isnull ? 0 : DatumGetTimestampTz(d);
	}
	{
		Datum		d = SPI_getbinval(tup, desc, 4 + RE_NSTAGES, &isnull);

		r->has_failed = !isnull;
		r->failed_at = isnull ? 0 : DatumGetTimestampTz(d);
	}
	/* a callback batch looks up thousands: each result holds a memory context */
	SPI_freetuptable(SPI_tuptable);
	return true;
}

/* The highest stage reached (by its timestamp), 0 for none. */
static int
stage_reached(const Recipient *r)
{
	int			k;

	for (k = RE_NSTAGES; k > 0; k--)
		if (r->has[k - 1])
			return k;
	return 0;
}

/* The rules: the state after u; false if u changes nothing. */
static bool
next_state(const Recipient *r, const StatusUpdate *u, Recipient *n)
{
	int			reached = stage_reached(r);
	int			k;

	*n = *r;
	if (u->status == RE_ST_FAILED)
	{
		if (r->status == RE_ST_FAILED || reached >= RE_ST_DELIVERED)
			return false;
		n->status = RE_ST_FAILED;
		n->has_failed = true;
		n->failed_at = u->at;
		return true;
	}
	Assert(u->status >= RE_ST_SENT && u->status <= RE_ST_CLOSED);
	for (k = 0; k < (int) u->status; k++)
	{
		if (!n->has[k])
		{
			n->has[k] = true;
			n->at[k] = u->at;
		}
		else if (k == (int) u->status - 1 && u->at < n->at[k])
			n->at[k] = u->at;	/* the stage's own, earlier report */
	}
	/* nothing is delivered before it was sent: earlier stages are no later */
	for (k = RE_NSTAGES - 1; k > 0; k--)
		if (n->has[k] && n->has[k - 1] && n->at[k - 1] > n->at[k])
			n->at[k - 1] = n->at[k];
	if (r->status == RE_ST_FAILED && (int) u->status <= reached)
		n->status = RE_ST_FAILED;
	else
		n->status = (ReStatus) Max(reached, (int) u->status);
	if (n->status != r->status || n->has_failed != r->has_failed)
		return true;
	for (k = 0; k < RE_NSTAGES; k++)
		if (n->has[k] != r->has[k] || n->at[k] != r->at[k])
			return true;
	return false;
}

/*
 * Apply a status to the locked recipient r.  Its time is taken no earlier
 * than the send's: the provider's own time stays in the item (metadata).
 * A callback's item that changes nothing still writes its history row (once:
 * not again when the provider retries), so what the provider said of the
 * message is kept.
 */
static ReResult
apply_update(const char *tenant, const Recipient *r, const StatusUpdate *given)
{
	StatusUpdate fu = *given;
	const StatusUpdate *u = &fu;
	Recipient	n;
	bool		changed;
	bool		keep = strcmp(given->source, "webhook") == 0 && given->metadata != NULL;
	ReResult	res;
	Datum		v[20];
	char		nl[20];
	int			k;

	if (r->has[RE_ST_SENT - 1] && fu.at < r->at[RE_ST_SENT - 1])
		fu.at = r->at[RE_ST_SENT - 1];
	changed = next_state(r, u, &n);
	res = n.status != r->status ? RE_RES_APPLIED :
		u->status == r->status ? RE_RES_DUPLICATE : RE_RES_STALE;

	if (!changed && u->message_id == NULL && u->send_response == NULL && !u->has_amount)
	{
		if (keep)
		{
			v[0] = CStringGetTextDatum(tenant);
			v[1] = Int64GetDatum(r->id);
			v[2] = TimestampTzGetDatum(u->at);
			v[3] = CStringGetTextDatum(u->source);
			v[4] = JsonbPGetDatum(u->metadata);
			v[5] = CStringGetTextDatum(result_names[res]);
			if (SPI_execute_plan(report_plan, v, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "recording a status report failed");
		}
		return res;
	}

	memset(nl, ' ', sizeof(nl));
	v[0] = CStringGetTextDatum(tenant);
	v[1] = Int64GetDatum(r->id);
	v[2] = CStringGetTextDatum(re_status_names[n.status]);
	for (k = 0; k < RE_NSTAGES; k++)
	{
		v[3 + k] = TimestampTzGetDatum(n.at[k]);
		nl[3 + k] = n.has[k] ? ' ' : 'n';
	}
	v[8] = TimestampTzGetDatum(n.failed_at);
	nl[8] = n.has_failed ? ' ' : 'n';
	v[9] = u->error ? JsonbPGetDatum(u->error) : (Datum) 0;
	nl[9] = (u->error && n.status == RE_ST_FAILED && r->status != RE_ST_FAILED) ? ' ' : 'n';
	v[10] = u->amount;
	nl[10] = u->has_amount ? ' ' : 'n';
	v[11] = CStringGetTextDatum(re_status_names[r->status]);
	v[12] = TimestampTzGetDatum(u->at);
	v[13] = CStringGetTextDatum(u->source);
	v[14] = u->metadata ? JsonbPGetDatum(u->metadata) : (Datum) 0;
	nl[14] = u->metadata ? ' ' : 'n';
	v[15] = u->message_id ? CStringGetTextDatum(u->message_id) : (Datum) 0;
	nl[15] = u->message_id ? ' ' : 'n';
	v[16] = u->send_response ? JsonbPGetDatum(u->send_response) : (Datum) 0;
	nl[16] = u->send_response ? ' ' : 'n';
	v[17] = BoolGetDatum(keep);
	v[18] = CStringGetTextDatum(result_names[res]);
	v[19] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	if (SPI_execute_plan(write_plan, v, nl, false, 0) < 0)
		elog(ERROR, "updating a blast recipient failed");
	return res;
}

/*
 * Parking a status for a message id and the landing of the id take the same
 * lock, held to commit, without waiting for it: whoever finds it taken leaves
 * the parked status to the sweep.  Ids share RE_MESSAGE_LOCKS locks, so a
 * callback batch of thousands of unknown ids cannot fill the shared lock
 * table.
 */
static uint32
message_lock_bucket(const char *tenant, const char *message_id)
{
	uint32		h = hash_bytes((const unsigned char *) message_id, strlen(message_id));

	h = hash_combine(h, hash_bytes((const unsigned char *) tenant, strlen(tenant)));
	return h % RE_MESSAGE_LOCKS;
}

/* Take the lock of a message id; with no_wait, false if another holds it. */
static bool
lock_message_id(const char *tenant, const char *message_id, bool no_wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, RE_MESSAGE_LOCK_CLASS,
						 message_lock_bucket(tenant, message_id), 2);
	return LockAcquire(&tag, ExclusiveLock, false, no_wait) != LOCKACQUIRE_NOT_AVAIL;
}

static bool
find_by_message(const char *tenant, const char *message_id, Recipient *r)
{
	Datum		v[2];

	v[0] = CStringGetTextDatum(tenant);
	v[1] = CStringGetTextDatum(message_id);
	return find_recipient(find_by_message_plan, v, NULL, r);
}

static bool
find_by_id(const char *tenant, int64 id, Recipient *r)
{
	Datum		v[2];

	v[0] = CStringGetTextDatum(tenant);
	v[1] = Int64GetDatum(id);
	return find_recipient(find_by_id_plan, v, NULL, r);
}

/* A result name of campaign_message_status */
static ReResult
result_from_name(const char *name)
{
	int			k;

	for (k = 0; k < lengthof(result_names); k++)
		if (strcmp(result_names[k], name) == 0)
			return (ReResult) k;
	elog(ERROR, "unknown status result \"%s\"", name);
	return RE_RES_REJECTED;		/* keep the compiler quiet */
}

/*
 * A status of the campaign message carrying message_id (outcomes.sql);
 * false if none carries it (nor, when the status names the send's
 * idempotency key, the message whose id was never learned).
 */
static bool
campaign_status(const char *tenant, const char *message_id, const StatusUpdate *u, ReResult *res)
{
	Datum		v[6];
	char		nl[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	Datum		d;

	v[0] = CStringGetTextDatum(tenant);
	v[1] = CStringGetTextDatum(message_id);
	v[2] = CStringGetTextDatum(re_status_names[u->status]);
	v[3] = TimestampTzGetDatum(u->at);
	v[4] = CStringGetTextDatum(u->source);
	v[5] = u->metadata ? JsonbPGetDatum(u->metadata) : (Datum) 0;
	nl[5] = u->metadata ? ' ' : 'n';
	if (SPI_execute_plan(campaign_status_plan, v, nl, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "applying a status to a campaign message failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		*res = result_from_name(TextDatumGetCString(d));
	SPI_freetuptable(SPI_tuptable);
	return !isnull;
}

/*
 * An inbound message for campaigns (outcomes.sql): the contacts of the
 * sender's phone noted, stopped (stop on reply), the message answered
 * (context_id, else their latest) replied.  Returns how many contacts.
 */
static int64
campaign_inbound(const char *tenant, const char *phone, int64 channel_id, const char *context_id,
				 const StatusUpdate *u)
{
	Datum		v[7];
	char		nl[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Interval   *window = palloc0(sizeof(Interval));
	bool		isnull;
	int64		n;

	window->time = (int64) re_reply_window_min * USECS_PER_MINUTE;
	v[0] = CStringGetTextDatum(tenant);
	v[1] = phone ? CStringGetTextDatum(phone) : (Datum) 0;
	nl[1] = phone ? ' ' : 'n';
	v[2] = Int64GetDatum(channel_id);
	nl[2] = channel_id != 0 ? ' ' : 'n';
	v[3] = TimestampTzGetDatum(u->at);
	v[4] = context_id ? CStringGetTextDatum(context_id) : (Datum) 0;
	nl[4] = context_id ? ' ' : 'n';
	v[5] = IntervalPGetDatum(window);
	v[6] = u->metadata ? JsonbPGetDatum(u->metadata) : (Datum) 0;
	nl[6] = u->metadata ? ' ' : 'n';
	if (SPI_execute_plan(campaign_inbound_plan, v, nl, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "recording an inbound message for campaigns failed");
	n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return isnull ? 0 : n;
}

/*
 * What a caller may still park: the callback's own count (per_callback) and
 * the tenant's, counted once per call up to the cap.  Concurrent callers
 * may together pass the tenant's cap by what each parks: it bounds a
 * table's growth, it is not a quota to the row.
 */
typedef struct ParkBudget
{
	bool		per_callback;
	int			parked;
	int64		tenant_parked;	/* -1: not counted yet */
	const char *reason;			/* why the last status was refused */
} ParkBudget;

#define PARK_BUDGET_INIT(per_callback) {(per_callback), 0, -1, NULL}

static bool
park_allowed(const char *tenant, ParkBudget *b)
{
	if (b->per_callback && b->parked >= re_parked_max_per_callback)
	{
		b->reason = psprintf("names a message id no recipient carries, and this callback parked %d already (revenue_engine.parked_max_per_callback)",
							 re_parked_max_per_callback);
		return false;
	}
	if (b->tenant_parked < 0)
	{
		Datum		v[2];
		bool		isnull;

		v[0] = CStringGetTextDatum(tenant);
		v[1] = Int64GetDatum((int64) re_parked_max_per_tenant);
		if (SPI_execute_plan(count_parked_plan, v, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "counting parked statuses failed");
		b->tenant_parked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
	}
	if (b->tenant_parked >= re_parked_max_per_tenant)
	{
		b->reason = psprintf("names a message id no recipient carries, and tenant \"%s\" has %d statuses parked already (revenue_engine.parked_max_per_tenant)",
							 tenant, re_parked_max_per_tenant);
		return false;
	}
	b->parked++;
	b->tenant_parked++;
	return true;
}

/*
 * A status of a provider message id: applied to its recipient, or parked;
 * RE_RES_REJECTED (b->reason says why) when the budget allows no more.
 */
static ReResult
status_of_message(const char *tenant, const char *message_id, const StatusUpdate *u, ParkBudget *b)
{
	Recipient	r;
	Datum		v[7];
	char		nl[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	ReResult	res;

	if (find_by_message(tenant, message_id, &r))
		return apply_update(tenant, &r, u);
	if (campaign_status(tenant, message_id, u, &res))
		return res;
	if (!park_allowed(tenant, b))
		return RE_RES_REJECTED;
	/*
	 * Parking holds the id's lock to commit.  A landing that comes later
	 * finds it taken and leaves our status to the sweep; if a landing holds
	 * it now (not committed yet), we park without it and the sweep applies
	 * the status once both committed.  Nobody waits for these locks, so they
	 * add no deadlock to the row locks callbacks take in message id order.
	 * The worker is woken at our commit as well as at the landing's: when the
	 * landing commits first, the sweep it wakes cannot see our row yet.
	 */
	(void) lock_message_id(tenant, message_id, true);
	re_worker_wake_at_commit();

	v[0] = CStringGetTextDatum(tenant);
	v[1] = CStringGetTextDatum(message_id);
	v[2] = CStringGetTextDatum(re_status_names[u->status]);
	v[3] = TimestampTzGetDatum(u->at);
	v[4] = CStringGetTextDatum(u->source);
	v[5] = u->metadata ? JsonbPGetDatum(u->metadata) : (Datum) 0;
	nl[5] = u->metadata ? ' ' : 'n';
	v[6] = u->error ? JsonbPGetDatum(u->error) : (Datum) 0;
	nl[6] = u->error ? ' ' : 'n';
	if (SPI_execute_plan(park_plan, v, nl, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "parking a status failed");
	return RE_RES_PARKED;
}

/* An inbound message from phone at u->at: the latest open recipient replied. */
static ReResult
reply_from_phone(const char *tenant, const char *phone, const StatusUpdate *u, int64 *recipient)
{
	Recipient	r;
	Datum		v[4];

	v[0] = CStringGetTextDatum(tenant);
	v[1] = CStringGetTextDatum(phone);
	v[2] = TimestampTzGetDatum(u->at - (int64) re_reply_window_min * USECS_PER_MINUTE);
	v[3] = TimestampTzGetDatum(u->at);
	if (!find_recipient(find_reply_plan, v, NULL, &r))
		return RE_RES_UNMATCHED;
	*recipient = r.id;
	return apply_update(tenant, &r, u);
}

/* ---------------------------------------------------------------------------
 * Argument checks
 * ---------------------------------------------------------------------------
 */

static const char *
time_problem(TimestampTz at, TimestampTz now)
{
	if (TIMESTAMP_NOT_FINITE(at))
		return "is not a finite time";
	if (at > now + (int64) RE_MAX_CLOCK_SKEW_S * USECS_PER_SEC)
		return "is in the future";
	/* 2000-01-01 00:00 UTC is 0 */
	if (at < 0)
		return "is before 2000";
	return NULL;
}

static TimestampTz
checked_time(FunctionCallInfo fcinfo, int argno)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz at;
	const char *problem;

	if (PG_ARGISNULL(argno))
		return now;
	at = PG_GETARG_TIMESTAMPTZ(argno);
	problem = time_problem(at, GetCurrentTimestamp());
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("occurred_at %s %s", timestamptz_to_str(at), problem),
				 errhint("Statuses may be stamped at most %d seconds ahead of the database's clock.",
						 RE_MAX_CLOCK_SKEW_S)));
	return at;
}

/* A text argument that must not be null */
static char *
required_text(FunctionCallInfo fcinfo, int argno, const char *name)
{
	re_require_arg(fcinfo, argno, name);
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

static const char *
checked_source(FunctionCallInfo fcinfo, int argno)
{
	char	   *source = required_text(fcinfo, argno, "source");

	if (strcmp(source, "webhook") != 0 && strcmp(source, "polling") != 0 &&
		strcmp(source, "manual") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source \"%s\" is not webhook, polling or manual", source)));
	return source;
}

static char *
checked_message_id(FunctionCallInfo fcinfo, int argno)
{
	char	   *id = required_text(fcinfo, argno, "message_id");

	if (id[0] == '\0' || strlen(id) > RE_MAX_MESSAGE_ID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message id \"%s\" must have 1 to %d bytes", clipped(id), RE_MAX_MESSAGE_ID)));
	return id;
}

/* A phone argument: not null, E.164 once normalized into out */
static void
checked_phone(FunctionCallInfo fcinfo, int argno, char *out)
{
	normalize_or_error(required_text(fcinfo, argno, "phone"), out);
}

/* ---------------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------------
 */

Datum
re_record_message_status(PG_FUNCTION_ARGS)
{
	const char *tenant = re_current_tenant_name();
	StatusUpdate u = {0};
	char	   *message_id = checked_message_id(fcinfo, 0);
	char	   *status;
	ReOwnerScope scope;
	ReResult	res;
	ParkBudget	budget = PARK_BUDGET_INIT(false);

	status = required_text(fcinfo, 1, "status");
	u.status = re_status_from_name(status);
	if (u.status == RE_ST_UNKNOWN || u.status == RE_ST_PENDING)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown message status \"%s\"", status),
				 errhint("Statuses are sent, delivered, read, replied, closed and failed.")));
	u.at = checked_time(fcinfo, 2);
	u.source = checked_source(fcinfo, 3);
	u.metadata = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	if (u.status == RE_ST_FAILED)
		u.error = u.metadata;

	re_connect_as_owner(&scope);
	prepare_plans();
	res = status_of_message(tenant, message_id, &u, &budget);
	if (res == RE_RES_REJECTED)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("status \"%s\" of message id \"%s\" cannot be parked: it %s",
						status, clipped(message_id), budget.reason),
				 errhint("Parked statuses expire after revenue_engine.parked_retention.")));
	re_disconnect_as_owner(&scope);
	PG_RETURN_TEXT_P(cstring_to_text(result_names[res]));
}

Datum
re_record_inbound_message(PG_FUNCTION_ARGS)
{
	const char *tenant = re_current_tenant_name();
	StatusUpdate u = {0};
	char		phone[17];
	ReOwnerScope scope;
	ReResult	res;
	int64		recipient = 0;

	checked_phone(fcinfo, 0, phone);
	u.status = RE_ST_REPLIED;
	u.at = checked_time(fcinfo, 1);
	u.source = checked_source(fcinfo, 2);
	u.metadata = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);

	re_connect_as_owner(&scope);
	prepare_plans();
	res = reply_from_phone(tenant, phone, &u, &recipient);
	/* the phone's campaign contacts: noted, stopped (stop on reply) */
	(void) campaign_inbound(tenant, phone, 0, NULL, &u);
	re_disconnect_as_owner(&scope);
	if (res == RE_RES_UNMATCHED)
		PG_RETURN_NULL();
	PG_RETURN_INT64(recipient);
}

Datum
re_mark_closed(PG_FUNCTION_ARGS)
{
	const char *tenant = re_current_tenant_name();
	StatusUpdate u = {0};
	char		phone[17];
	ReOwnerScope scope;
	Recipient	r;
	bool		found;
	Datum		v[3];
	char		nl[3] = {' ', ' ', ' '};

	checked_phone(fcinfo, 0, phone);
	if (!PG_ARGISNULL(1))
	{
		Numeric		amount = PG_GETARG_NUMERIC(1);

		if (numeric_is_nan(amount) || numeric_is_inf(amount) ||
			DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(amount),
											 DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("amount %s is not a finite, non-negative number",
							DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(amount))))));
		u.amount = NumericGetDatum(amount);
		u.has_amount = true;
	}
	u.status = RE_ST_CLOSED;
	u.at = checked_time(fcinfo, 2);
	u.source = "manual";
	u.metadata = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);

	re_connect_as_owner(&scope);
	prepare_plans();
	v[0] = CStringGetTextDatum(tenant);
	v[1] = CStringGetTextDatum(phone);
	v[2] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nl[2] = PG_ARGISNULL(3) ? 'n' : ' ';
	found = find_recipient(find_close_plan, v, nl, &r);
	if (found)
		(void) apply_update(tenant, &r, &u);
	re_disconnect_as_owner(&scope);
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_INT64(r.id);
}

/* ---------------------------------------------------------------------------
 * Provider callbacks
 * ---------------------------------------------------------------------------
 */

/* A header's value from a jsonb object of headers, names compared case-blind. */
static char *
header_value(Jsonb *headers, const char *name)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		match = false;

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			match = (v.val.string.len == (int) strlen(name) &&
					 pg_strncasecmp(v.val.string.val, name, v.val.string.len) == 0);
		else if (tok == WJB_VALUE && match)
		{
			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("header \"%s\" must be a JSON string", name)));
			return pnstrdup(v.val.string.val, v.val.string.len);
		}
	}
	return NULL;
}

static void
signature_error(const char *provider, const char *kind, const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("the %s signature of the callback for provider \"%s\" does not verify: %s",
					kind, provider, reason),
			 errhint("Pass the request's headers and its raw body exactly as received.")));
}

/* WhatsApp Cloud API: X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)> */
static void
verify_whatsapp(const char *provider, Jsonb *headers, const char *secret, const char *body)
{
	char	   *sig = header_value(headers, "X-Hub-Signature-256");
	unsigned char mac[32];
	char		hex[65];
	char		given[65];
	int			i;

	if (sig == NULL)
		signature_error(provider, "WhatsApp", "the X-Hub-Signature-256 header is missing");
	if (strncmp(sig, "sha256=", 7) != 0 || strlen(sig) != 7 + 64)
		signature_error(provider, "WhatsApp", "X-Hub-Signature-256 is not sha256=<64 hex digits>");
	for (i = 0; i < 64; i++)
		given[i] = (char) tolower((unsigned char) sig[7 + i]);
	given[64] = '\0';
	if (!re_hmac_sha256(secret, strlen(secret), body, strlen(body), mac))
		elog(ERROR, "HMAC-SHA256 failed");
	hex_encode((const char *) mac, 32, hex);
	hex[64] = '\0';
	{
		/* constant time */
		unsigned char diff = 0;

		for (i = 0; i < 64; i++)
			diff |= (unsigned char) (hex[i] ^ given[i]);
		if (diff != 0)
			signature_error(provider, "WhatsApp", "the HMAC of the body with the app secret differs");
	}
}

/* Standard Webhooks: webhook-id, webhook-timestamp (within 5 minutes), webhook-signature */
static void
verify_standard(const char *provider, Jsonb *headers, const char *secret, const char *body)
{
	char	   *id = header_value(headers, "webhook-id");
	char	   *ts = header_value(headers, "webhook-timestamp");
	char	   *sig = header_value(headers, "webhook-signature");
	const char *error;
	char	   *end;
	long		t;
	long		now = (long) (re_clock_now() / USECS_PER_SEC +
							  (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);

	if (id == NULL || ts == NULL || sig == NULL)
		signature_error(provider, "Standard Webhooks",
						"the webhook-id, webhook-timestamp and webhook-signature headers are required");
	errno = 0;
	t = strtol(ts, &end, 10);
	if (errno != 0 || *end != '\0' || end == ts)
		signature_error(provider, "Standard Webhooks", "webhook-timestamp is not whole seconds");
	if (t < now - RE_MAX_CLOCK_SKEW_S || t > now + RE_MAX_CLOCK_SKEW_S)
		signature_error(provider, "Standard Webhooks",
						"webhook-timestamp is more than 5 minutes from now (a replay?)");
	if (!re_http_verify(secret, id, ts, body, strlen(body), sig, &error))
		signature_error(provider, "Standard Webhooks", error);
}

/* A copy of a nested object or array as a Jsonb of its own */
static Jsonb *
container_jsonb(JsonbContainer *c)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbParseState *st = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
		res = pushJsonbValue(&st, tok,
							 (tok == WJB_KEY || tok == WJB_VALUE || tok == WJB_ELEM) ? &v : NULL);
	return JsonbValueToJsonb(res);
}

/* One result row of ingest_status_webhook */
typedef struct IngestRow
{
	int			item;
	const char *kind;
	const char *message_id;
	const char *status;
	ReResult	res;
	const char *reason;
} IngestRow;

/* A valid item, applied after every item was read */
typedef struct IngestWork
{
	IngestRow  *row;
	const char *key;			/* that message id, or the sender's phone */
	bool		by_phone;		/* an inbound message matched by its sender */
	const char *phone;			/* inbound messages: the sender */
	StatusUpdate u;
	JsonbContainer *raw;		/* the item, in the parsed body */
	JsonbValue	error;			/* failed: the provider's error, if given */
	bool		has_error;
	bool		looked_up;		/* key is the message id found by the phone */
	const char *context;		/* inbound messages: the message answered, if named */
} IngestWork;

/* A reaction, system message or channel error: a channel_events row */
typedef struct IngestEvent
{
	IngestRow  *row;
	const char *kind;
	const char *item_id;		/* the provider's id of the item, if any */
	const char *message_id;		/* the message it concerns */
	const char *sender;			/* E.164, if the item gives one */
	const char *detail;
	const char *new_phone;		/* number_changed: the new number */
	TimestampTz at;
	JsonbContainer *raw;		/* the item, in the parsed body */
} IngestEvent;

typedef struct Ingest
{
	const char *tenant;
	const char *provider;
	int64		channel_id;
	Jsonb	   *status_map;
	int			item;
	TimestampTz now;
	MemoryContext cxt;			/* of the rows (and their reasons) */
	IngestRow **rows;
	int			nrows;
	IngestWork *work;
	int			nwork;
	int			maxwork;
	IngestEvent *events;
	int			nevents;
	int			maxevents;
	ParkBudget	budget;
} Ingest;

/* A result row for the current item; the result of valid items comes later. */
static IngestRow *
emit(Ingest *in, const char *kind, const char *message_id, const char *status,
	 ReResult res, const char *reason)
{
	IngestRow  *row = palloc(sizeof(IngestRow));

	row->item = in->item;
	row->kind = kind;
	row->message_id = message_id;
	row->status = status;
	row->res = res;
	row->reason = reason;
	if (in->nrows % 64 == 0)
		in->rows = in->rows == NULL ? palloc(sizeof(IngestRow *) * 64) :
			repalloc(in->rows, sizeof(IngestRow *) * (in->nrows + 64));
	in->rows[in->nrows++] = row;
	return row;
}

static IngestWork *
add_work(Ingest *in, IngestRow *row, const char *key, bool by_phone, const char *phone,
		 const StatusUpdate *u, JsonbContainer *raw)
{
	IngestWork *w;

	if (in->nwork == in->maxwork)
	{
		in->maxwork = Max(64, in->maxwork * 2);
		in->work = in->work == NULL ? palloc(sizeof(IngestWork) * in->maxwork) :
			repalloc(in->work, sizeof(IngestWork) * in->maxwork);
	}
	w = &in->work[in->nwork++];
	w->row = row;
	w->key = key;
	w->by_phone = by_phone;
	w->phone = phone;
	w->u = *u;
	w->raw = raw;
	w->has_error = false;
	w->looked_up = false;
	w->context = NULL;
	return w;
}

static void
add_event(Ingest *in, IngestRow *row, const char *kind, const char *item_id,
		  const char *message_id, const char *sender, const char *detail,
		  const char *new_phone, TimestampTz at, JsonbContainer *raw)
{
	IngestEvent *e;

	if (in->nevents == in->maxevents)
	{
		in->maxevents = Max(16, in->maxevents * 2);
		in->events = in->events == NULL ? palloc(sizeof(IngestEvent) * in->maxevents) :
			repalloc(in->events, sizeof(IngestEvent) * in->maxevents);
	}
	e = &in->events[in->nevents++];
	e->row = row;
	e->kind = kind;
	e->item_id = item_id;
	e->message_id = message_id;
	e->sender = sender;
	e->detail = detail;
	e->new_phone = new_phone;
	e->at = at;
	e->raw = raw;
}

/* Events in provider id order (none last): concurrent repeats of a callback wait in one order */
static int
event_cmp(const void *a, const void *b)
{
	const IngestEvent *x = a;
	const IngestEvent *y = b;
	int			c;

	if ((x->item_id == NULL) != (y->item_id == NULL))
		return x->item_id == NULL ? 1 : -1;
	if (x->item_id != NULL && (c = strcmp(x->item_id, y->item_id)) != 0)
		return c;
	return x->row->item - y->row->item;
}

/* A number change, for the application: the outbox event phone_number_changed */
static void
enqueue_number_change(Ingest *in, const IngestEvent *e)
{
	JsonbParseState *st = NULL;
	JsonbContainer *sys = NULL;
	JsonbValue	v;
	pg_uuid_t	event_id;

	if (getKeyJsonValueFromContainer(e->raw, "system", 6, &v) != NULL && v.type == jbvBinary)
		sys = v.val.binary.data;
	re_jb_begin(&st);
	re_jb_str(&st, "channel", in->provider);
	if (e->sender)
		re_jb_str(&st, "old_phone", e->sender);
	else
		re_jb_null(&st, "old_phone");
	if (e->new_phone)
		re_jb_str(&st, "new_phone", e->new_phone);
	else
		re_jb_null(&st, "new_phone");
	if (e->item_id)
		re_jb_str(&st, "message_id", e->item_id);
	re_jb_timestamptz(&st, "occurred_at", e->at);
	if (sys)
		re_jb_jsonb(&st, "system", container_jsonb(sys));
	re_new_event_id(&event_id);
	re_outbox_enqueue(in->tenant, NULL, "phone_number_changed", re_jb_end(&st), NULL, &event_id);
}

/*
 * Record the channel events, before any status: they lock no recipient, so
 * they add no lock to the order statuses and replies take theirs in.
 */
static void
apply_events(Ingest *in)
{
	MemoryContext item_cxt = AllocSetContextCreate(CurrentMemoryContext,
												   "revenue_engine callback event",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old_cxt = MemoryContextSwitchTo(item_cxt);
	int			i;

	qsort(in->events, in->nevents, sizeof(IngestEvent), event_cmp);
	for (i = 0; i < in->nevents; i++)
	{
		IngestEvent *e = &in->events[i];
		Datum		v[9];
		char		nl[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
		bool		isnull = true;

		MemoryContextReset(item_cxt);
		v[0] = CStringGetTextDatum(in->tenant);
		v[1] = Int64GetDatum(in->channel_id);
		v[2] = CStringGetTextDatum(e->kind);
		v[3] = e->item_id ? CStringGetTextDatum(e->item_id) : (Datum) 0;
		nl[3] = e->item_id ? ' ' : 'n';
		v[4] = e->message_id ? CStringGetTextDatum(e->message_id) : (Datum) 0;
		nl[4] = e->message_id ? ' ' : 'n';
		v[5] = e->sender ? CStringGetTextDatum(e->sender) : (Datum) 0;
		nl[5] = e->sender ? ' ' : 'n';
		v[6] = e->detail ? CStringGetTextDatum(e->detail) : (Datum) 0;
		nl[6] = e->detail ? ' ' : 'n';
		v[7] = TimestampTzGetDatum(e->at);
		v[8] = JsonbPGetDatum(container_jsonb(e->raw));
		if (SPI_execute_plan(channel_event_plan, v, nl, false, 0) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "recording a channel event failed");
		if (SPI_processed == 1)
			(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		SPI_freetuptable(SPI_tuptable);
		if (SPI_processed == 0)
		{
			e->row->res = RE_RES_DUPLICATE;
			e->row->reason = "recorded already (the provider sent this item again)";
			continue;
		}
		if (e->message_id != NULL && isnull)
			e->row->reason = "names a message no blast recipient carries";
		if (strcmp(e->kind, "number_changed") == 0)
			enqueue_number_change(in, e);
	}
	MemoryContextSwitchTo(old_cxt);
	MemoryContextDelete(item_cxt);
}

/* The item's jsonb copies, made when it is applied (in the item's memory) */
static void
work_jsonb(IngestWork *w)
{
	w->u.metadata = container_jsonb(w->raw);
	if (w->u.status == RE_ST_FAILED)
		w->u.error = w->has_error ? JsonbValueToJsonb(&w->error) : w->u.metadata;
}

/*
 * Items by message id are applied in message id order, then messages matched
 * by phone (their recipient has no message id) in phone order; items of one
 * id keep their order.  Every call takes its row locks in the same order, so
 * concurrent callbacks touching the same recipients do not deadlock.
 */
static int
work_cmp(const void *a, const void *b)
{
	const IngestWork *x = a;
	const IngestWork *y = b;
	int			c;

	if (x->by_phone != y->by_phone)
		return x->by_phone ? 1 : -1;
	if ((c = strcmp(x->key, y->key)) != 0)
		return c;
	return x->row->item - y->row->item;
}

static void
apply_work(Ingest *in)
{
	int			i;

	MemoryContext item_cxt = AllocSetContextCreate(CurrentMemoryContext,
												   "revenue_engine callback item",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old_cxt;

	/* what one item allocates is freed before the next (results are static strings) */
	old_cxt = MemoryContextSwitchTo(item_cxt);
	qsort(in->work, in->nwork, sizeof(IngestWork), work_cmp);
	for (i = 0; i < in->nwork; i++)
	{
		IngestWork *w = &in->work[i];

		MemoryContextReset(item_cxt);
		work_jsonb(w);

		if (!w->by_phone && w->u.status != RE_ST_REPLIED)
		{
			w->row->res = status_of_message(in->tenant, w->key, &w->u, &in->budget);
			if (w->row->res == RE_RES_REJECTED)
				w->row->reason = MemoryContextStrdup(in->cxt, in->budget.reason);
		}
		else if (!w->by_phone)
		{
			Recipient	r;

			/* a reply to a given message (WhatsApp's context.id) */
			if (find_by_message(in->tenant, w->key, &r))
				w->row->res = apply_update(in->tenant, &r, &w->u);
			else if (w->looked_up)
			{
				/* the phone's recipient changed since: matched by the sender below */
				w->by_phone = true;
				w->key = w->phone;
			}
			else
			{
				/* it answers another message: not a reply to a blast */
				w->row->res = RE_RES_UNMATCHED;
				w->row->reason = MemoryContextStrdup(in->cxt,
													 psprintf("answers message \"%s\", which no blast recipient carries",
															  clipped(w->key)));
			}
		}
	}
	for (i = 0; i < in->nwork; i++)
	{
		IngestWork *w = &in->work[i];
		int64		recipient;

		if (!w->by_phone)
			continue;
		MemoryContextReset(item_cxt);
		work_jsonb(w);
		w->row->res = reply_from_phone(in->tenant, w->key, &w->u, &recipient);
		if (w->row->res == RE_RES_UNMATCHED)
			w->row->reason = "no recipient of this phone was sent a message within revenue_engine.reply_window";
	}

	/*
	 * Campaigns: every inbound message (the messages of a callback are
	 * inbound only; outbound copies come in other fields, which are not
	 * read), after the blasts' replies, in the same order: the sender's
	 * contacts are noted and stopped, the message answered marked replied.
	 */
	for (i = 0; i < in->nwork; i++)
	{
		IngestWork *w = &in->work[i];

		if (w->u.status != RE_ST_REPLIED || (w->phone == NULL && w->context == NULL))
			continue;
		MemoryContextReset(item_cxt);
		work_jsonb(w);
		if (campaign_inbound(in->tenant, w->phone, in->channel_id, w->context, &w->u) > 0 &&
			w->row->res == RE_RES_UNMATCHED)
		{
			w->row->res = RE_RES_APPLIED;
			w->row->reason = "a campaign contact's message";
		}
	}
	MemoryContextSwitchTo(old_cxt);
	MemoryContextDelete(item_cxt);
}

static void
output_rows(Ingest *in, ReturnSetInfo *rsinfo)
{
	int			i;

	for (i = 0; i < in->nrows; i++)
	{
		IngestRow  *row = in->rows[i];
		Datum		v[6];
		bool		n[6] = {false, false, false, false, false, false};

		v[0] = Int32GetDatum(row->item);
		v[1] = CStringGetTextDatum(row->kind);
		v[2] = row->message_id ? CStringGetTextDatum(row->message_id) : (Datum) 0;
		n[2] = row->message_id == NULL;
		v[3] = row->status ? CStringGetTextDatum(row->status) : (Datum) 0;
		n[3] = row->status == NULL;
		v[4] = CStringGetTextDatum(result_names[row->res]);
		v[5] = row->reason ? CStringGetTextDatum(row->reason) : (Datum) 0;
		n[5] = row->reason == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
}

static bool
get_key(JsonbContainer *c, const char *key, JsonbValue *out)
{
	if (c == NULL || !JsonContainerIsObject(c))
		return false;
	return getKeyJsonValueFromContainer(c, key, strlen(key), out) != NULL;
}

/* A string member, NULL if absent or not a string */
static char *
get_string(JsonbContainer *c, const char *key)
{
	JsonbValue	v;

	if (!get_key(c, key, &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* A container member (object or array), NULL if absent or not one */
static JsonbContainer *
get_container(JsonbContainer *c, const char *key, bool array)
{
	JsonbValue	v;

	if (!get_key(c, key, &v) || v.type != jbvBinary)
		return NULL;
	if (array ? !JsonContainerIsArray(v.val.binary.data) : !JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return v.val.binary.data;
}

/*
 * Unix seconds as digits with an optional fraction (microseconds kept, the
 * rest cut); false if s is not of that shape.
 */
static bool
unix_seconds(const char *s, TimestampTz *at)
{
	const char *p = s;
	int64		secs = 0;
	int64		usecs = 0;
	int			k;

	for (; isdigit((unsigned char) *p); p++)
		if (secs < INT64CONST(100000000000))	/* beyond, out of range anyway */
			secs = secs * 10 + (*p - '0');
	if (p == s)
		return false;
	if (*p == '.')
	{
		p++;
		if (!isdigit((unsigned char) *p))
			return false;
		for (k = 0; isdigit((unsigned char) *p); p++, k++)
			if (k < 6)
				usecs = usecs * 10 + (*p - '0');
		for (; k < 6; k++)
			usecs *= 10;
	}
	if (*p != '\0')
		return false;
	*at = (secs - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY) * USECS_PER_SEC
		+ usecs;
	return true;
}

/* n digits at *p, advancing it; false if not all digits */
static bool
fixed_digits(const char **p, int n, int *out)
{
	*out = 0;
	for (; n > 0; n--, (*p)++)
	{
		if (!isdigit((unsigned char) **p))
			return false;
		*out = *out * 10 + (**p - '0');
	}
	return true;
}

/*
 * Whether s is an RFC 3339 date-time with an explicit offset,
 * YYYY-MM-DD(T| )HH:MM:SS[.fraction](Z|+hh:mm|-hh:mm), every field in range.
 * What passes is what timestamptz_in reads the same way under every
 * DateStyle and TimeZone (year first, the offset given) and cannot refuse,
 * so it is read there without a subtransaction (PostgreSQL 15 has no
 * soft-error input functions).
 */
static bool
rfc3339(const char *s)
{
	const char *p = s;
	int			y,
				mo,
				d,
				h,
				mi,
				sec,
				oh,
				om;

	if (strlen(s) > 64)
		return false;
	if (!fixed_digits(&p, 4, &y) || *p++ != '-' || !fixed_digits(&p, 2, &mo) || *p++ != '-' ||
		!fixed_digits(&p, 2, &d))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	if (!fixed_digits(&p, 2, &h) || *p++ != ':' || !fixed_digits(&p, 2, &mi) || *p++ != ':' ||
		!fixed_digits(&p, 2, &sec))
		return false;
	if (*p == '.')
	{
		p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
			p++;
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		p++;
		if (!fixed_digits(&p, 2, &oh) || *p++ != ':' || !fixed_digits(&p, 2, &om) ||
			oh > 23 || om > 59)
			return false;
	}
	else
		return false;
	if (*p != '\0')
		return false;
	/* a leap second (60) is RFC 3339's and timestamptz_in's */
	return y >= 1 && mo >= 1 && mo <= 12 && d >= 1 && d <= day_tab[isleap(y)][mo - 1] &&
		h <= 23 && mi <= 59 && sec <= 60;
}

/*
 * An item's time: Unix seconds (a number, or a string of digits with an
 * optional fraction) or an RFC 3339 string with an explicit offset.  NULL if
 * good, else why not.
 */
static const char *
item_time(JsonbContainer *c, const char *key, TimestampTz now, TimestampTz *at)
{
	JsonbValue	v;
	char	   *s;
	const char *problem;

	if (!get_key(c, key, &v))
		return "has no timestamp";
	if (v.type == jbvNumeric)
		s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	else if (v.type == jbvString)
		s = pnstrdup(v.val.string.val, v.val.string.len);
	else
		return "has a timestamp that is neither a number nor a string";
	if (unix_seconds(s, at))
		 /* read */ ;
	else if (v.type == jbvString && rfc3339(s))
	{
		char	   *p;

		/* RFC 3339 allows lower-case t and z */
		for (p = s; *p; p++)
			if (*p == 't' || *p == 'z')
				*p = (char) toupper((unsigned char) *p);
		*at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(s),
													  ObjectIdGetDatum(InvalidOid),
													  Int32GetDatum(-1)));
	}
	else
		return psprintf("has timestamp \"%s\", which is neither Unix seconds nor RFC 3339 with an offset (Z or +hh:mm)",
						clipped(s));
	if ((problem = time_problem(*at, now)) != NULL)
		return psprintf("has timestamp \"%s\", which %s", clipped(s), problem);
	return NULL;
}

/* A provider's status name without a status_map entry */
static ReStatus
provider_status(const char *name)
{
	if (strcmp(name, "played") == 0)	/* WhatsApp: a voice message was played */
		return RE_ST_READ;
	return re_status_from_name(name);
}

/* Map a provider's status name: the channel's status_map, then the extension's names. */
static ReStatus
map_status(Ingest *in, const char *name)
{
	JsonbValue	v;

	if (in->status_map && get_key(&in->status_map->root, name, &v) && v.type == jbvString)
	{
		char	   *mapped = pnstrdup(v.val.string.val, v.val.string.len);

		return re_status_from_name(mapped);
	}
	return provider_status(name);
}

static void
ingest_status(Ingest *in, JsonbContainer *c, const char *id_key, const char *error_key)
{
	char	   *id = get_string(c, id_key);
	char	   *name = get_string(c, "status");
	StatusUpdate u = {0};
	const char *problem;
	JsonbValue	ev;
	IngestWork *w;

	in->item++;
	if (c == NULL || !JsonContainerIsObject(c))
	{
		emit(in, "status", NULL, NULL, RE_RES_REJECTED, "is not a JSON object");
		return;
	}
	if (id == NULL || id[0] == '\0' || strlen(id) > RE_MAX_MESSAGE_ID)
	{
		emit(in, "status", NULL, name, RE_RES_REJECTED, "has no message id string of 1 to 200 characters");
		return;
	}
	if (name == NULL)
	{
		emit(in, "status", id, NULL, RE_RES_REJECTED, "has no status string");
		return;
	}
	u.status = map_status(in, name);
	if (u.status == RE_ST_PENDING)
	{
		emit(in, "status", id, name, RE_RES_STALE, "a pending status changes nothing");
		return;
	}
	if (u.status == RE_ST_UNKNOWN)
	{
		emit(in, "status", id, name, RE_RES_REJECTED, psprintf("unknown status \"%s\"", name));
		return;
	}
	if ((problem = item_time(c, "timestamp", in->now, &u.at)) != NULL)
	{
		emit(in, "status", id, name, RE_RES_REJECTED, problem);
		return;
	}
	u.source = "webhook";
	w = add_work(in, emit(in, "status", id, re_status_names[u.status], RE_RES_APPLIED, NULL),
				 id, false, NULL, &u, c);
	if (u.status == RE_ST_FAILED && get_key(c, error_key, &ev))
	{
		w->error = ev;
		w->has_error = true;
	}
}

/* A provider's number (WhatsApp: digits without +) checked into out as E.164 */
static const char *
provider_phone(const char *given, char *out)
{
	return phone_check(psprintf("%s%s", given[0] == '+' ? "" : "+", clipped(given)), out);
}

/* A reaction (WhatsApp): on the message it names; an empty or no emoji removes one */
static void
ingest_reaction(Ingest *in, JsonbContainer *c, const char *id, const char *sender, TimestampTz at)
{
	JsonbContainer *reaction = get_container(c, "reaction", false);
	char	   *target = get_string(reaction, "message_id");
	char	   *emoji = get_string(reaction, "emoji");
	bool		removed = emoji == NULL || emoji[0] == '\0';

	if (target == NULL || target[0] == '\0' || strlen(target) > RE_MAX_MESSAGE_ID)
	{
		emit(in, "reaction", NULL, NULL, RE_RES_REJECTED,
			 "has no reaction.message_id string of 1 to 200 bytes");
		return;
	}
	add_event(in, emit(in, "reaction", target, NULL, RE_RES_RECORDED, NULL),
			  removed ? "reaction_removed" : "reaction", id, target, sender,
			  removed ? NULL : emoji, NULL, at, c);
}

/* A system message (WhatsApp): a number or identity change, never a reply */
static void
ingest_system(Ingest *in, JsonbContainer *c, const char *id, const char *sender, TimestampTz at)
{
	JsonbContainer *sys = get_container(c, "system", false);
	char	   *type = get_string(sys, "type");
	const char *kind = "system";
	const char *detail = type;
	char	   *new_phone = NULL;

	if (sys == NULL)
	{
		emit(in, "system", id, NULL, RE_RES_REJECTED, "has no \"system\" object");
		return;
	}
	if (type != NULL && strcmp(type, "user_changed_number") == 0)
	{
		char	   *wa_id = get_string(sys, "wa_id");
		char		phone[17];

		kind = "number_changed";
		/* E.164 when it is one, else kept as given */
		if (wa_id != NULL)
			new_phone = provider_phone(wa_id, phone) == NULL ? pstrdup(phone) : wa_id;
		detail = new_phone;
	}
	else if (type != NULL && strcmp(type, "customer_identity_changed") == 0)
	{
		kind = "identity_changed";
		detail = get_string(get_container(c, "identity", false), "hash");
	}
	add_event(in, emit(in, "system", id, NULL, RE_RES_RECORDED, NULL),
			  kind, id, NULL, sender, detail, new_phone, at, c);
}

/*
 * An inbound message.  A reply goes to the recipient of the message its
 * context names, and only without a context to the latest recipient of the
 * sender's phone: newer WhatsApp payloads may name the sender by a user id
 * alone (no "from"), which is enough with a context.
 */
static void
ingest_message(Ingest *in, JsonbContainer *c, bool whatsapp)
{
	char	   *from = c ? get_string(c, "from") : NULL;
	char	   *id = c ? get_string(c, "id") : NULL;
	char	   *type = (c && whatsapp) ? get_string(c, "type") : NULL;
	char	   *context_id;
	char		phone[17];
	const char *sender = NULL;
	const char *phone_problem = "is missing";
	const char *kind = "message";
	StatusUpdate u = {0};
	const char *problem;
	bool		looked_up = false;
	IngestWork *w;
	const char *given_context;

	in->item++;
	if (c == NULL || !JsonContainerIsObject(c))
	{
		emit(in, kind, NULL, NULL, RE_RES_REJECTED, "is not a JSON object");
		return;
	}
	if (type != NULL && (strcmp(type, "reaction") == 0 || strcmp(type, "system") == 0))
		kind = type;
	if (from != NULL && (phone_problem = provider_phone(from, phone)) == NULL)
		sender = pstrdup(phone);
	if ((problem = item_time(c, "timestamp", in->now, &u.at)) != NULL)
	{
		emit(in, kind, id, strcmp(kind, "message") == 0 ? "replied" : NULL, RE_RES_REJECTED, problem);
		return;
	}
	if (strcmp(kind, "reaction") == 0)
	{
		ingest_reaction(in, c, id, sender, u.at);
		return;
	}
	if (strcmp(kind, "system") == 0)
	{
		ingest_system(in, c, id, sender, u.at);
		return;
	}
	if (!whatsapp)
	{
		char	   *direction = get_string(c, "direction");

		/* a provider's copy of a message sent (Twilio's outbound-api ...) */
		if (direction != NULL && pg_strncasecmp(direction, "outbound", 8) == 0)
		{
			emit(in, kind, id, NULL, RE_RES_UNMATCHED,
				 psprintf("an outbound message (direction \"%s\"), not a reply", clipped(direction)));
			return;
		}
	}
	if (type != NULL && (strcmp(type, "request_welcome") == 0 || strcmp(type, "revoke") == 0))
	{
		/*
		 * A user opening the chat, or deleting a message: recorded, never a
		 * reply (the user answered nothing).
		 */
		add_event(in, emit(in, type, id, NULL, RE_RES_RECORDED, NULL),
				  strcmp(type, "revoke") == 0 ? "message_revoked" : "welcome_request",
				  id, get_string(get_container(c, "context", false), "id"), sender,
				  NULL, NULL, u.at, c);
		return;
	}
	u.status = RE_ST_REPLIED;
	u.source = "webhook";

	if (whatsapp)
		context_id = get_string(get_container(c, "context", false), "id");
	else
		context_id = get_string(c, "context_message_id");
	given_context = context_id;
	if (context_id == NULL)
	{
		Datum		v[4];
		bool		isnull;

		if (from == NULL)
		{
			emit(in, kind, id, "replied", RE_RES_UNMATCHED,
				 "has neither a sender phone (\"from\") nor a context naming the message it answers");
			return;
		}
		if (sender == NULL)
		{
			emit(in, kind, id, "replied", RE_RES_REJECTED,
				 psprintf("sender \"%s\" is not E.164: it %s", clipped(from), phone_problem));
			return;
		}

		/*
		 * The phone's latest recipient, whose message id is looked up now so
		 * the reply takes its lock in message id order too.
		 */
		v[0] = CStringGetTextDatum(in->tenant);
		v[1] = CStringGetTextDatum(sender);
		v[2] = TimestampTzGetDatum(u.at - (int64) re_reply_window_min * USECS_PER_MINUTE);
		v[3] = TimestampTzGetDatum(u.at);
		if (SPI_execute_plan(reply_message_id_plan, v, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up a reply's recipient failed");
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
			{
				context_id = TextDatumGetCString(d);
				looked_up = true;
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	w = add_work(in, emit(in, kind, id, "replied", RE_RES_APPLIED, NULL),
				 context_id ? context_id : sender, context_id == NULL, sender, &u, c);
	w->looked_up = looked_up;
	w->context = given_context;
}

/* Errors WhatsApp reports for the channel itself (value.errors: 130429 rate limit ...) */
static void
ingest_channel_errors(Ingest *in, JsonbContainer *arr)
{
	int			i;

	if (arr == NULL)
		return;
	for (i = 0; i < (int) JsonContainerSize(arr); i++)
	{
		JsonbValue *ev = getIthJsonbValueFromContainer(arr, i);
		JsonbContainer *e = (ev && ev->type == jbvBinary &&
							 JsonContainerIsObject(ev->val.binary.data)) ? ev->val.binary.data : NULL;
		JsonbValue	code;
		char	   *title;
		char	   *detail;

		in->item++;
		if (e == NULL)
		{
			emit(in, "error", NULL, NULL, RE_RES_REJECTED, "is not a JSON object");
			continue;
		}
		title = get_string(e, "title");
		if (title == NULL)
			title = get_string(e, "message");
		if (get_key(e, "code", &code) && code.type == jbvNumeric)
			detail = psprintf("%s %s",
							  DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(code.val.numeric))),
							  title ? title : "");
		else
			detail = title ? title : "an error without code or title";
		add_event(in, emit(in, "error", NULL, NULL, RE_RES_RECORDED, detail),
				  "error", NULL, NULL, NULL, detail, NULL, in->now, e);
	}
}

/* The i-th element of an array if it is an object or an array, else NULL */
static JsonbContainer *
ith_container(JsonbContainer *arr, int i)
{
	JsonbValue *v = getIthJsonbValueFromContainer(arr, i);

	return (v && v->type == jbvBinary) ? v->val.binary.data : NULL;
}

static void
ingest_array(Ingest *in, JsonbContainer *arr, bool statuses, bool whatsapp)
{
	int			i;
	int			n;

	if (arr == NULL)
		return;
	n = JsonContainerSize(arr);
	for (i = 0; i < n; i++)
	{
		JsonbContainer *c = ith_container(arr, i);

		if (statuses)
			ingest_status(in, c, whatsapp ? "id" : "message_id", whatsapp ? "errors" : "error");
		else
			ingest_message(in, c, whatsapp);
	}
}

static void
malformed(const char *provider, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("the callback body for provider \"%s\" is malformed: %s", provider, what)));
}

/*
 * WhatsApp Cloud API:
 *	{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages",
 *	  "value": {"statuses": [...], "messages": [...], "errors": [...]}}]}]}
 */
static void
ingest_whatsapp(Ingest *in, JsonbContainer *root)
{
	JsonbContainer *entries = get_container(root, "entry", true);
	int			i,
				j;

	if (entries == NULL)
		malformed(in->provider, "a WhatsApp callback is an object with an \"entry\" array");
	for (i = 0; i < (int) JsonContainerSize(entries); i++)
	{
		JsonbContainer *changes = get_container(ith_container(entries, i), "changes", true);

		if (changes == NULL)
			malformed(in->provider, "each entry of a WhatsApp callback has a \"changes\" array");
		for (j = 0; j < (int) JsonContainerSize(changes); j++)
		{
			JsonbContainer *value = get_container(ith_container(changes, j), "value", false);

			if (value == NULL)
				malformed(in->provider, "each change of a WhatsApp callback has a \"value\" object");
			ingest_array(in, get_container(value, "statuses", true), true, true);
			ingest_array(in, get_container(value, "messages", true), false, true);
			ingest_channel_errors(in, get_container(value, "errors", true));
		}
	}
}

/*
 * Generic providers (Standard Webhooks): {"statuses": [{"message_id", "status",
 * "timestamp", "error"}], "messages": [{"from", "id", "timestamp",
 * "context_message_id"}]}, or one status object.
 */
static void
ingest_generic(Ingest *in, JsonbContainer *root)
{
	JsonbValue	v;

	if (!JsonContainerIsObject(root))
		malformed(in->provider, "the body must be a JSON object");
	if (get_key(root, "message_id", &v))
	{
		ingest_status(in, root, "message_id", "error");
		return;
	}
	if (!get_key(root, "statuses", &v) && !get_key(root, "messages", &v))
		malformed(in->provider, "expected a \"statuses\" or \"messages\" array, or one status with \"message_id\"");
	if (get_key(root, "statuses", &v) && get_container(root, "statuses", true) == NULL)
		malformed(in->provider, "\"statuses\" must be an array");
	if (get_key(root, "messages", &v) && get_container(root, "messages", true) == NULL)
		malformed(in->provider, "\"messages\" must be an array");
	ingest_array(in, get_container(root, "statuses", true), true, false);
	ingest_array(in, get_container(root, "messages", true), false, false);
}

Datum
re_ingest_status_webhook(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Ingest		in = {0};
	char	   *provider;
	Jsonb	   *headers;
	char	   *body;
	char	   *kind = NULL;
	char	   *secret = NULL;
	Jsonb	   *parsed;
	ReOwnerScope scope;
	Datum		v[2];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider, headers and body must not be null")));
	provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	headers = PG_GETARG_JSONB_P(1);
	body = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object of header names to values")));

	InitMaterializedSRF(fcinfo, 0);
	in.tenant = re_current_tenant_name();
	in.provider = provider;
	in.now = GetCurrentTimestamp();
	in.cxt = CurrentMemoryContext;
	in.budget = (ParkBudget) PARK_BUDGET_INIT(true);

	re_connect_as_owner(&scope);
	prepare_plans();
	v[0] = CStringGetTextDatum(in.tenant);
	v[1] = CStringGetTextDatum(provider);
	if (SPI_execute_plan(channel_plan, v, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading the channel failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("channel \"%s\" does not exist", provider)));
	kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	secret = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	{
		bool		isnull;

		in.channel_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	}
	{
		bool		isnull;
		Datum		map = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);

		if (!isnull && JB_ROOT_COUNT(DatumGetJsonbP(map)) > 0)
			in.status_map = DatumGetJsonbP(map);
	}
	if (kind == NULL || secret == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("channel \"%s\" takes no status callbacks", provider),
				 errhint("Set its webhook kind and secret with revenue_engine.set_channel_status_source().")));

	/* the signature first: nothing of an unverified body is read */
	if (strcmp(kind, "whatsapp") == 0)
		verify_whatsapp(provider, headers, secret, body);
	else
		verify_standard(provider, headers, secret, body);

	parsed = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body)));
	if (strcmp(kind, "whatsapp") == 0)
	{
		if (!JB_ROOT_IS_OBJECT(parsed) || JB_ROOT_IS_SCALAR(parsed))
			malformed(provider, "a WhatsApp callback is a JSON object");
		ingest_whatsapp(&in, &parsed->root);
	}
	else
		ingest_generic(&in, &parsed->root);
	apply_events(&in);
	apply_work(&in);
	output_rows(&in, rsinfo);

	re_disconnect_as_owner(&scope);
	return (Datum) 0;
}

/*
 * Apply, in arrival order, the statuses parked for a message id that has
 * landed on recipient_id (0: on a campaign message), and remove them; the
 * caller holds the id's lock.
 */
static int
unpark(const char *tenant, const char *message_id, int64 recipient_id)
{
	Datum		v[2];
	uint64		i;
	SPITupleTable *parked;
	uint64		nparked;
	bool		isnull;
	Recipient	r;

	v[0] = CStringGetTextDatum(tenant);
	v[1] = CStringGetTextDatum(message_id);
	if (SPI_execute_plan(unpark_plan, v, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading parked statuses failed");
	parked = SPI_tuptable;
	nparked = SPI_processed;
	for (i = 0; i < nparked; i++)
	{
		HeapTuple	pt = parked->vals[i];
		TupleDesc	pd = parked->tupdesc;
		StatusUpdate pu = {0};
		Datum		d;

		pu.status = re_status_from_name(TextDatumGetCString(SPI_getbinval(pt, pd, 1, &isnull)));
		pu.at = DatumGetTimestampTz(SPI_getbinval(pt, pd, 2, &isnull));
		pu.source = TextDatumGetCString(SPI_getbinval(pt, pd, 3, &isnull));
		d = SPI_getbinval(pt, pd, 4, &isnull);
		pu.metadata = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(pt, pd, 5, &isnull);
		pu.error = isnull ? NULL : DatumGetJsonbP(d);
		if (pu.status == RE_ST_UNKNOWN || pu.status == RE_ST_PENDING)
			continue;
		if (recipient_id == 0)
		{
			ReResult	res;

			(void) campaign_status(tenant, message_id, &pu, &res);
		}
		else if (find_by_id(tenant, recipient_id, &r))
			(void) apply_update(tenant, &r, &pu);
	}
	SPI_freetuptable(parked);
	return (int) nparked;
}

/*
 * The sweep: statuses parked longer than revenue_engine.parked_retention
 * are deleted (their id never landed: a message not sent by a blast, most
 * often); those for ids that have landed since are applied (the landing
 * found the id's lock taken by the callback that was parking them).  A busy
 * id waits for the next sweep.  Returns how many statuses were applied.
 */
static int
sweep_parked(void)
{
	SPITupleTable *tt;
	uint64		n;
	uint64		i;
	int			applied = 0;
	Datum		cutoff;

	cutoff = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp() -
								 (int64) re_parked_retention_min * USECS_PER_MINUTE);
	if (SPI_execute_plan(expire_parked_plan, &cutoff, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "deleting expired parked statuses failed");
	if (SPI_processed > 0)
		elog(LOG, "revenue_engine: %lu parked status(es) older than revenue_engine.parked_retention deleted",
			 (unsigned long) SPI_processed);

	if (SPI_execute_plan(landed_parked_plan, &cutoff, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "looking for landed parked statuses failed");
	tt = SPI_tuptable;
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *tenant = TextDatumGetCString(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *message_id = TextDatumGetCString(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		int64		recipient_id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));

		if (lock_message_id(tenant, message_id, true))
			applied += unpark(tenant, message_id, recipient_id);
	}
	SPI_freetuptable(tt);
	return applied;
}

/* SQL: revenue_engine.apply_parked_statuses() */
Datum
re_apply_parked_statuses(PG_FUNCTION_ARGS)
{
	ReOwnerScope scope;
	int			n;

	re_connect_as_owner(&scope);
	prepare_plans();
	n = sweep_parked();
	re_disconnect_as_owner(&scope);
	PG_RETURN_INT32(n);
}

/*
 * SQL: revenue_engine.campaign_message_landed(tenant, message_id), internal:
 * a campaign message's id landed (outcomes.sql's send outcome trigger):
 * the statuses parked for it are applied, or, if a callback parking one
 * holds the id's lock, left to the sweep once both committed.
 */
Datum
re_campaign_message_landed(PG_FUNCTION_ARGS)
{
	char	   *tenant = required_text(fcinfo, 0, "tenant");
	char	   *message_id = required_text(fcinfo, 1, "message_id");
	ReOwnerScope scope;
	int			n = 0;

	re_connect_as_owner(&scope);
	prepare_plans();
	if (lock_message_id(tenant, message_id, true))
		n = unpark(tenant, message_id, 0);
	else
	{
		re_status_sweep_wanted = true;
		re_worker_wake_at_commit();
	}
	re_disconnect_as_owner(&scope);
	PG_RETURN_INT32(n);
}

/* The worker's maintenance (SPI connected, in its transaction) */
void
re_status_sweep(void)
{
	re_status_sweep_wanted = false;
	prepare_plans();
	(void) sweep_parked();
}

/* ---------------------------------------------------------------------------
 * The send's outcome
 * ---------------------------------------------------------------------------
 */

static Datum
column(HeapTuple tup, TupleDesc desc, const char *name, bool *isnull)
{
	int			att = SPI_fnumber(desc, name);

	if (att <= 0)
		elog(ERROR, "sends has no column \"%s\"", name);
	return heap_getattr(tup, att, desc, isnull);
}

/*
 * AFTER UPDATE of sends whose status became sent or failed: the message id
 * and response land on the recipient, which becomes sent (source send) or
 * failed; statuses parked for the id are applied; the blast moves on.
 */
Datum
re_send_outcome_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	bool		isnull;
	char	   *tenant;
	int64		recipient_id;
	int64		blast_id;
	char	   *status;
	Datum		d;
	ReOwnerScope scope;
	Recipient	r;
	StatusUpdate u = {0};
	JsonbParseState *st = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		elog(ERROR, "re_send_outcome_trigger: not called as a row update trigger");
	desc = RelationGetDescr(td->tg_relation);
	tup = td->tg_newtuple;

	tenant = TextDatumGetCString(column(tup, desc, "tenant_id", &isnull));
	d = column(tup, desc, "recipient_id", &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	recipient_id = DatumGetInt64(d);
	d = column(tup, desc, "blast_id", &isnull);
	blast_id = isnull ? 0 : DatumGetInt64(d);
	status = TextDatumGetCString(column(tup, desc, "status", &isnull));

	re_jb_begin(&st);
	re_jb_int(&st, "send_id", DatumGetInt64(column(tup, desc, "id", &isnull)));
	d = column(tup, desc, "response_status", &isnull);
	if (isnull)
		re_jb_null(&st, "response_status");
	else
		re_jb_int(&st, "response_status", DatumGetInt32(d));

	if (strcmp(status, "sent") == 0)
	{
		d = column(tup, desc, "provider_message_id", &isnull);
		u.message_id = isnull ? NULL : TextDatumGetCString(d);
		d = column(tup, desc, "response_body", &isnull);
		if (!isnull)
		{
			char	   *b = TextDatumGetCString(d);

			if (re_is_json(b, strlen(b)))
				u.send_response = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(b)));
		}
		d = column(tup, desc, "sent_at", &isnull);
		u.at = isnull ? GetCurrentTransactionStartTimestamp() : DatumGetTimestampTz(d);
		u.status = RE_ST_SENT;
	}
	else
	{
		d = column(tup, desc, "last_error", &isnull);
		if (isnull)
			re_jb_null(&st, "error");
		else
			re_jb_str(&st, "error", TextDatumGetCString(d));
		u.status = RE_ST_FAILED;
		u.at = GetCurrentTimestamp();
	}
	u.metadata = re_jb_end(&st);
	u.source = "send";
	if (u.status == RE_ST_FAILED)
		u.error = u.metadata;

	re_connect_as_owner(&scope);
	prepare_plans();
	if (find_by_id(tenant, recipient_id, &r))
	{
		(void) apply_update(tenant, &r, &u);
		if (u.message_id != NULL)
		{
			Datum		q[5];

			q[0] = CStringGetTextDatum(tenant);
			q[1] = Int64GetDatum(recipient_id);
			q[2] = CStringGetTextDatum(u.message_id);
			q[3] = TimestampTzGetDatum(u.at);
			q[4] = column(tup, desc, "channel_id", &isnull);
			if (SPI_execute_plan(poll_queue_plan, q, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "queueing status polls failed");
		}
		/* statuses that came first; if a callback holds the id's lock, the sweep applies them */
		if (u.message_id != NULL)
		{
			if (lock_message_id(tenant, u.message_id, true))
				(void) unpark(tenant, u.message_id, recipient_id);
			else
			{
				/* whichever session lands the id: the worker sweeps once we commit */
				re_status_sweep_wanted = true;
				re_worker_wake_at_commit();
			}
		}
	}
	if (blast_id != 0)
	{
		Datum		v[3];

		v[0] = CStringGetTextDatum(tenant);
		v[1] = Int64GetDatum(blast_id);
		v[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		if (SPI_execute_plan(progress_plan, v, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating the blast's progress failed");
	}
	re_disconnect_as_owner(&scope);
	return PointerGetDatum(NULL);
}

void
re_status_polled(const char *tenant, const char *message_id, const char *status, Jsonb *raw)
{
	StatusUpdate u = {0};
	Recipient	r;

	u.status = provider_status(status);
	if (u.status == RE_ST_UNKNOWN || u.status == RE_ST_PENDING)
		return;
	u.at = GetCurrentTimestamp();
	u.source = "polling";
	u.metadata = raw;
	if (u.status == RE_ST_FAILED)
		u.error = raw;
	prepare_plans();
	if (find_by_message(tenant, message_id, &r))
		(void) apply_update(tenant, &r, &u);
	else
	{
		ReResult	res;

		(void) campaign_status(tenant, message_id, &u, &res);
	}
}


/* ---------------------------------------------------------------------------
 * Settings
 * ---------------------------------------------------------------------------
 */

/* Called by _PG_init: the module's settings. */
void
re_status_init(void)
{
	DefineCustomIntVariable("revenue_engine.parked_retention",
							"How long a status for a message id no recipient carries stays parked.",
							"The worker's sweep deletes older ones: statuses of messages not sent by a blast never land.",
							&re_parked_retention_min,
							24 * 60, 1, 366 * 24 * 60,
							PGC_SUSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);
	DefineCustomIntVariable("revenue_engine.parked_max_per_tenant",
							"Most statuses one tenant may have parked; more are rejected on their rows.",
							NULL,
							&re_parked_max_per_tenant,
							100000, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("revenue_engine.parked_max_per_callback",
							"Most statuses one callback may park; more are rejected on their rows.",
							NULL,
							&re_parked_max_per_callback,
							1000, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
}
