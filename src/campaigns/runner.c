/*-------------------------------------------------------------------------
 *
 * runner.c
 *	  The worker's job kind "campaign steps" (issue 12): due enrollments are
 *	  claimed per tenant with FOR UPDATE SKIP LOCKED and run in one short
 *	  transaction per batch.  A send step re-checks consent (the consent row
 *	  FOR SHARE SKIP LOCKED), the send window and quiet hours in the
 *	  contact's zone, WhatsApp's 24-hour window, the frequency cap (the
 *	  contact_frequency row locked) and the channel's rate limit (a token
 *	  bucket per tenant and channel in this process), renders the template
 *	  (re_render_contact: render_for_send's code, called from C with the
 *	  contact the claim read) and queues the send with the key
 *	  'campaign:<enrollment>:<step>'; immediate steps that follow run in the
 *	  same go until a wait.
 *
 * Race-freedom with stop conditions (reply, opt-out, exit rules, manual
 * exit): every stop locks the enrollment row (UPDATE) and cancels its queued
 * sends.  The claim here locks the same row, SKIP LOCKED, and re-reads it:
 * a stop that committed first leaves status <> 'active' and the row is not
 * claimed; a stop that comes later waits for this transaction and then
 * cancels the send still queued.  Exit rules are applied by the stop trigger
 * when the event is written, so an event committed before the claim has
 * already ended the enrollment: they are not evaluated again here.
 *
 * Writes are batched: the history rows, the enrollments' new state, the
 * sends and their campaign_messages rows go in one statement each per batch
 * (arrays through unnest); per enrollment there are only the statements a
 * step needs for itself (frequency counter, tag, notify).  A send's render
 * runs no statement once the batch has read its template's row (the first
 * send of each template per batch).  Every statement is a saved plan.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "campaigns/runner.h"
#include "campaigns/schedule.h"
#include "campaigns/template.h"
#include "worker/worker.h"

/* A WhatsApp step deferred for the 24-hour window is looked at again after this. */
#define RE_WHATSAPP_RECHECK_MS (60 * 60 * 1000L)
/* At most this many steps of one enrollment in one go (a loop of instant steps). */
#define RE_MAX_STEPS_IN_GO 64
/* contact_frequency keeps at most this many recent send times. */
#define RE_FREQUENCY_KEEP 64

typedef enum StepKind
{
	STEP_SEND, STEP_WAIT, STEP_WAIT_UNTIL, STEP_WAIT_EVENT, STEP_TAG, STEP_UNTAG,
	STEP_NOTIFY, STEP_EXIT
} StepKind;

typedef struct Step
{
	int			position;
	StepKind	kind;
	char	   *template;
	int			template_version;	/* 0: the latest */
	char	   *outside_window; /* template | defer | skip */
	int			delay_amount;
	ReDelayUnit delay_unit;
	bool		has_at;
	int64		at_time;
	char	   *event_type;
	Interval   *timeout;
	bool		timeout_exit;
	char	   *tag;
	char	   *endpoint;
	Jsonb	   *data;
	char	   *reason;
} Step;

typedef struct Version
{
	int64		campaign_id;
	int			version;
	ReDailySpan window;
	ReDailySpan quiet;
	char	   *fallback_tz;
	int			cap_count;		/* 0: no cap */
	bool		cap_rolling;
	Interval   *cap_window;
	bool		cap_defer;
	Interval   *stale_after;
	Interval   *whatsapp_margin;
	int64		channel_id;		/* 0: none */
	char	   *channel_kind;
	int			rate_limit;
	double		rate_period_s;
	int			nsteps;
	Step	   *steps;
} Version;

typedef enum Consent
{
	CONSENT_REFUSED, CONSENT_ALLOWED, CONSENT_BUSY
} Consent;

typedef struct Enrollment
{
	int64		id;
	int64		campaign_id;
	int64		contact_id;
	int			version;
	int			step;
	TimestampTz started;
	TimestampTz due;
	Jsonb	   *context;
	char	   *purpose;
	char	   *tz;
	char	   *phone;
	char	   *email;
	char	   *external_ref;
	char	   *name;
	Jsonb	   *attributes;
	TimestampTz since;			/* tenure_days counts from here */
	bool		has_inbound;
	TimestampTz inbound;
	Version    *v;
	Consent		consent;
	/* the new state */
	char		status;			/* a(ctive), c(ompleted), e(xited) */
	bool		has_next;
	TimestampTz next;
	char	   *end_reason;
} Enrollment;

/* Columns of a batched statement, as arrays. */
typedef struct Col
{
	Oid			type;
	int16		len;
	bool		byval;
	char		align;
	Datum	   *values;
	bool	   *nulls;
	int			n;
} Col;

#define NHIST 7
#define NUPD 7
#define NSEND 13

typedef struct Batch
{
	const char *tenant;
	TimestampTz now;
	int			size;			/* room in the columns */
	Col			hist[NHIST];	/* enrollment, campaign, version, step, event, reason, detail */
	Col			upd[NUPD];		/* id, step, status, next_run_at, step_started_at, end_reason, ended */
	Col			send[NSEND];	/* channel, key, payload, metadata, enrollment, campaign,
								 * version, step, contact, template_id, template_version, form,
								 * fallback_used */
	DateADT    *holidays;
	int			nholidays;
	ReCampaignBatch *out;
} Batch;

/* Token buckets per tenant and channel, in this process. */
typedef struct BucketKey
{
	char		tenant[64];
	int64		channel_id;
} BucketKey;

typedef struct Bucket
{
	BucketKey	key;
	double		tokens;
	TimestampTz at;
	uint64		batch;			/* the batch that held rows for it last */
	int			held;			/* rows that batch held for a token */
} Bucket;

static uint64 batch_serial = 0;

static HTAB *buckets = NULL;

static SPIPlanPtr scan_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_one_plan = NULL;
static SPIPlanPtr versions_plan = NULL;
static SPIPlanPtr steps_plan = NULL;
static SPIPlanPtr holidays_plan = NULL;
static SPIPlanPtr consent_plan = NULL;
static SPIPlanPtr freq_lock_plan = NULL;
static SPIPlanPtr freq_set_plan = NULL;
static SPIPlanPtr tag_plan = NULL;
static SPIPlanPtr untag_plan = NULL;
static SPIPlanPtr endpoint_plan = NULL;
static SPIPlanPtr event_plan = NULL;
static SPIPlanPtr delivery_plan = NULL;
static SPIPlanPtr hist_plan = NULL;
static SPIPlanPtr upd_plan = NULL;
static SPIPlanPtr send_plan = NULL;
static SPIPlanPtr fail_plan = NULL;

/* Plans */

/*
 * The tenants with scheduled enrollments: a loose index scan of
 * enrollments_due_idx (one probe per tenant), then each tenant's earliest
 * due enrollment of an active campaign (enrollments of paused campaigns are
 * passed over, not run, and do not make the worker wake up).
 */
#define SCAN_SQL \
	"WITH RECURSIVE t(tenant_id) AS (" \
	"  (SELECT e.tenant_id FROM revenue_engine.enrollments e" \
	"    WHERE e.status = 'active' AND e.next_run_at IS NOT NULL" \
	"    ORDER BY e.tenant_id LIMIT 1)" \
	"  UNION ALL" \
	"  SELECT (SELECT e.tenant_id FROM revenue_engine.enrollments e" \
	"           WHERE e.status = 'active' AND e.next_run_at IS NOT NULL AND e.tenant_id > t.tenant_id" \
	"           ORDER BY e.tenant_id LIMIT 1)" \
	"    FROM t WHERE t.tenant_id IS NOT NULL" \
	")" \
	"SELECT t.tenant_id," \
	"       (SELECT e.next_run_at FROM revenue_engine.enrollments e" \
	"         WHERE e.tenant_id = t.tenant_id AND e.status = 'active' AND e.next_run_at IS NOT NULL" \
	"           AND EXISTS (SELECT 1 FROM revenue_engine.campaigns c" \
	"                        WHERE c.tenant_id = e.tenant_id AND c.id = e.campaign_id" \
	"                          AND c.status = 'active')" \
	"         ORDER BY e.next_run_at LIMIT 1)" \
	"  FROM t WHERE t.tenant_id IS NOT NULL"

/*
 * The contact's last inbound message and its user's profile (tenure) by
 * joins (their primary keys: one row at most), not correlated subqueries:
 * Citus routes a FOR UPDATE only when every relation is joined on the tenant
 * (README, "Citus").
 */
#define CLAIM_COLUMNS \
	"SELECT e.id, e.campaign_id, e.contact_id, e.version, e.step, e.step_started_at," \
	"       e.next_run_at, e.context, c.purpose, ct.timezone, ct.phone, ct.email, ct.external_ref," \
	"       i.last_inbound_at, ct.name, ct.attributes, coalesce(p.created_at, ct.created_at)" \
	"  FROM revenue_engine.enrollments e" \
	"  JOIN revenue_engine.campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id" \
	"  JOIN revenue_engine.contacts ct ON ct.tenant_id = e.tenant_id AND ct.id = e.contact_id" \
	"  LEFT JOIN revenue_engine.contact_inbound i" \
	"    ON i.tenant_id = e.tenant_id AND i.contact_id = e.contact_id AND i.channel_id = c.channel_id" \
	"  LEFT JOIN revenue_engine.user_profiles p ON p.tenant_id = ct.tenant_id AND p.user_id = ct.user_id" \
	" WHERE e.tenant_id = $1 AND e.status = 'active' AND e.next_run_at <= $2" \
	"   AND c.status = 'active'"

static void
prepare_plans(void)
{
	/* the last one prepared: an ERROR half-way prepares them all again */
	if (fail_plan != NULL)
		return;

	{
		Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, INT4OID};

		/*
		 * One generic plan each: the claim is an ordered scan of the
		 * tenant's part of enrollments_due_idx whatever its LIMIT; the
		 * batch's other statements take arrays (ROWS FROM unnest, estimated
		 * at a few rows) and probe primary keys.  Planning them for each
		 * batch (mostly one or two enrollments on a worker woken by each
		 * enrolling commit) cost more than running them.
		 */
		claim_plan = re_prepare_saved(CLAIM_COLUMNS
											 " ORDER BY e.next_run_at LIMIT $3"
											 " FOR UPDATE OF e SKIP LOCKED", 3, types);
	}
	{
		Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, INT8OID};

		claim_one_plan = re_prepare_saved(CLAIM_COLUMNS " AND e.id = $3"
										  " FOR UPDATE OF e SKIP LOCKED", 3, types);
	}
	{
		Oid			types[3] = {TEXTOID, INT8ARRAYOID, INT4ARRAYOID};

		versions_plan = re_prepare_saved(
												"SELECT v.campaign_id, v.version, v.window_start, v.window_end, v.quiet_start,"
												"       v.quiet_end, v.fallback_timezone, v.cap_count, v.cap_period = 'rolling',"
												"       v.cap_window, v.cap_action = 'defer', v.stale_after, v.whatsapp_margin,"
												"       ch.id, ch.kind, ch.rate_limit, ch.rate_period = 'minute'"
												"  FROM ROWS FROM (pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::int4[])) k(campaign_id, version)"
												"  JOIN revenue_engine.campaign_versions v"
												"    ON v.tenant_id = $1 AND v.campaign_id = k.campaign_id AND v.version = k.version"
												"  JOIN revenue_engine.campaigns c ON c.tenant_id = $1 AND c.id = k.campaign_id"
												"  LEFT JOIN revenue_engine.channels ch ON ch.tenant_id = $1 AND ch.id = c.channel_id",
												3, types);
		steps_plan = re_prepare_saved(
											 "SELECT s.campaign_id, s.version, s.position, s.kind, s.template, s.template_version,"
											 "       s.outside_window, s.delay_amount, s.delay_unit, s.at_local_time, s.event_type,"
											 "       s.timeout, s.timeout_action = 'exit', s.tag, s.endpoint, s.data, s.reason"
											 "  FROM ROWS FROM (pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::int4[])) k(campaign_id, version)"
											 "  JOIN revenue_engine.campaign_steps s"
											 "    ON s.tenant_id = $1 AND s.campaign_id = k.campaign_id AND s.version = k.version"
											 " ORDER BY s.campaign_id, s.version, s.position",
											 3, types);
	}
	{
		Oid			types[1] = {TEXTOID};

		holidays_plan = re_prepare_saved("SELECT h.day FROM revenue_engine.holidays h"
										 " WHERE h.tenant_id = $1 ORDER BY h.day", 1, types);
	}
	{
		Oid			types[4] = {TEXTOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};

		/*
		 * The consent row FOR SHARE SKIP LOCKED: a stop (opt-out) that holds
		 * it is not waited for; a row we could not lock but that exists is
		 * "busy" and the step waits for the next claim.
		 */
		consent_plan = re_prepare_saved(
											   "SELECT k.i, l.granted,"
											   "       l.granted IS NULL AND EXISTS (SELECT 1 FROM revenue_engine.contact_consents x"
											   "         WHERE x.tenant_id = $1 AND x.contact_id = k.contact_id"
											   "           AND x.channel_kind = k.kind AND x.purpose = k.purpose)"
											   "  FROM ROWS FROM (pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[]))"
											   "       WITH ORDINALITY k(contact_id, kind, purpose, i)"
											   "  LEFT JOIN LATERAL (SELECT x.granted FROM revenue_engine.contact_consents x"
											   "         WHERE x.tenant_id = $1 AND x.contact_id = k.contact_id"
											   "           AND x.channel_kind = k.kind AND x.purpose = k.purpose"
											   "         FOR SHARE SKIP LOCKED) l ON true",
											   4, types);
	}
	{
		Oid			types[3] = {TEXTOID, INT8OID, TEXTOID};
		Oid			set_types[4] = {TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZARRAYOID};

		/* the counter row locked (created if missing) before it is counted */
		freq_lock_plan = re_prepare_saved(
										  "INSERT INTO revenue_engine.contact_frequency AS f (tenant_id, contact_id, channel_kind)"
										  " VALUES ($1, $2, $3)"
										  " ON CONFLICT (tenant_id, contact_id, channel_kind)"
										  " DO UPDATE SET recent = f.recent RETURNING f.recent", 3, types);
		freq_set_plan = re_prepare_saved(
										 "UPDATE revenue_engine.contact_frequency SET recent = $4"
										 " WHERE tenant_id = $1 AND contact_id = $2 AND channel_kind = $3",
										 4, set_types);
	}
	{
		Oid			types[4] = {TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID};

		/* UPDATE of contacts.tags: the tag triggers (enrollment on tag_added) fire */
		tag_plan = re_prepare_saved("UPDATE revenue_engine.contacts SET tags = tags || $3::text, updated_at = $4"
									" WHERE tenant_id = $1 AND id = $2 AND NOT ($3 = ANY (tags))",
									4, types);
		untag_plan = re_prepare_saved("UPDATE revenue_engine.contacts"
									  "   SET tags = pg_catalog.array_remove(tags, $3), updated_at = $4"
									  " WHERE tenant_id = $1 AND id = $2 AND $3 = ANY (tags)",
									  4, types);
	}
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Oid			ev_types[3] = {TEXTOID, TEXTOID, JSONBOID};
		Oid			d_types[3] = {TEXTOID, UUIDOID, INT8OID};

		endpoint_plan = re_prepare_saved("SELECT ep.id FROM revenue_engine.endpoints ep"
										 " WHERE ep.tenant_id = $1 AND ep.name = $2", 2, types);
		/* as the outbox writes an event, but delivered to the named endpoint only */
		event_plan = re_prepare_saved("INSERT INTO revenue_engine.webhook_events (tenant_id, event_type, event_data)"
									  " VALUES ($1, $2, $3) RETURNING id", 3, ev_types);
		delivery_plan = re_prepare_saved("INSERT INTO revenue_engine.deliveries (tenant_id, event_id, endpoint_id)"
										 " VALUES ($1, $2, $3)", 3, d_types);
	}
	{
		Oid			types[2 + NHIST] = {TEXTOID, TIMESTAMPTZOID, INT8ARRAYOID, INT8ARRAYOID,
		INT4ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID};

		hist_plan = re_prepare_saved(
											"INSERT INTO revenue_engine.enrollment_history"
											"   (tenant_id, enrollment_id, campaign_id, version, step, event, reason, detail, at)"
											" SELECT $1, h.e, h.c, h.v, h.s, h.ev, h.r, h.d, $2"
											"   FROM ROWS FROM (pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::int8[]),"
											"          pg_catalog.unnest($5::int4[]), pg_catalog.unnest($6::int4[]), pg_catalog.unnest($7::text[]),"
											"          pg_catalog.unnest($8::text[]), pg_catalog.unnest($9::jsonb[]))"
											"        WITH ORDINALITY h(e, c, v, s, ev, r, d, o)"
											"  ORDER BY h.o", 2 + NHIST, types);
	}
	{
		Oid			types[2 + NUPD] = {TEXTOID, TIMESTAMPTZOID, INT8ARRAYOID, INT4ARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, BOOLARRAYOID};

		upd_plan = re_prepare_saved(
										   "UPDATE revenue_engine.enrollments e"
										   "   SET step = u.step, status = u.status, next_run_at = u.next_run_at,"
										   "       step_started_at = u.started, end_reason = u.end_reason,"
										   "       ended_at = CASE WHEN u.ended THEN $2 END, updated_at = $2"
										   "  FROM ROWS FROM (pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::int4[]),"
										   "       pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::timestamptz[]),"
										   "       pg_catalog.unnest($7::timestamptz[]), pg_catalog.unnest($8::text[]),"
										   "       pg_catalog.unnest($9::bool[]))"
										   "       u(id, step, status, next_run_at, started, end_reason, ended)"
										   " WHERE e.tenant_id = $1 AND e.id = u.id", 2 + NUPD, types);
	}
	{
		Oid			types[2 + NSEND] = {TEXTOID, TIMESTAMPTZOID, INT8ARRAYOID, TEXTARRAYOID,
			JSONBARRAYOID, JSONBARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
		INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, BOOLARRAYOID};

		/*
		 * The sends and their campaign messages in one statement; a key
		 * already used (the step ran before a crash) queues nothing again.
		 */
		send_plan = re_prepare_saved(
											"WITH m AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::text[]),"
											"      pg_catalog.unnest($5::jsonb[]), pg_catalog.unnest($6::jsonb[]), pg_catalog.unnest($7::int8[]),"
											"      pg_catalog.unnest($8::int8[]), pg_catalog.unnest($9::int4[]), pg_catalog.unnest($10::int4[]),"
											"      pg_catalog.unnest($11::int8[]), pg_catalog.unnest($12::int8[]), pg_catalog.unnest($13::int4[]),"
											"      pg_catalog.unnest($14::text[]), pg_catalog.unnest($15::bool[]))"
											"           WITH ORDINALITY m(channel_id, key, payload, metadata, enrollment_id,"
											"                campaign_id, version, step, contact_id, template_id, template_version, form,"
											"                fallback_used, o)),"
											" s AS (INSERT INTO revenue_engine.sends"
											"          (tenant_id, channel_id, idempotency_key, payload, metadata,"
											"           scheduled_for, next_attempt_at)"
											"       SELECT $1, m.channel_id, m.key, m.payload, m.metadata, $2, $2 FROM m ORDER BY m.o"
											"       ON CONFLICT (tenant_id, channel_id, idempotency_key) DO NOTHING"
											"       RETURNING id, channel_id, idempotency_key)"
											" INSERT INTO revenue_engine.campaign_messages"
											"   (tenant_id, send_id, enrollment_id, campaign_id, version, step, contact_id,"
											"    channel_id, template_id, template_version, form, fallback_used, created_at)"
											" SELECT $1, s.id, m.enrollment_id, m.campaign_id, m.version, m.step, m.contact_id,"
											"        m.channel_id, m.template_id, m.template_version, m.form, m.fallback_used, $2"
											"   FROM s JOIN m ON m.channel_id = s.channel_id AND m.key = s.idempotency_key"
											" ON CONFLICT DO NOTHING", 2 + NSEND, types);
	}
	{
		Oid			types[4] = {TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID};

		fail_plan = re_prepare_saved(
									 "WITH e AS (UPDATE revenue_engine.enrollments e"
									 "             SET next_run_at = $4 + '" RE_CAMPAIGN_RETRY_INTERVAL "'::interval,"
									 "                 updated_at = $4"
									 "           WHERE e.tenant_id = $1 AND e.id = $2 AND e.status = 'active'"
									 "           RETURNING e.id, e.campaign_id, e.version, e.step)"
									 " INSERT INTO revenue_engine.enrollment_history"
									 "   (tenant_id, enrollment_id, campaign_id, version, step, event, reason, at)"
									 " SELECT $1, e.id, e.campaign_id, e.version, e.step, 'failed', $3, $4 FROM e",
									 4, types);
	}
}

/* Columns */

static void
col_init(Col *c, Oid type, int size)
{
	c->type = type;
	get_typlenbyvalalign(type, &c->len, &c->byval, &c->align);
	c->values = palloc(sizeof(Datum) * size);
	c->nulls = palloc(sizeof(bool) * size);
	c->n = 0;
}

static void
col_grow(Col *cols, int ncols, int size)
{
	int			i;

	for (i = 0; i < ncols; i++)
	{
		cols[i].values = repalloc(cols[i].values, sizeof(Datum) * size);
		cols[i].nulls = repalloc(cols[i].nulls, sizeof(bool) * size);
	}
}

static void
col_add(Col *c, Datum value, bool isnull)
{
	c->values[c->n] = isnull ? (Datum) 0 : value;
	c->nulls[c->n] = isnull;
	c->n++;
}

static Datum
col_array(Col *c)
{
	int			dims[1] = {c->n};
	int			lbs[1] = {1};

	return PointerGetDatum(construct_md_array(c->values, c->nulls, 1, dims, lbs,
											  c->type, c->len, c->byval, c->align));
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

static void
ensure_room(Batch *b, Col *cols, int ncols)
{
	if (cols[0].n < b->size)
		return;
	b->size *= 2;
	col_grow(b->hist, NHIST, b->size);
	col_grow(b->upd, NUPD, b->size);
	col_grow(b->send, NSEND, b->size);
	(void) ncols;
}

/* A history row (detail may be NULL). */
static void
history(Batch *b, Enrollment *e, int step, const char *event, const char *reason, Jsonb *detail)
{
	bool		isnull;

	ensure_room(b, b->hist, NHIST);
	col_add(&b->hist[0], Int64GetDatum(e->id), false);
	col_add(&b->hist[1], Int64GetDatum(e->campaign_id), false);
	col_add(&b->hist[2], Int32GetDatum(e->version), false);
	col_add(&b->hist[3], Int32GetDatum(step), step <= 0);
	col_add(&b->hist[4], CStringGetTextDatum(event), false);
	{
		Datum		r = text_or_null(reason, &isnull);

		col_add(&b->hist[5], r, isnull);
	}
	col_add(&b->hist[6], JsonbPGetDatum(detail), detail == NULL);
}

static Jsonb *
detail_at(const char *key, TimestampTz at)
{
	JsonbParseState *state = NULL;

	re_jb_begin(&state);
	re_jb_timestamptz(&state, key, at);
	return re_jb_end(&state);
}

/* Time */

static TimestampTz
ts_plus(TimestampTz t, Interval *i)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(t), IntervalPGetDatum(i)));
}

static TimestampTz
ts_minus(TimestampTz t, Interval *i)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
												   TimestampTzGetDatum(t), IntervalPGetDatum(i)));
}

static pg_tz *
contact_zone(Enrollment *e)
{
	return re_lookup_timezone(e->tz ? e->tz : e->v->fallback_tz);
}

/* A schedule in the contact's zone with the version's window and quiet hours. */
static void
base_schedule(Batch *b, Enrollment *e, ReSendSchedule *s, bool with_window)
{
	memset(s, 0, sizeof(*s));
	s->delay = 0;
	s->unit = RE_DELAY_MINUTES;
	s->tz = contact_zone(e);
	if (with_window)
	{
		s->window = e->v->window;
		s->quiet = e->v->quiet;
	}
	s->holidays = b->holidays;
	s->nholidays = b->nholidays;
}

static char *
ts_text(TimestampTz t)
{
	return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(t)));
}

/* Loading the batch's versions, steps, holidays and consents */

static Interval *
get_interval(HeapTuple tup, TupleDesc desc, int col)
{
	Interval   *i;
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		return NULL;
	i = palloc(sizeof(Interval));
	memcpy(i, DatumGetIntervalP(d), sizeof(Interval));
	return i;
}

static char *
get_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static ReDailySpan
get_span(HeapTuple tup, TupleDesc desc, int col)
{
	ReDailySpan span = {false, 0, 0};
	bool		n1,
				n2;
	Datum		a = SPI_getbinval(tup, desc, col, &n1);
	Datum		z = SPI_getbinval(tup, desc, col + 1, &n2);

	if (!n1 && !n2)
	{
		span.set = true;
		span.start = DatumGetTimeADT(a) % USECS_PER_DAY;
		span.end = DatumGetTimeADT(z) % USECS_PER_DAY;
	}
	return span;
}

static StepKind
parse_kind(const char *kind)
{
	static const char *const names[] = {"send", "wait", "wait_until", "wait_event", "tag",
	"untag", "notify", "exit"};
	int			i;

	for (i = 0; i < lengthof(names); i++)
		if (strcmp(kind, names[i]) == 0)
			return (StepKind) i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown campaign step kind \"%s\"", kind)));
	return STEP_EXIT;
}

static Version **
load_versions(Batch *b, Enrollment *es, int n, int *nversions)
{
	Datum	   *cids = palloc(sizeof(Datum) * n);
	Datum	   *vers = palloc(sizeof(Datum) * n);
	Version   **vs = palloc(sizeof(Version *) * n);
	Datum		values[3];
	int			nv = 0;
	int			i,
				k;
	uint64		r;

	/* the distinct (campaign, version) pairs */
	for (i = 0; i < n; i++)
	{
		for (k = 0; k < nv; k++)
			if (DatumGetInt64(cids[k]) == es[i].campaign_id && DatumGetInt32(vers[k]) == es[i].version)
				break;
		if (k == nv)
		{
			cids[nv] = Int64GetDatum(es[i].campaign_id);
			vers[nv] = Int32GetDatum(es[i].version);
			vs[nv] = NULL;
			nv++;
		}
	}
	values[0] = CStringGetTextDatum(b->tenant);
	values[1] = PointerGetDatum(construct_array(cids, nv, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = PointerGetDatum(construct_array(vers, nv, INT4OID, 4, true, TYPALIGN_INT));
	if (SPI_execute_plan(versions_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "loading campaign versions failed");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Version    *v = palloc0(sizeof(Version));
		bool		isnull;
		Datum		d;

		v->campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		v->version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		v->window = get_span(tup, desc, 3);
		v->quiet = get_span(tup, desc, 5);
		v->fallback_tz = get_text(tup, desc, 7);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		v->cap_count = isnull ? 0 : DatumGetInt32(d);
		d = SPI_getbinval(tup, desc, 9, &isnull);
		v->cap_rolling = !isnull && DatumGetBool(d);
		v->cap_window = get_interval(tup, desc, 10);
		d = SPI_getbinval(tup, desc, 11, &isnull);
		v->cap_defer = !isnull && DatumGetBool(d);
		v->stale_after = get_interval(tup, desc, 12);
		v->whatsapp_margin = get_interval(tup, desc, 13);
		d = SPI_getbinval(tup, desc, 14, &isnull);
		v->channel_id = isnull ? 0 : DatumGetInt64(d);
		v->channel_kind = get_text(tup, desc, 15);
		d = SPI_getbinval(tup, desc, 16, &isnull);
		v->rate_limit = isnull ? 0 : DatumGetInt32(d);
		d = SPI_getbinval(tup, desc, 17, &isnull);
		v->rate_period_s = (!isnull && DatumGetBool(d)) ? 60.0 : 1.0;
		v->steps = palloc0(sizeof(Step) * 4);
		for (k = 0; k < nv; k++)
			if (DatumGetInt64(cids[k]) == v->campaign_id && DatumGetInt32(vers[k]) == v->version)
				vs[k] = v;
	}

	/* their steps, in order */
	if (SPI_execute_plan(steps_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "loading campaign steps failed");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		cid = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int			ver = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		Version    *v = NULL;
		Step	   *s;
		Datum		d;
		char	   *unit;

		for (k = 0; k < nv; k++)
			if (vs[k] && vs[k]->campaign_id == cid && vs[k]->version == ver)
				v = vs[k];
		if (v == NULL)
			continue;
		if (v->nsteps >= 4 && (v->nsteps & (v->nsteps - 1)) == 0)
			v->steps = repalloc(v->steps, sizeof(Step) * v->nsteps * 2);
		s = &v->steps[v->nsteps++];
		memset(s, 0, sizeof(Step));
		s->position = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		s->kind = parse_kind(get_text(tup, desc, 4));
		s->template = get_text(tup, desc, 5);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		s->template_version = isnull ? 0 : DatumGetInt32(d);
		s->outside_window = get_text(tup, desc, 7);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		s->delay_amount = isnull ? 0 : DatumGetInt32(d);
		unit = get_text(tup, desc, 9);
		s->delay_unit = unit ? re_parse_delay_unit(unit) : RE_DELAY_MINUTES;
		d = SPI_getbinval(tup, desc, 10, &isnull);
		s->has_at = !isnull;
		s->at_time = isnull ? 0 : DatumGetTimeADT(d) % USECS_PER_DAY;
		s->event_type = get_text(tup, desc, 11);
		s->timeout = get_interval(tup, desc, 12);
		d = SPI_getbinval(tup, desc, 13, &isnull);
		s->timeout_exit = !isnull && DatumGetBool(d);
		s->tag = get_text(tup, desc, 14);
		s->endpoint = get_text(tup, desc, 15);
		d = SPI_getbinval(tup, desc, 16, &isnull);
		s->data = isnull ? NULL : DatumGetJsonbPCopy(d);
		s->reason = get_text(tup, desc, 17);
	}
	*nversions = nv;
	for (i = 0; i < n; i++)
		for (k = 0; k < nv; k++)
			if (vs[k] && vs[k]->campaign_id == es[i].campaign_id && vs[k]->version == es[i].version)
				es[i].v = vs[k];
	return vs;
}

static void
load_holidays(Batch *b)
{
	Datum		values[1] = {CStringGetTextDatum(b->tenant)};
	uint64		r;

	if (SPI_execute_plan(holidays_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "loading holidays failed");
	b->nholidays = (int) SPI_processed;
	b->holidays = palloc(sizeof(DateADT) * Max(b->nholidays, 1));
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		b->holidays[r] = DatumGetDateADT(SPI_getbinval(SPI_tuptable->vals[r],
													   SPI_tuptable->tupdesc, 1, &isnull));
	}
}

/* Consent of each enrollment's contact for its campaign's channel kind and purpose. */
static void
load_consents(Batch *b, Enrollment *es, int n)
{
	Datum	   *contacts = palloc(sizeof(Datum) * n);
	Datum	   *kinds = palloc(sizeof(Datum) * n);
	Datum	   *purposes = palloc(sizeof(Datum) * n);
	int		   *which = palloc(sizeof(int) * n);
	Datum		values[4];
	int			m = 0;
	int			i;
	uint64		r;

	for (i = 0; i < n; i++)
	{
		es[i].consent = CONSENT_REFUSED;
		if (es[i].v == NULL || es[i].v->channel_kind == NULL)
			continue;
		contacts[m] = Int64GetDatum(es[i].contact_id);
		kinds[m] = CStringGetTextDatum(es[i].v->channel_kind);
		purposes[m] = CStringGetTextDatum(es[i].purpose);
		which[m++] = i;
	}
	if (m == 0)
		return;
	values[0] = CStringGetTextDatum(b->tenant);
	values[1] = PointerGetDatum(construct_array(contacts, m, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = PointerGetDatum(construct_array(kinds, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(purposes, m, TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_plan(consent_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading consents failed");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			k = (int) DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)) - 1;
		Datum		granted = SPI_getbinval(tup, desc, 2, &isnull);
		Enrollment *e = &es[which[k]];

		if (!isnull)
			e->consent = DatumGetBool(granted) ? CONSENT_ALLOWED : CONSENT_REFUSED;
		else if (DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			e->consent = CONSENT_BUSY;
		else					/* no row: marketing is opt-in, transactional allowed */
			e->consent = strcmp(e->purpose, "transactional") == 0 ? CONSENT_ALLOWED : CONSENT_REFUSED;
	}
}

/* Token buckets */

static Bucket *
bucket_for(Batch *b, Version *v)
{
	BucketKey	key;
	Bucket	   *bk;
	bool		found;
	TimestampTz now = GetCurrentTimestamp();

	if (v->rate_limit <= 0)
		return NULL;
	if (buckets == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(BucketKey);
		ctl.entrysize = sizeof(Bucket);
		ctl.hcxt = TopMemoryContext;
		buckets = hash_create("revenue_engine campaign buckets", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	strlcpy(key.tenant, b->tenant, sizeof(key.tenant));
	key.channel_id = v->channel_id;
	bk = hash_search(buckets, &key, HASH_ENTER, &found);
	if (!found)
	{
		bk->tokens = v->rate_limit;
		bk->at = now;
	}
	else
	{
		double		per_token_s = v->rate_period_s / v->rate_limit;

		bk->tokens = Min((double) v->rate_limit,
						 bk->tokens + (now - bk->at) / 1e6 / per_token_s);
		bk->at = now;
	}
	return bk;
}

/* Steps */

static Step *
find_step(Version *v, int position)
{
	int			i;

	for (i = 0; i < v->nsteps; i++)
		if (v->steps[i].position >= position)
			return &v->steps[i];
	return NULL;
}

static int
next_position(Version *v, Step *s)
{
	int			i;

	for (i = 0; i < v->nsteps; i++)
		if (v->steps[i].position > s->position)
			return v->steps[i].position;
	return s->position + 1;
}

typedef enum SendResult
{
	SEND_QUEUED, SEND_SKIPPED, SEND_DEFERRED, SEND_HELD,
	SEND_THROTTLED				/* no token: due again at its turn (*defer_to) */
} SendResult;

static const char *
contact_address(Enrollment *e)
{
	const char *kind = e->v->channel_kind;

	if (strcmp(kind, "whatsapp") == 0 || strcmp(kind, "sms") == 0)
		return e->phone;
	if (strcmp(kind, "email") == 0)
		return e->email;
	return e->external_ref;
}

/*
 * The frequency cap: lock the counter row, count the recent sends in the
 * period; under the cap, add now.  Returns true when the send may go; else
 * *defer_to is when it may (0: skip).
 */
static bool
frequency_allows(Batch *b, Enrollment *e, TimestampTz *defer_to)
{
	Version    *v = e->v;
	Datum		values[4];
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				count = 0,
				keep = 0;
	bool		isnull;
	ArrayType  *arr;
	TimestampTz *in_period;
	Datum	   *kept;
	TimestampTz now = b->now;
	TimestampTz horizon;
	pg_tz	   *tz = contact_zone(e);
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	int			today;

	values[0] = CStringGetTextDatum(b->tenant);
	values[1] = Int64GetDatum(e->contact_id);
	values[2] = CStringGetTextDatum(v->channel_kind);
	if (SPI_execute_plan(freq_lock_plan, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "locking the frequency counter failed");
	arr = DatumGetArrayTypePCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	deconstruct_array(arr, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);

	timestamp2tm(now, &tzoff, &tm, &fsec, NULL, tz);
	today = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	in_period = palloc(sizeof(TimestampTz) * (n + 1));
	for (i = 0; i < n; i++)
	{
		TimestampTz t = DatumGetTimestampTz(elems[i]);
		bool		counts;

		if (nulls[i] || t > now)
			continue;
		if (v->cap_rolling)
			counts = t > ts_minus(now, v->cap_window);
		else
		{
			timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz);
			counts = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) == today;
		}
		if (counts)
			in_period[count++] = t;
	}
	if (count >= v->cap_count)
	{
		*defer_to = 0;
		if (v->cap_defer)
		{
			if (v->cap_rolling)
			{
				/* ascending: the send that leaves the window first makes room */
				TimestampTz earliest = in_period[0];

				for (i = 1; i < count; i++)
				{
					int			j;
					TimestampTz x = in_period[i];

					for (j = i - 1; j >= 0 && in_period[j] > x; j--)
						in_period[j + 1] = in_period[j];
					in_period[j + 1] = x;
				}
				earliest = in_period[count - v->cap_count];
				*defer_to = ts_plus(earliest, v->cap_window);
			}
			else
			{
				ReSendSchedule s;

				/* the next local midnight, then the window */
				base_schedule(b, e, &s, true);
				s.has_at_time = true;
				s.at_time = 0;
				*defer_to = re_next_send_time(now, &s);
			}
			/* within the window and quiet hours */
			{
				ReSendSchedule s;

				base_schedule(b, e, &s, true);
				*defer_to = re_next_send_time(*defer_to, &s);
			}
		}
		return false;
	}

	/* keep the recent ones (a month at most) and add now */
	{
		Interval	month = {0, 31, 0};

		horizon = ts_minus(now, &month);
	}
	kept = palloc(sizeof(Datum) * (n + 1));
	for (i = Max(0, n - (RE_FREQUENCY_KEEP - 1)); i < n; i++)
		if (!nulls[i] && DatumGetTimestampTz(elems[i]) > horizon)
			kept[keep++] = elems[i];
	kept[keep++] = TimestampTzGetDatum(now);
	values[3] = PointerGetDatum(construct_array(kept, keep, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	if (SPI_execute_plan(freq_set_plan, values, NULL, false, 1) != SPI_OK_UPDATE)
		elog(ERROR, "updating the frequency counter failed");
	return true;
}

/* A string member of a JSON object, or NULL. */
static char *
jb_member_text(Jsonb *jb, const char *key)
{
	JsonbValue *v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * WhatsApp Cloud API's "template" object from a rendered WhatsApp form
 * {"name", "language", "params": [...]} (template.c): {"name", "language":
 * {"code"}, "components": [{"type": "body", "parameters": [{"type": "text",
 * "text"} ...]}]}.  The one builder of that shape: the runner's sends and
 * revenue_engine.whatsapp_template_payload() (the 131047 remedy) use it.
 */
static void
push_whatsapp_template(JsonbParseState **st, Jsonb *wa)
{
	char	   *name = jb_member_text(wa, "name");
	char	   *language = jb_member_text(wa, "language");
	JsonbValue *params = NULL;
	int			n = 0;
	int			i;

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the WhatsApp form has no template name"),
				 errhint("A template's whatsapp form is {\"name\": ..., \"language\": ..., \"params\": [...]}.")));
	if (JB_ROOT_IS_OBJECT(wa))
		params = getKeyJsonValueFromContainer(&wa->root, "params", 6, NULL);
	if (params != NULL && params->type == jbvBinary &&
		JsonContainerIsArray(params->val.binary.data))
		n = JsonContainerSize(params->val.binary.data);
	re_jb_key(st, "template");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	re_jb_str(st, "name", name);
	re_jb_key(st, "language");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	re_jb_str(st, "code", language ? language : "en_US");
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
	if (n > 0)
	{
		re_jb_key(st, "components");
		pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
		pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
		re_jb_str(st, "type", "body");
		re_jb_key(st, "parameters");
		pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
		for (i = 0; i < n; i++)
		{
			JsonbValue *p = getIthJsonbValueFromContainer(params->val.binary.data, i);
			char	   *text;

			if (p->type == jbvString)
				text = pnstrdup(p->val.string.val, p->val.string.len);
			else if (p->type == jbvNumeric)
				text = DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(p->val.numeric)));
			else
				text = "";
			pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
			re_jb_str(st, "type", "text");
			re_jb_str(st, "text", text);
			pushJsonbValue(st, WJB_END_OBJECT, NULL);
		}
		pushJsonbValue(st, WJB_END_ARRAY, NULL);
		pushJsonbValue(st, WJB_END_OBJECT, NULL);
		pushJsonbValue(st, WJB_END_ARRAY, NULL);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/* {"to", "type": "template", "template": {...}}: a WhatsApp template message. */
static Jsonb *
whatsapp_template_message(const char *to, Jsonb *wa)
{
	JsonbParseState *st = NULL;

	re_jb_begin(&st);
	re_jb_str(&st, "to", to);
	re_jb_str(&st, "type", "template");
	push_whatsapp_template(&st, wa);
	return re_jb_end(&st);
}

/*
 * The send's payload: WhatsApp's template form; WhatsApp text, whose
 * call-to-action URL ends the body (with a link preview: the Cloud API's
 * text message has no separate URL); or the text and the call-to-action
 * URL as members for the other channels (their body template places them).
 */
static Jsonb *
send_payload(const char *channel_kind, const char *form, const char *address, ReRendered *r)
{
	JsonbParseState *st = NULL;

	if (strcmp(channel_kind, "whatsapp") == 0 && strcmp(form, "whatsapp_template") == 0)
		return whatsapp_template_message(address, r->whatsapp);
	re_jb_begin(&st);
	re_jb_str(&st, "to", address);
	if (strcmp(channel_kind, "whatsapp") == 0)
	{
		re_jb_str(&st, "type", "text");
		re_jb_key(&st, "text");
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		if (r->cta_url)
		{
			re_jb_str(&st, "body", psprintf("%s\n%s", r->text ? r->text : "", r->cta_url));
			re_jb_bool(&st, "preview_url", true);
		}
		else if (r->text)
			re_jb_str(&st, "body", r->text);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		return re_jb_end(&st);
	}
	if (r->text)
		re_jb_str(&st, "text", r->text);
	if (r->cta_url)
		re_jb_str(&st, "cta_url", r->cta_url);
	return re_jb_end(&st);
}

/*
 * SQL: revenue_engine.whatsapp_template_payload(phone text, whatsapp jsonb)
 * The WhatsApp Cloud API body of a template message (outcomes.sql's 131047
 * remedy), with the runner's builder.
 */
PG_FUNCTION_INFO_V1(re_whatsapp_template_payload);
Datum
re_whatsapp_template_payload(PG_FUNCTION_ARGS)
{
	re_require_arg(fcinfo, 0, "phone");
	re_require_arg(fcinfo, 1, "whatsapp");
	PG_RETURN_JSONB_P(whatsapp_template_message(text_to_cstring(PG_GETARG_TEXT_PP(0)),
												PG_GETARG_JSONB_P(1)));
}

static SendResult
run_send(Batch *b, Enrollment *e, Step *s, bool claimed_step, TimestampTz *defer_to,
		 char **reason)
{
	Version    *v = e->v;
	ReSendSchedule sched;
	TimestampTz open;
	const char *form = "text";
	const char *address;
	bool		whatsapp;
	bool		transactional = strcmp(e->purpose, "transactional") == 0;
	Bucket	   *bucket;
	char	   *key;
	Datum		template_id;
	Datum		template_version;
	bool		fallback_used;
	char	   *rendered_form;
	Datum		payload;
	Jsonb	   *detail;
	JsonbParseState *state = NULL;

	*defer_to = 0;
	if (v->channel_id == 0 || v->channel_kind == NULL)
	{
		*reason = "the campaign has no channel";
		return SEND_SKIPPED;
	}
	whatsapp = strcmp(v->channel_kind, "whatsapp") == 0;

	/* late after a pause (or an outage): skipped with the reason */
	if (claimed_step && v->stale_after != NULL && ts_plus(e->due, v->stale_after) < b->now)
	{
		*reason = psprintf("stale: due at %s, more than stale_after late", ts_text(e->due));
		return SEND_SKIPPED;
	}
	if (e->consent == CONSENT_BUSY)
		return SEND_HELD;
	if (e->consent == CONSENT_REFUSED)
	{
		*reason = psprintf("no consent for %s %s", v->channel_kind, e->purpose);
		return SEND_SKIPPED;
	}
	address = contact_address(e);
	if (address == NULL)
	{
		*reason = psprintf("the contact has no %s", strcmp(v->channel_kind, "email") == 0 ?
						   "e-mail address" : "phone number");
		return SEND_SKIPPED;
	}

	/* the send window and quiet hours, in the contact's zone */
	base_schedule(b, e, &sched, true);
	open = re_next_send_time(b->now, &sched);
	if (open > b->now)
	{
		ReSendSchedule w;

		base_schedule(b, e, &w, false);
		w.window = v->window;
		*reason = re_next_send_time(b->now, &w) > b->now ? "send window closed" : "quiet hours";
		*defer_to = open;
		return SEND_DEFERRED;
	}

	/* WhatsApp: free text only within 24 hours (less the margin) of the last inbound */
	if (whatsapp)
	{
		Interval	day = {USECS_PER_DAY, 0, 0};
		bool		open_window = false;

		if (e->has_inbound)
		{
			TimestampTz closes = ts_plus(e->inbound, &day);

			if (v->whatsapp_margin != NULL)
				closes = ts_minus(closes, v->whatsapp_margin);
			open_window = closes > b->now;
		}
		if (!open_window)
		{
			const char *what = s->outside_window ? s->outside_window : "template";

			if (strcmp(what, "skip") == 0)
			{
				*reason = "outside the WhatsApp 24-hour window";
				return SEND_SKIPPED;
			}
			if (strcmp(what, "defer") == 0)
			{
				*reason = "outside the WhatsApp 24-hour window";
				*defer_to = TimestampTzPlusMilliseconds(b->now, RE_WHATSAPP_RECHECK_MS);
				return SEND_DEFERRED;
			}
			form = "whatsapp_template";
		}
	}

	/*
	 * The channel's rate limit: without a token the step is due again at its
	 * turn in the bucket (the rows held in one batch one token apart), so
	 * that the tenant's steps of other channels behind it are claimed
	 * meanwhile.  No history row: it is not a deferral of the schedule.
	 */
	bucket = bucket_for(b, v);
	if (bucket != NULL && bucket->tokens < 1.0)
	{
		double		per_token_s = v->rate_period_s / v->rate_limit;
		TimestampTz due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  (int64) ((1.0 - bucket->tokens) *
															   per_token_s * 1000) + 1);

		if (b->out->token_due == 0 || due < b->out->token_due)
			b->out->token_due = due;
		if (bucket->batch != batch_serial)
		{
			bucket->batch = batch_serial;
			bucket->held = 0;
		}
		*defer_to = TimestampTzPlusMilliseconds(b->now,
												(int64) ((1.0 - bucket->tokens + bucket->held) *
														 per_token_s * 1000) + 1);
		bucket->held++;
		return SEND_THROTTLED;
	}

	/* render (template.c, in this SPI connection; the template read once a batch) */
	{
		ReRenderContact c;
		ReRendered	r;

		c.name = e->name;
		c.phone = e->phone;
		c.email = e->email;
		c.external_ref = e->external_ref;
		c.timezone = e->tz;
		c.attributes = e->attributes;
		c.since = e->since;
		re_render_contact(b->tenant, s->template ? s->template : "", s->template_version,
						  &c, e->context, form, &r);
		if (r.skipped)
		{
			*reason = r.reason ? r.reason : "the template could not be rendered";
			return SEND_SKIPPED;
		}
		template_id = Int64GetDatum(r.template_id);
		template_version = Int32GetDatum(r.version);
		fallback_used = r.fallback_used;
		rendered_form = (char *) form;
		payload = JsonbPGetDatum(send_payload(v->channel_kind, form, address, &r));
		re_jb_begin(&state);
		re_jb_str(&state, "template", r.template_name);
		re_jb_int(&state, "version", r.version);
		re_jb_str(&state, "form", form);
		re_jb_bool(&state, "fallback_used", r.fallback_used);
		detail = re_jb_end(&state);
		state = NULL;
	}

	/* the frequency cap (transactional messages bypass it, never consent) */
	if (!transactional && v->cap_count > 0 && !frequency_allows(b, e, defer_to))
	{
		*reason = "frequency cap";
		return *defer_to != 0 ? SEND_DEFERRED : SEND_SKIPPED;
	}

	/* queue it (the statement runs for the whole batch) */
	ensure_room(b, b->send, NSEND);
	key = psprintf("campaign:" INT64_FORMAT ":%d", e->id, s->position);
	re_jb_begin(&state);
	re_jb_int(&state, "campaign_id", e->campaign_id);
	re_jb_int(&state, "enrollment_id", e->id);
	re_jb_int(&state, "step", s->position);
	re_jb_str(&state, "contact", e->external_ref);
	col_add(&b->send[0], Int64GetDatum(v->channel_id), false);
	col_add(&b->send[1], CStringGetTextDatum(key), false);
	col_add(&b->send[2], payload, false);
	col_add(&b->send[3], JsonbPGetDatum(re_jb_end(&state)), false);
	col_add(&b->send[4], Int64GetDatum(e->id), false);
	col_add(&b->send[5], Int64GetDatum(e->campaign_id), false);
	col_add(&b->send[6], Int32GetDatum(e->version), false);
	col_add(&b->send[7], Int32GetDatum(s->position), false);
	col_add(&b->send[8], Int64GetDatum(e->contact_id), false);
	col_add(&b->send[9], template_id, false);
	col_add(&b->send[10], template_version, false);
	col_add(&b->send[11], CStringGetTextDatum(rendered_form), false);
	col_add(&b->send[12], BoolGetDatum(fallback_used), false);
	history(b, e, s->position, "sent", NULL, detail);
	if (bucket != NULL)
		bucket->tokens -= 1.0;
	b->out->sends++;
	return SEND_QUEUED;
}

static void
run_notify(Batch *b, Enrollment *e, Step *s)
{
	Datum		values[3];
	bool		isnull;
	int64		endpoint_id;
	Jsonb	   *data;
	JsonbParseState *state = NULL;
	Datum		event_id;

	values[0] = CStringGetTextDatum(b->tenant);
	values[1] = CStringGetTextDatum(s->endpoint ? s->endpoint : "");
	if (SPI_execute_plan(endpoint_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up endpoint failed");
	if (SPI_processed == 0)
	{
		history(b, e, s->position, "skipped",
				psprintf("endpoint \"%s\" does not exist", s->endpoint ? s->endpoint : ""), NULL);
		return;
	}
	endpoint_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);

	/* the step's data, and where it came from */
	re_jb_begin(&state);
	re_jb_int(&state, "campaign_id", e->campaign_id);
	re_jb_int(&state, "enrollment_id", e->id);
	re_jb_int(&state, "step", s->position);
	re_jb_str(&state, "contact", e->external_ref);
	if (s->data != NULL)
		re_jb_jsonb(&state, "data", s->data);
	data = re_jb_end(&state);
	values[1] = CStringGetTextDatum(s->event_type ? s->event_type : "campaign.notify");
	values[2] = JsonbPGetDatum(data);
	if (SPI_execute_plan(event_plan, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "inserting the notify event failed");
	event_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	event_id = datumCopy(event_id, false, UUID_LEN);
	SPI_freetuptable(SPI_tuptable);
	values[1] = event_id;
	values[2] = Int64GetDatum(endpoint_id);
	if (SPI_execute_plan(delivery_plan, values, NULL, false, 1) != SPI_OK_INSERT)
		elog(ERROR, "inserting the notify delivery failed");
	history(b, e, s->position, "step", NULL, NULL);
	b->out->events++;
}

static void
run_tag(Batch *b, Enrollment *e, Step *s)
{
	Datum		values[4];

	values[0] = CStringGetTextDatum(b->tenant);
	values[1] = Int64GetDatum(e->contact_id);
	values[2] = CStringGetTextDatum(s->tag ? s->tag : "");
	values[3] = TimestampTzGetDatum(b->now);
	if (SPI_execute_plan(s->kind == STEP_TAG ? tag_plan : untag_plan, values, NULL, false, 0)
		!= SPI_OK_UPDATE)
		elog(ERROR, "updating the contact's tags failed");
	history(b, e, s->position, "step", NULL, NULL);
}

/* A wait: the next step is due then (with the window if that step is a send). */
static TimestampTz
wait_until(Batch *b, Enrollment *e, Step *s)
{
	ReSendSchedule sched;
	Step	   *next = find_step(e->v, next_position(e->v, s));

	base_schedule(b, e, &sched, next != NULL && next->kind == STEP_SEND);
	if (s->kind == STEP_WAIT)
	{
		sched.delay = s->delay_amount;
		sched.unit = s->delay_unit;
	}
	else
	{
		sched.has_at_time = s->has_at;
		sched.at_time = s->at_time;
	}
	return re_next_send_time(b->now, &sched);
}

/*
 * Run an enrollment's steps from its current one until a wait, a deferral
 * or its end.  False when it was left as it was (held: no token, consent
 * row busy) and nothing may be written for it.
 */
static bool
run_enrollment(Batch *b, Enrollment *e)
{
	int			go;
	bool		claimed_step = true;

	e->status = 'a';
	e->has_next = false;
	e->end_reason = NULL;
	if (e->v == NULL)
	{
		e->status = 'e';
		e->end_reason = "its campaign version does not exist";
		history(b, e, e->step, "exited", e->end_reason, NULL);
		return true;
	}
	for (go = 0; go < RE_MAX_STEPS_IN_GO; go++)
	{
		Step	   *s = find_step(e->v, e->step);
		TimestampTz defer_to;
		char	   *reason = NULL;

		if (s == NULL)
		{
			e->status = 'c';
			e->end_reason = "completed";
			history(b, e, e->step, "completed", NULL, NULL);
			return true;
		}
		e->step = s->position;
		b->out->steps++;
		switch (s->kind)
		{
			case STEP_SEND:
				switch (run_send(b, e, s, claimed_step, &defer_to, &reason))
				{
					case SEND_HELD:
						b->out->steps--;
						if (go == 0)
							return false;
						/* after steps already run: due again now */
						e->has_next = true;
						e->next = b->now;
						b->out->held++;
						return true;
					case SEND_THROTTLED:
						b->out->steps--;
						b->out->held++;
						e->has_next = true;
						e->next = defer_to;
						return true;
					case SEND_DEFERRED:
						e->has_next = true;
						e->next = defer_to;
						history(b, e, s->position, "deferred", reason, detail_at("until", defer_to));
						return true;
					case SEND_SKIPPED:
						history(b, e, s->position, "skipped", reason, NULL);
						break;
					case SEND_QUEUED:
						break;
				}
				e->step = next_position(e->v, s);
				e->started = b->now;
				break;
			case STEP_WAIT:
			case STEP_WAIT_UNTIL:
				{
					TimestampTz until = wait_until(b, e, s);

					history(b, e, s->position, "waiting", NULL, detail_at("until", until));
					e->step = next_position(e->v, s);
					e->started = b->now;
					e->has_next = true;
					e->next = until;
					return true;
				}
			case STEP_WAIT_EVENT:

				/*
				 * Waiting: step_started_at = now and next_run_at = now +
				 * timeout exactly; a claim of a wait_event step with that
				 * relation is its timeout (the enroll part's trigger moves an
				 * enrollment on when the event comes).
				 */
				if (claimed_step && s->timeout != NULL && e->due == ts_plus(e->started, s->timeout))
				{
					if (s->timeout_exit)
					{
						e->status = 'e';
						e->end_reason = psprintf("timeout waiting for %s", s->event_type);
						history(b, e, s->position, "exited", e->end_reason, NULL);
						return true;
					}
					history(b, e, s->position, "resumed", "timeout", NULL);
					e->step = next_position(e->v, s);
					e->started = b->now;
					break;
				}
				e->started = b->now;
				e->has_next = s->timeout != NULL;
				e->next = s->timeout ? ts_plus(b->now, s->timeout) : 0;
				history(b, e, s->position, "waiting", psprintf("event %s", s->event_type),
						s->timeout ? detail_at("timeout_at", e->next) : NULL);
				return true;
			case STEP_TAG:
			case STEP_UNTAG:
				run_tag(b, e, s);
				e->step = next_position(e->v, s);
				e->started = b->now;
				break;
			case STEP_NOTIFY:
				run_notify(b, e, s);
				e->step = next_position(e->v, s);
				e->started = b->now;
				break;
			case STEP_EXIT:
				e->status = 'e';
				e->end_reason = s->reason ? s->reason : "exit step";
				history(b, e, s->position, "exited", e->end_reason, NULL);
				return true;
		}
		claimed_step = false;
	}
	/* a run of instant steps this long: the rest in the next claim */
	e->has_next = true;
	e->next = b->now;
	return true;
}

/* The batch */

static Enrollment *
read_claimed(int *n)
{
	Enrollment *es = palloc0(sizeof(Enrollment) * Max(SPI_processed, 1));
	uint64		r;

	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Enrollment *e = &es[r];
		bool		isnull;
		Datum		d;

		e->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		e->campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		e->contact_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		e->version = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		e->step = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		e->started = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
		e->due = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));
		e->context = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 8, &isnull));
		e->purpose = get_text(tup, desc, 9);
		e->tz = get_text(tup, desc, 10);
		e->phone = get_text(tup, desc, 11);
		e->email = get_text(tup, desc, 12);
		e->external_ref = get_text(tup, desc, 13);
		d = SPI_getbinval(tup, desc, 14, &isnull);
		e->has_inbound = !isnull;
		e->inbound = isnull ? 0 : DatumGetTimestampTz(d);
		e->name = get_text(tup, desc, 15);
		e->attributes = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 16, &isnull));
		e->since = DatumGetTimestampTz(SPI_getbinval(tup, desc, 17, &isnull));
	}
	*n = (int) SPI_processed;
	return es;
}

static void
flush(Batch *b)
{
	Datum		values[2 + NSEND];
	int			i;

	values[0] = CStringGetTextDatum(b->tenant);
	values[1] = TimestampTzGetDatum(b->now);
	if (b->send[0].n > 0)
	{
		for (i = 0; i < NSEND; i++)
			values[2 + i] = col_array(&b->send[i]);
		if (SPI_execute_plan(send_plan, values, NULL, false, 0) < 0)
			elog(ERROR, "queuing campaign sends failed");
	}
	if (b->upd[0].n > 0)
	{
		for (i = 0; i < NUPD; i++)
			values[2 + i] = col_array(&b->upd[i]);
		if (SPI_execute_plan(upd_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating enrollments failed");
	}
	if (b->hist[0].n > 0)
	{
		for (i = 0; i < NHIST; i++)
			values[2 + i] = col_array(&b->hist[i]);
		if (SPI_execute_plan(hist_plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "writing enrollment history failed");
	}
}

/* The batch's work, in the caller's transaction (SPI connected, as the owner). */
static void
run_batch(const char *tenant, int limit, int64 only_id, TimestampTz now, ReCampaignBatch *out)
{
	Batch		b;
	Datum		values[3];
	Enrollment *es;
	int			n,
				i,
				nv;
	int			ret;

	prepare_plans();
	batch_serial++;
	memset(&b, 0, sizeof(b));
	b.tenant = tenant;
	b.now = now;
	b.out = out;
	b.size = Max(limit, 16);
	{
		static const Oid hist_types[NHIST] = {INT8OID, INT8OID, INT4OID, INT4OID, TEXTOID, TEXTOID, JSONBOID};
		static const Oid upd_types[NUPD] = {INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, BOOLOID};
		static const Oid send_types[NSEND] = {INT8OID, TEXTOID, JSONBOID, JSONBOID, INT8OID, INT8OID,
		INT4OID, INT4OID, INT8OID, INT8OID, INT4OID, TEXTOID, BOOLOID};

		for (i = 0; i < NHIST; i++)
			col_init(&b.hist[i], hist_types[i], b.size);
		for (i = 0; i < NUPD; i++)
			col_init(&b.upd[i], upd_types[i], b.size);
		for (i = 0; i < NSEND; i++)
			col_init(&b.send[i], send_types[i], b.size);
	}

	values[0] = CStringGetTextDatum(tenant);
	values[1] = TimestampTzGetDatum(now);
	if (only_id > 0)
	{
		values[2] = Int64GetDatum(only_id);
		ret = SPI_execute_plan(claim_one_plan, values, NULL, false, 1);
	}
	else
	{
		values[2] = Int32GetDatum(limit);
		ret = SPI_execute_plan(claim_plan, values, NULL, false, 0);
	}
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claiming due enrollments failed: %s", SPI_result_code_string(ret));
	es = read_claimed(&n);
	out->claimed = n;
	out->nids = 0;
	if (out->ids)
		for (i = 0; i < n; i++)
			out->ids[out->nids++] = es[i].id;
	if (n == 0)
		return;

	(void) load_versions(&b, es, n, &nv);
	load_holidays(&b);
	load_consents(&b, es, n);

	re_render_batch_begin();
	for (i = 0; i < n; i++)
	{
		Enrollment *e = &es[i];
		bool		isnull;

		CHECK_FOR_INTERRUPTS();
		if (!run_enrollment(&b, e))
		{
			out->held++;
			continue;
		}
		out->run++;
		ensure_room(&b, b.upd, NUPD);
		col_add(&b.upd[0], Int64GetDatum(e->id), false);
		col_add(&b.upd[1], Int32GetDatum(e->step), false);
		col_add(&b.upd[2], CStringGetTextDatum(e->status == 'a' ? "active" :
											   e->status == 'c' ? "completed" : "exited"), false);
		col_add(&b.upd[3], TimestampTzGetDatum(e->next), e->status != 'a' || !e->has_next);
		col_add(&b.upd[4], TimestampTzGetDatum(e->started), false);
		{
			Datum		r = text_or_null(e->end_reason, &isnull);

			col_add(&b.upd[5], r, isnull);
		}
		col_add(&b.upd[6], BoolGetDatum(e->status != 'a'), false);
	}
	re_render_batch_end();
	flush(&b);
	if (out->sends > 0 || out->events > 0)
		re_worker_wake_at_commit();
}

/* Worker entry points: each its own transaction */

static MemoryContext caller_cxt;

static void
begin_tx(const char *activity, ReOwnerScope *scope)
{
	caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	re_connect_as_owner(scope);
}

static void
end_tx(ReOwnerScope *scope)
{
	re_disconnect_as_owner(scope);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Citus.  On a node whose tables are distributed (revenue_engine.distribute())
 * the scan over every tenant would fan out to every node, and Citus takes no
 * recursive CTE over many shards: it is run on this node's own shards of
 * enrollments and campaigns instead, one colocated pair (one hash range) at
 * a time, so each node's worker runs the steps of the tenants it holds (the
 * coordinator, holding no shard, runs none).  Every statement of a batch
 * names its tenant (tenant_id = $1): Citus routes it to that tenant's shard,
 * on this node.  False without Citus or before distribute(); else true, and
 * *scans (if not NULL) the pairs' scan statements (none: no shard here).
 * Read at each scan (a few catalog rows every few seconds), so a moved
 * shard is followed.
 */
static bool
citus_local_scans(List **scans)
{
	uint64		r;
	bool		isnull;

	if (scans)
		*scans = NIL;
	if (!OidIsValid(get_extension_oid("citus", true)))
		return false;
	/*
	 * Not read-only: a snapshot of its own, taken now, as Citus's metadata
	 * cache sees the catalogs (the worker's transaction may have begun
	 * before distribute() committed).
	 */
	if (SPI_execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition"
					"  WHERE logicalrelid = 'revenue_engine.enrollments'::pg_catalog.regclass)",
					false, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up whether enrollments is distributed failed");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return false;
	if (scans == NULL)
		return true;
	if (SPI_execute("SELECT 'revenue_engine.' || pg_catalog.quote_ident('enrollments_' || e.shardid),"
					"       'revenue_engine.' || pg_catalog.quote_ident('campaigns_' || c.shardid)"
					"  FROM pg_catalog.pg_dist_shard e"
					"  JOIN pg_catalog.pg_dist_shard c"
					"    ON c.logicalrelid = 'revenue_engine.campaigns'::pg_catalog.regclass"
					"   AND c.shardminvalue = e.shardminvalue"
					"  JOIN pg_catalog.pg_dist_placement p ON p.shardid = e.shardid"
					" WHERE e.logicalrelid = 'revenue_engine.enrollments'::pg_catalog.regclass"
					"   AND p.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)"
					" ORDER BY e.shardminvalue::int8", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading this node's shards of enrollments failed");
	for (r = 0; r < SPI_processed; r++)
	{
		char	   *enr = get_text(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		char	   *cmp = get_text(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
		StringInfoData buf;
		const char *p = SCAN_SQL;

		/* SCAN_SQL names the tables only as "revenue_engine.<table> <alias>" */
		initStringInfo(&buf);
		while (*p)
		{
			if (strncmp(p, "revenue_engine.enrollments ", 27) == 0)
			{
				appendStringInfo(&buf, "%s ", enr);
				p += 27;
			}
			else if (strncmp(p, "revenue_engine.campaigns ", 25) == 0)
			{
				appendStringInfo(&buf, "%s ", cmp);
				p += 25;
			}
			else
				appendStringInfoChar(&buf, *p++);
		}
		*scans = lappend(*scans, buf.data);
	}
	return true;
}

/*
 * AccessShareLock on these tables of the schema if it is free now, else
 * false (the caller skips its work this time).  The worker's look for work
 * never waits for a lock: distribute() (Citus) takes the tables one after
 * the other in one transaction, and a scan waiting for one of them while
 * holding another would deadlock with it.
 */
static bool
lock_now_or_skip(const char *const *tables, int n)
{
	Oid			nsp = get_namespace_oid("revenue_engine", false);
	int			i;

	for (i = 0; i < n; i++)
	{
		Oid			rel = get_relname_relid(tables[i], nsp);

		if (!OidIsValid(rel) || !ConditionalLockRelationOid(rel, AccessShareLock))
			return false;
	}
	return true;
}

/* nowait: the worker's scan, which skips its turn rather than wait for a lock */
static int
scan(ReCampaignTenant **tenants, MemoryContext cxt, bool nowait)
{
	List	   *scans;
	ListCell   *lc;
	int			n = 0,
				room = 16;
	ReCampaignTenant *ts = MemoryContextAlloc(cxt, sizeof(ReCampaignTenant) * room);

	if (!citus_local_scans(&scans))
	{
		static const char *const scanned[] = {"enrollments", "campaigns"};

		if (nowait && !lock_now_or_skip(scanned, lengthof(scanned)))
		{
			*tenants = ts;
			return 0;			/* looked for again at the next scan */
		}
		if (scan_plan == NULL)
			scan_plan = re_prepare_saved(SCAN_SQL, 0, NULL);
		scans = list_make1(NULL);	/* NULL: scan_plan */
	}
	foreach(lc, scans)
	{
		const char *sql = (const char *) lfirst(lc);
		uint64		r;

		if ((sql == NULL ? SPI_execute_plan(scan_plan, NULL, NULL, true, 0)
			 : SPI_execute(sql, true, 0)) != SPI_OK_SELECT)
			elog(ERROR, "looking for due enrollments failed");
		for (r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			char	   *tenant = get_text(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
			Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);

			if (isnull || tenant == NULL)
				continue;		/* only paused campaigns' enrollments */
			if (n == room)
			{
				room *= 2;
				ts = repalloc(ts, sizeof(ReCampaignTenant) * room);
			}
			strlcpy(ts[n].tenant, tenant, sizeof(ts[n].tenant));
			ts[n].due = DatumGetTimestampTz(d);
			n++;
		}
	}
	*tenants = ts;
	return n;
}

int
re_campaigns_scan(ReCampaignTenant **tenants)
{
	ReOwnerScope scope = {0};
	MemoryContext cxt = CurrentMemoryContext;
	int			n;

	begin_tx("revenue_engine: looking for due campaign steps", &scope);
	n = scan(tenants, cxt, true);
	end_tx(&scope);
	return n;
}

void
re_campaigns_run_batch(const char *tenant, int limit, int64 only_id, TimestampTz now,
					   ReCampaignBatch *out)
{
	ReOwnerScope scope = {0};
	int64	   *ids = out->ids;

	memset(out, 0, sizeof(*out));
	out->ids = ids;
	begin_tx("revenue_engine: running campaign steps", &scope);
	run_batch(tenant, limit, only_id, now, out);
	end_tx(&scope);
}

void
re_campaigns_record_failure(const char *tenant, int64 enrollment_id, const char *error,
							TimestampTz now)
{
	ReOwnerScope scope = {0};
	Datum		values[4];

	begin_tx("revenue_engine: recording a failed campaign step", &scope);
	prepare_plans();
	values[0] = CStringGetTextDatum(tenant);
	values[1] = Int64GetDatum(enrollment_id);
	values[2] = CStringGetTextDatum(error);
	values[3] = TimestampTzGetDatum(now);
	if (SPI_execute_plan(fail_plan, values, NULL, false, 0) < 0)
		elog(ERROR, "recording a failed campaign step failed");
	end_tx(&scope);
}

void
re_campaigns_blast_followups(TimestampTz now)
{
	ReOwnerScope scope = {0};

	begin_tx("revenue_engine: blast follow-ups", &scope);
	/*
	 * Not on a distributed database: the follow-ups are found by one
	 * statement over every tenant (README, "Citus").
	 */
	if (citus_local_scans(NULL))
	{
		static bool said = false;

		if (!said)
			elog(LOG, "revenue_engine: blast follow-up campaigns (blast_no_reply) are not run on a distributed database");
		said = true;
		end_tx(&scope);
		return;
	}
	{
		static const char *const tables[] = {"campaigns", "blasts", "blast_recipients", "contacts",
		"enrollments"};

		if (!lock_now_or_skip(tables, lengthof(tables)))
		{
			end_tx(&scope);
			return;				/* run again at the next turn */
		}
	}
	{
		static SPIPlanPtr plan = NULL;
		Oid			types[1] = {TIMESTAMPTZOID};
		Datum		values[1] = {TimestampTzGetDatum(now)};

		if (plan == NULL)
			plan = re_prepare_saved("SELECT revenue_engine.campaign_blast_followups($1)", 1, types);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "campaign_blast_followups failed");
	}
	end_tx(&scope);
}

/*
 * SQL: revenue_engine.run_campaign_steps(max integer, now timestamptz)
 * Runs due steps in this session's transaction with the worker's code: the
 * tenants in turn, each a share of max per round, until max steps or a
 * round that moves nothing.  Returns the number of steps run.
 */
PG_FUNCTION_INFO_V1(re_run_campaign_steps);
Datum
re_run_campaign_steps(PG_FUNCTION_ARGS)
{
	ReOwnerScope scope = {0};
	int			max;
	TimestampTz now;
	int			total = 0;
	MemoryContext batch_cxt;
	MemoryContext old;

	re_require_arg(fcinfo, 0, "max");
	max = PG_GETARG_INT32(0);
	if (max <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be positive, not %d", max)));
	now = PG_ARGISNULL(1) ? re_clock_now() : PG_GETARG_TIMESTAMPTZ(1);

	re_connect_as_owner(&scope);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "revenue_engine campaign batch",
									  ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		ReCampaignTenant *ts;
		int			n = scan(&ts, CurrentMemoryContext, false);
		int			ndue = 0;
		int			i;
		int			moved = 0;

		for (i = 0; i < n; i++)
			if (ts[i].due <= now)
				ndue++;
		for (i = 0; i < n && total < max; i++)
		{
			ReCampaignBatch out;
			int			share;

			if (ts[i].due > now)
				continue;
			share = Max(1, Min(max - total, (max + ndue - 1) / ndue));
			memset(&out, 0, sizeof(out));
			/* each batch's memory freed after it, however many run in this call */
			old = MemoryContextSwitchTo(batch_cxt);
			run_batch(ts[i].tenant, share, 0, now, &out);
			MemoryContextSwitchTo(old);
			MemoryContextReset(batch_cxt);
			total += out.steps;
			moved += out.run;
		}
		if (moved == 0 || total >= max)
			break;
	}
	re_disconnect_as_owner(&scope);
	PG_RETURN_INT32(total);
}
