/*
 * revenue_engine 0.1.0 -> 0.2.0, run by ALTER EXTENSION revenue_engine UPDATE.
 *
 * Afterwards the extension's objects are those of a fresh 0.2.0 install
 * (test/t/040_upgrade.pl compares the two, object by object); every row is
 * kept.  Written by hand: every object 0.2.0 adds or changes, in the order
 * that its dependencies need, and nothing else.  Each change that touches
 * existing rows says what happens to them.  A later change to the modules'
 * SQL files under src/ that ships in 0.2.0 must be repeated here.
 */

\echo Use "ALTER EXTENSION revenue_engine UPDATE TO '0.2.0'" to load this file. \quit

-- An application event type of 0.1.0 named like 0.2.0's new built-in one
-- (phone_number_changed, sent when a WhatsApp contact changes number): the
-- row is kept, but both now share the name; say so.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM revenue_engine.event_types t
                WHERE t.event_type OPERATOR(pg_catalog.=) 'phone_number_changed') THEN
        RAISE WARNING 'event type "phone_number_changed" is built in from revenue_engine 0.2.0 on: its events now also come from WhatsApp number changes'
            USING HINT = 'Rename your own event type if its events must stay apart.';
    END IF;
END
$do$;

------------------------------------------------------------------------------
-- masking (src/tenancy/masking.sql): what the application role sees of URLs
-- and templates that may hold credentials.
------------------------------------------------------------------------------
-- The URL with credentials, query values and secret-looking path segments as ***.
CREATE FUNCTION revenue_engine.mask_url(url text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_mask_url_sql';
COMMENT ON FUNCTION revenue_engine.mask_url(text) IS
    'the URL without what could authenticate a request: user info, query values, fragment and path segments that are not plain words as ***; NULL stays NULL';

-- The JSON with every string value as ***.
CREATE FUNCTION revenue_engine.mask_json(doc jsonb)
RETURNS jsonb
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_mask_json';
COMMENT ON FUNCTION revenue_engine.mask_json(jsonb) IS
    'the JSON document with every string value as ***, keys, numbers, booleans and nulls kept; NULL stays NULL';

REVOKE ALL ON FUNCTION revenue_engine.mask_url(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.mask_json(jsonb) FROM PUBLIC;
-- Functions in a view run as the one who reads it.
GRANT EXECUTE ON FUNCTION revenue_engine.mask_url(text), revenue_engine.mask_json(jsonb)
  TO revenue_engine_user;

------------------------------------------------------------------------------
-- delivery (src/outbox/delivery.sql)
------------------------------------------------------------------------------
-- The current tenant's endpoints without secrets (mask_url: src/tenancy/masking.c):
-- the same columns, the URL masked, the current tenant's rows only.
CREATE OR REPLACE VIEW revenue_engine.endpoints_public AS
SELECT tenant_id, id, name, revenue_engine.mask_url(url) AS url, event_types,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       pg_catalog.cardinality(signing_secrets) AS signing_secrets,
       timeout_ms, connect_timeout_ms, max_in_flight, rate_limit, rate_period,
       retry_schedule, circuit_break_after, enabled, disabled_reason, disabled_at,
       failing_since, created_at, updated_at
  FROM revenue_engine.endpoints
 WHERE tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.endpoints_public IS
    'the current tenant''s endpoints without their secrets: header names, the number of signing secrets, the URL masked';

-- The class of address the worker refuses to connect to, NULL when it connects.
CREATE FUNCTION revenue_engine.http_address_class(address text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_http_address_class';
REVOKE ALL ON FUNCTION revenue_engine.http_address_class(text) FROM PUBLIC;

-- Queue state per endpoint, and deliveries and latency over the last 5 minutes.
CREATE OR REPLACE VIEW revenue_engine.endpoint_stats AS
SELECT e.tenant_id, e.id AS endpoint_id, e.name, e.enabled, e.disabled_reason,
       q.pending, q.in_flight, q.retrying, q.dead, q.oldest_pending_age,
       a.sent_5m, a.failed_5m, a.p50_latency_ms, a.p99_latency_ms
  FROM revenue_engine.endpoints e
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
              count(*) FILTER (WHERE d.status = 'sending') AS in_flight,
              count(*) FILTER (WHERE d.status = 'pending' AND d.attempts > 0) AS retrying,
              count(*) FILTER (WHERE d.status = 'dead') AS dead,
              now() - min(d.created_at) FILTER (WHERE d.status IN ('pending', 'sending')) AS oldest_pending_age
         FROM revenue_engine.deliveries d
        WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id
          AND d.status IN ('pending', 'sending', 'dead')) q ON true
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE t.outcome = 'sent') AS sent_5m,
              count(*) FILTER (WHERE t.outcome <> 'sent') AS failed_5m,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY t.latency_ms) AS p50_latency_ms,
              percentile_cont(0.99) WITHIN GROUP (ORDER BY t.latency_ms) AS p99_latency_ms
         FROM revenue_engine.delivery_attempts t
        WHERE t.tenant_id = e.tenant_id AND t.kind = 'event' AND t.endpoint_id = e.id
          AND t.started_at > now() - interval '5 minutes') a ON true
 WHERE e.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.endpoint_stats IS
    'per endpoint of the current tenant: pending, in flight, retrying, dead, oldest pending age; deliveries and p50/p99 latency over 5 minutes';

-- Restored with pg_dump / pg_restore: the attempt log and the identity
-- sequences of the dumped tables (new ids after a restore do not collide).
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.delivery_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.delivery_attempts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.endpoints_id_seq', '');

------------------------------------------------------------------------------
-- messaging (src/messaging/messaging.sql)
------------------------------------------------------------------------------
CREATE OR REPLACE VIEW revenue_engine.channel_stats AS
SELECT c.tenant_id, c.id AS channel_id, c.name, c.enabled,
       q.queued, q.in_flight, q.retrying, q.failed, q.oldest_queued_age,
       a.sent_5m, a.failed_5m, a.p50_latency_ms, a.p99_latency_ms
  FROM revenue_engine.channels c
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE s.status = 'queued' AND s.scheduled_for <= now()) AS queued,
              count(*) FILTER (WHERE s.status = 'sending') AS in_flight,
              count(*) FILTER (WHERE s.status = 'queued' AND s.attempts > 0) AS retrying,
              count(*) FILTER (WHERE s.status = 'failed') AS failed,
              now() - min(s.scheduled_for) FILTER (WHERE s.status IN ('queued', 'sending')
                                                   AND s.scheduled_for <= now()) AS oldest_queued_age
         FROM revenue_engine.sends s
        WHERE s.tenant_id = c.tenant_id AND s.channel_id = c.id
          AND s.status IN ('queued', 'sending', 'failed')) q ON true
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE t.outcome = 'sent') AS sent_5m,
              count(*) FILTER (WHERE t.outcome <> 'sent') AS failed_5m,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY t.latency_ms) AS p50_latency_ms,
              percentile_cont(0.99) WITHIN GROUP (ORDER BY t.latency_ms) AS p99_latency_ms
         FROM revenue_engine.delivery_attempts t
        WHERE t.tenant_id = c.tenant_id AND t.kind = 'send' AND t.channel_id = c.id
          AND t.started_at > now() - interval '5 minutes') a ON true
 WHERE c.tenant_id = revenue_engine.current_tenant();
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.channels_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.sends_id_seq', '');

------------------------------------------------------------------------------
-- usage (src/usage/usage.sql)
------------------------------------------------------------------------------

-- Profiles are read by primary key on every call: their writes invalidate nothing.
DROP TRIGGER user_profiles_invalidate_cache ON revenue_engine.user_profiles;

-- backfill_usage: the caller's half in C (backfill.c); the function keeps its
-- identity, so its grants stay.
CREATE OR REPLACE FUNCTION revenue_engine.backfill_usage(query text, emit_events boolean DEFAULT false)
RETURNS jsonb
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_backfill_usage';

-- The owner's half takes arrays now (0.1.0's read a temporary table).
DROP FUNCTION revenue_engine.backfill_apply(boolean);

-- One (user, usage type) of a backfill: its settings, time zone, today and days.
CREATE TYPE revenue_engine.backfill_pair AS (
    user_id    uuid,
    usage_type text,
    tz         text,
    goal       integer,
    milestones bigint[],
    is_feature boolean,
    today      date,
    first_date date,
    last_date  date,
    is_new     boolean);

/*
 * The owner's half of backfill_usage (backfill.c calls it inside the owner
 * scope; nobody else may execute it): the rows as four arrays, and the
 * user objects (payload_users, payloads) the caller built for the events.
 * It reads its arguments and the extension's tables only.
 */
CREATE FUNCTION revenue_engine.backfill_apply(
    user_ids uuid[], usage_types text[], usage_dates date[], counts bigint[],
    emit_events boolean, payload_users uuid[], payloads jsonb[])
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant   text := revenue_engine.current_tenant();
    -- the times, once per call: parameters of the statements, as Citus needs
    -- (no STABLE function on columns in UPDATE, CASE or ON CONFLICT)
    ts       timestamptz := now();
    clock    timestamptz := revenue_engine.clock_now();
    bad      record;
    -- jsonb rows of revenue_engine.backfill_pair, read back with
    -- jsonb_populate_recordset: Citus sends a statement's parameters of the
    -- extension's own types untyped to the node that runs it, where one the
    -- statement does not use cannot be typed (an array of the type was)
    pairs    jsonb;
    n_ms     bigint;
    g_users  uuid[];
    g_types  text[];
    g_dates  date[];
    n_new    bigint;
BEGIN
    SELECT * INTO bad
      FROM unnest(user_ids, usage_types, usage_dates, counts) AS s(user_id, usage_type, usage_date, count)
     WHERE s.user_id IS NULL OR s.usage_type IS NULL OR s.usage_date IS NULL OR s.count IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill row (%, %, %, %) has a null column',
              coalesce(bad.user_id::text, 'NULL'), coalesce(bad.usage_type, 'NULL'),
              coalesce(bad.usage_date::text, 'NULL'), coalesce(bad.count::text, 'NULL')
            USING ERRCODE = '22004';
    END IF;
    SELECT * INTO bad
      FROM unnest(user_ids, usage_types, usage_dates, counts) AS s(user_id, usage_type, usage_date, count)
     WHERE s.count <= 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill count % for user %, usage type "%", day % is not positive',
              bad.count, bad.user_id, bad.usage_type, bad.usage_date
            USING ERRCODE = '22023';
    END IF;
    PERFORM revenue_engine.check_usage_type(t.usage_type)
       FROM (SELECT DISTINCT u.usage_type FROM unnest(usage_types) AS u(usage_type)) t;

    -- One row per (user, type): settings, time zone and the user's today.
    pairs := (
        SELECT coalesce(jsonb_agg(x), '[]') FROM (
            SELECT s.user_id, s.usage_type,
                   coalesce(p.timezone, 'UTC') AS tz,
                   coalesce((p.daily_goals ->> s.usage_type)::integer,
                            CASE WHEN t.usage_type IS NOT NULL THEN t.daily_goal ELSE b.daily_goal END) AS goal,
                   CASE WHEN t.usage_type IS NOT NULL THEN t.milestones ELSE b.milestones END AS milestones,
                   CASE WHEN t.usage_type IS NOT NULL THEN t.is_feature ELSE b.is_feature END AS is_feature,
                   timezone(coalesce(p.timezone, 'UTC'), clock)::date AS today,
                   min(s.usage_date) AS first_date, max(s.usage_date) AS last_date,
                   NOT EXISTS (SELECT 1 FROM revenue_engine.lifetime_usage l
                                WHERE l.tenant_id = tenant AND l.user_id = s.user_id
                                  AND l.usage_type = s.usage_type) AS is_new
              FROM unnest(user_ids, usage_types, usage_dates) AS s(user_id, usage_type, usage_date)
              LEFT JOIN revenue_engine.user_profiles p
                     ON p.tenant_id = tenant AND p.user_id = s.user_id
              LEFT JOIN revenue_engine.usage_types t ON t.usage_type = s.usage_type
              CROSS JOIN LATERAL revenue_engine.builtin_usage_type(s.usage_type) b
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 10) x);

    SELECT s.*, pr.tz, pr.today INTO bad
      FROM unnest(user_ids, usage_types, usage_dates) AS s(user_id, usage_type, usage_date)
      JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr ON pr.user_id = s.user_id AND pr.usage_type = s.usage_type
     WHERE s.usage_date > pr.today LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill day % for user % is in the future', bad.usage_date, bad.user_id
            USING ERRCODE = '22008',
                  DETAIL = format('Today is %s in the user''s time zone %s.', bad.today, bad.tz);
    END IF;

    -- Daily counters: this backfill's count replaces the previous backfill's.
    WITH agg AS (
        SELECT s.user_id, s.usage_type, s.usage_date, sum(s.count) AS count
          FROM unnest(user_ids, usage_types, usage_dates, counts) AS s(user_id, usage_type, usage_date, count)
         GROUP BY 1, 2, 3
    ), delta AS (
        SELECT a.user_id, a.usage_type, a.count - coalesce(d.backfilled_count, 0) AS delta
          FROM agg a
          LEFT JOIN revenue_engine.daily_usage d
                 ON d.tenant_id = tenant AND d.user_id = a.user_id
                AND d.usage_type = a.usage_type AND d.usage_date = a.usage_date
    ), upd AS (
        INSERT INTO revenue_engine.daily_usage AS d
               (tenant_id, user_id, usage_type, usage_date, count, backfilled_count)
        SELECT tenant, a.user_id, a.usage_type, a.usage_date, a.count, a.count FROM agg a
        ON CONFLICT (tenant_id, user_id, usage_type, usage_date) DO UPDATE
           SET count = d.count - d.backfilled_count + excluded.backfilled_count,
               backfilled_count = excluded.backfilled_count
        RETURNING 1
    ), per_pair AS (
        SELECT x.user_id, x.usage_type, sum(x.delta) AS delta
          FROM delta x GROUP BY 1, 2
    )
    INSERT INTO revenue_engine.lifetime_usage AS l
           (tenant_id, user_id, usage_type, total, backfilled_total, first_used_at, last_used_at)
    SELECT tenant, pp.user_id, pp.usage_type, pp.delta, pp.delta,
           pr.first_date::timestamp AT TIME ZONE pr.tz,
           pr.last_date::timestamp AT TIME ZONE pr.tz
      FROM per_pair pp
      JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr ON pr.user_id = pp.user_id AND pr.usage_type = pp.usage_type
     WHERE (SELECT count(*) FROM upd) >= 0
    ON CONFLICT (tenant_id, user_id, usage_type) DO UPDATE
       SET total = l.total + excluded.total,
           backfilled_total = l.backfilled_total + excluded.backfilled_total,
           first_used_at = least(l.first_used_at, excluded.first_used_at),
           last_used_at = greatest(l.last_used_at, excluded.last_used_at);

    -- Milestones already passed: each recorded once; events only when asked.
    WITH ins AS (
        INSERT INTO revenue_engine.milestones_reached AS m
               (tenant_id, user_id, usage_type, milestone, lifetime_total, backfilled, event_id)
        SELECT tenant, pr.user_id, pr.usage_type, ms.milestone, l.total, NOT emit_events,
               CASE WHEN emit_events THEN gen_random_uuid() END
          FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
          JOIN revenue_engine.lifetime_usage l
            ON l.tenant_id = tenant AND l.user_id = pr.user_id AND l.usage_type = pr.usage_type
         CROSS JOIN LATERAL unnest(pr.milestones) AS ms(milestone)
         WHERE ms.milestone <= l.total
        ON CONFLICT DO NOTHING
        RETURNING m.user_id, m.usage_type, m.milestone, m.lifetime_total, m.event_id
    ), latest AS (
        UPDATE revenue_engine.lifetime_usage l
           SET latest_milestone = x.milestone, latest_milestone_at = ts
          FROM (SELECT i.user_id, i.usage_type, max(i.milestone) AS milestone
                  FROM ins i GROUP BY 1, 2) x
         WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type
           AND (l.latest_milestone IS NULL OR x.milestone > l.latest_milestone)
        RETURNING 1
    ), events AS (
        INSERT INTO revenue_engine.webhook_events
               (tenant_id, id, user_id, event_type, event_data, user_data)
        SELECT tenant, i.event_id, i.user_id, 'milestone_reached',
               jsonb_build_object('usage_type', i.usage_type, 'milestone_type', i.usage_type,
                                  'milestone_value', i.milestone, 'lifetime_total', i.lifetime_total,
                                  'is_first', pr.milestones[1] = i.milestone, 'backfilled', true),
               u.user_data
          FROM ins i
          JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr ON pr.user_id = i.user_id AND pr.usage_type = i.usage_type
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = i.user_id
         WHERE emit_events
        RETURNING 1
    )
    SELECT count(*) INTO n_ms FROM ins;

    -- Goals reached on days not yet marked.
    WITH g AS (
        UPDATE revenue_engine.daily_usage d
           SET goal = pr.goal,
               -- the end of the user's day: its next midnight less 1 us, taken
               -- in UTC (timestamptz - interval is STABLE, which Citus takes in
               -- no UPDATE with columns; the same instant)
               goal_achieved_at = least(ts, timezone('UTC', timezone('UTC', (d.usage_date + 1)::timestamp AT TIME ZONE pr.tz)
                                                            - interval '1 microsecond'))
          FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
         WHERE d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
           AND d.goal_achieved_at IS NULL AND pr.goal IS NOT NULL AND d.count >= pr.goal
        RETURNING d.user_id, d.usage_type, d.usage_date
    )
    SELECT coalesce(array_agg(g.user_id), '{}'), coalesce(array_agg(g.usage_type), '{}'),
           coalesce(array_agg(g.usage_date), '{}')
      INTO g_users, g_types, g_dates
      FROM g;

    -- Streaks: recompute every run of consecutive goal days of the pairs touched.
    WITH a AS (
        SELECT d.user_id, d.usage_type, d.usage_date,
               d.usage_date - (row_number() OVER w)::integer AS grp
          FROM revenue_engine.daily_usage d
          JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
            ON d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
         WHERE d.goal_achieved_at IS NOT NULL
        WINDOW w AS (PARTITION BY d.user_id, d.usage_type ORDER BY d.usage_date)
    ), s AS (
        SELECT a.*, row_number() OVER (PARTITION BY a.user_id, a.usage_type, a.grp
                                       ORDER BY a.usage_date)::integer AS streak
          FROM a
    )
    UPDATE revenue_engine.daily_usage d
       SET streak_days = s.streak
      FROM s
     WHERE d.tenant_id = tenant AND d.user_id = s.user_id AND d.usage_type = s.usage_type
       AND d.usage_date = s.usage_date AND d.streak_days IS DISTINCT FROM s.streak;

    UPDATE revenue_engine.lifetime_usage l
       SET current_streak = x.current_streak, streak_end_date = x.streak_end_date,
           best_streak = greatest(l.best_streak, x.best_streak)
      FROM (SELECT DISTINCT ON (d.user_id, d.usage_type)
                   d.user_id, d.usage_type, d.streak_days AS current_streak,
                   d.usage_date AS streak_end_date,
                   max(d.streak_days) OVER (PARTITION BY d.user_id, d.usage_type) AS best_streak
              FROM revenue_engine.daily_usage d
              JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
                ON d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
             WHERE d.goal_achieved_at IS NOT NULL
             ORDER BY d.user_id, d.usage_type, d.usage_date DESC) x
     WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type;

    SELECT count(*) INTO n_new FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr WHERE pr.is_new AND pr.is_feature;
    IF emit_events THEN
        INSERT INTO revenue_engine.webhook_events (tenant_id, user_id, event_type, event_data, user_data)
        SELECT tenant, g.user_id, 'daily_goal_achieved',
               jsonb_build_object('usage_type', g.usage_type, 'date', g.usage_date,
                                  'count', d.count, 'goal', d.goal, 'streak_days', d.streak_days,
                                  'streak_milestone',
                                  CASE WHEN d.streak_days = ANY (b.streak_milestones)
                                       THEN d.streak_days END,
                                  'backfilled', true),
               u.user_data
          FROM unnest(g_users, g_types, g_dates) AS g(user_id, usage_type, usage_date)
          JOIN revenue_engine.daily_usage d
            ON d.tenant_id = tenant AND d.user_id = g.user_id AND d.usage_type = g.usage_type
           AND d.usage_date = g.usage_date
          LEFT JOIN revenue_engine.usage_type_settings b ON b.usage_type = g.usage_type
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = g.user_id;

        INSERT INTO revenue_engine.webhook_events (tenant_id, user_id, event_type, event_data, user_data)
        SELECT tenant, pr.user_id, 'feature_first_used',
               jsonb_build_object('feature', pr.usage_type,
                                  'first_used_at', pr.first_date::timestamp AT TIME ZONE pr.tz,
                                  'backfilled', true),
               u.user_data
          FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = pr.user_id
         WHERE pr.is_new AND pr.is_feature;
    END IF;

    RETURN jsonb_build_object(
               'rows', cardinality(user_ids),
               'users', (SELECT count(DISTINCT pr.user_id) FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr),
               'usage_days', (SELECT count(*) FROM (SELECT DISTINCT s.user_id, s.usage_type, s.usage_date
                                                      FROM unnest(user_ids, usage_types, usage_dates)
                                                           AS s(user_id, usage_type, usage_date)) d),
               'milestones_marked', n_ms,
               'goals_marked', cardinality(g_users),
               'features_first_used', n_new,
               'events_emitted', CASE WHEN emit_events THEN n_ms + cardinality(g_users) + n_new
                                      ELSE 0 END);
END
$fn$;
REVOKE ALL ON FUNCTION
    revenue_engine.backfill_apply(uuid[], text[], date[], bigint[], boolean, uuid[], jsonb[])
  FROM PUBLIC, revenue_engine_user;



------------------------------------------------------------------------------
-- blasts (src/blasts/blasts.sql)
------------------------------------------------------------------------------
CREATE OR REPLACE VIEW revenue_engine.channels_public AS
SELECT tenant_id, id, name, method, revenue_engine.mask_url(url) AS url,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       revenue_engine.mask_json(body_template) AS body_template, message_id_path, timeout_ms,
       connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule, enabled,
       disabled_reason, created_at, updated_at,
       webhook_kind, revenue_engine.mask_url(status_url) AS status_url, status_path, status_map,
       poll_interval, poll_max_age
  FROM revenue_engine.channels
 WHERE tenant_id = revenue_engine.current_tenant();
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blasts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blast_recipients_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_parked_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_history_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.poll_queue', '');

COMMENT ON TABLE revenue_engine.status_parked IS
    'status updates that arrived before their message id was known; applied and removed when it appears, deleted after revenue_engine.parked_retention; capped per callback and per tenant (revenue_engine.parked_max_per_callback, parked_max_per_tenant)';

-- What a status change recorded: 0.1.0 recorded applied changes only, so every
-- existing row is 'applied' (the column's default; no table rewrite).
ALTER TABLE revenue_engine.status_history
    ADD COLUMN result text NOT NULL DEFAULT 'applied',
    ADD CONSTRAINT status_history_result_check CHECK (result IN ('applied', 'duplicate', 'stale'));
COMMENT ON COLUMN revenue_engine.status_history.result IS
    'applied: the status changed; duplicate or stale: a callback''s item that changed no status, kept for the provider''s data in metadata (conversation, pricing, biz_opaque_callback_data)';

-- What a callback reports besides statuses and replies (C, ingest_status_webhook).
CREATE TABLE revenue_engine.channel_events (
    tenant_id    text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    channel_id   bigint      NOT NULL,
    kind         text        NOT NULL,
    item_id      text,
    message_id   text,
    recipient_id bigint,
    blast_id     bigint,
    sender       text,
    detail       text,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    data         jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT channel_events_kind_check CHECK (kind IN ('reaction', 'reaction_removed', 'number_changed',
                                                         'identity_changed', 'system', 'error',
                                                         'welcome_request', 'message_revoked'))
);
COMMENT ON TABLE revenue_engine.channel_events IS
    'reactions (on message_id, the blast recipient carrying it if any), system messages (number and identity changes), a user opening the chat (welcome_request) or deleting a message (message_revoked), and errors a provider reports for the channel (WhatsApp value.errors, such as 130429 rate limit); none is a reply';
COMMENT ON COLUMN revenue_engine.channel_events.item_id IS
    'the provider''s id of the item itself (a reaction''s own message id); an item sent again is recorded once';
COMMENT ON COLUMN revenue_engine.channel_events.detail IS
    'reaction: the emoji; number_changed: the new number; identity_changed: the identity hash; error: code and title';
CREATE UNIQUE INDEX channel_events_item_idx
    ON revenue_engine.channel_events (tenant_id, channel_id, item_id, kind) WHERE item_id IS NOT NULL;
CREATE INDEX channel_events_message_idx ON revenue_engine.channel_events (tenant_id, message_id);
CREATE INDEX channel_events_channel_idx ON revenue_engine.channel_events (tenant_id, channel_id, kind, received_at);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.channel_events', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.channel_events_id_seq', '');

-- create_blast: the caller's half in C (create_blast.c); the function keeps its
-- identity, so its grants stay.
CREATE OR REPLACE FUNCTION revenue_engine.create_blast(
    channel          text,
    tag              text,
    recipients       jsonb       DEFAULT NULL,
    recipients_query text        DEFAULT NULL,
    message          text        DEFAULT NULL,
    template         jsonb       DEFAULT NULL,
    payload          jsonb       DEFAULT '{}',
    scheduled_for    timestamptz DEFAULT NULL,
    follow_up_stage  integer     DEFAULT 0,
    on_invalid       text        DEFAULT 'error',
    OUT blast_id bigint, OUT recipient_count integer, OUT duplicates integer, OUT rejected integer)
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_create_blast';

-- The owner's half takes arrays now (0.1.0's read a temporary table).
DROP FUNCTION revenue_engine.blast_apply(text, text, jsonb, boolean, text, jsonb, jsonb,
                                         timestamptz, integer, text);

/*
 * The owner's half of create_blast (create_blast.c calls it inside the owner
 * scope; nobody else may execute it).  The recipients come as the jsonb
 * array, or as the columns of the caller's query made text by the caller:
 * inputs (phones), names and contact_ids, in the query's order.  It reads
 * its arguments and the extension's tables only: no relation of pg_temp, no
 * type, cast or function of the caller's.
 */
CREATE FUNCTION revenue_engine.blast_apply(
    channel text, tag text, recipients jsonb, inputs text[], names text[], contact_ids text[],
    message text, template jsonb, payload jsonb, scheduled_for timestamptz,
    follow_up_stage integer, on_invalid text,
    OUT blast_id bigint, OUT recipient_count integer, OUT duplicates integer, OUT rejected integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    -- the tenant and the time, once: parameters of the statements (Citus
    -- routes by tenant_id = $n, and takes no STABLE function in COALESCE)
    tenant   text := revenue_engine.current_tenant();
    ts       timestamptz := now();
    ch       bigint;
    nraw     integer;
    bad      text;
    problems text[];
    ok_pos    integer[];
    ok_phones text[];
    r_ids     bigint[];
    r_phones  text[];
    r_names   text[];
    recipient_seq regclass := pg_get_serial_sequence('revenue_engine.blast_recipients', 'id');
    send_seq      regclass := pg_get_serial_sequence('revenue_engine.sends', 'id');
    slots    integer := revenue_engine.funnel_slots();
BEGIN
    IF channel IS NULL OR tag IS NULL OR payload IS NULL OR follow_up_stage IS NULL
       OR on_invalid IS NULL THEN
        RAISE EXCEPTION 'channel, tag, payload, follow_up_stage and on_invalid must not be null'
            USING ERRCODE = '22004';
    END IF;
    IF length(tag) = 0 OR length(tag) > 200 THEN
        RAISE EXCEPTION 'tag must have 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF on_invalid NOT IN ('error', 'skip') THEN
        RAISE EXCEPTION 'on_invalid "%" is not error or skip', on_invalid USING ERRCODE = '22023';
    END IF;
    IF follow_up_stage < 0 THEN
        RAISE EXCEPTION 'follow_up_stage % is negative', follow_up_stage USING ERRCODE = '22023';
    END IF;
    IF message IS NULL AND template IS NULL THEN
        RAISE EXCEPTION 'a blast needs a message or a template' USING ERRCODE = '22023';
    END IF;
    IF message IS NOT NULL AND template IS NOT NULL THEN
        RAISE EXCEPTION 'a blast has a message or a template, not both' USING ERRCODE = '22023';
    END IF;
    IF message IS NOT NULL AND length(message) = 0 THEN
        RAISE EXCEPTION 'message must not be empty' USING ERRCODE = '22023';
    END IF;
    IF template IS NOT NULL AND jsonb_typeof(template) <> 'object' THEN
        RAISE EXCEPTION 'template must be a JSON object, not %', left(template::text, 100)
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object, not %', left(payload::text, 100)
            USING ERRCODE = '22023';
    END IF;
    IF scheduled_for IS NOT NULL AND NOT isfinite(scheduled_for) THEN
        RAISE EXCEPTION 'scheduled_for must be a finite time' USING ERRCODE = '22008';
    END IF;
    SELECT c.id INTO ch FROM revenue_engine.channels c
     WHERE c.tenant_id = tenant AND c.name = channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = '42704';
    END IF;

    -- inputs, names, contact_ids: one element per recipient, in the order given
    IF inputs IS NULL THEN
        IF recipients IS NULL OR jsonb_typeof(recipients) <> 'array' THEN
            RAISE EXCEPTION 'recipients must be a JSON array, not %', left(recipients::text, 100)
                USING ERRCODE = '22023';
        END IF;
        SELECT x.elem::text INTO bad
          FROM jsonb_array_elements(recipients) AS x(elem)
         WHERE jsonb_typeof(x.elem) NOT IN ('string', 'object')
            OR (jsonb_typeof(x.elem) = 'object' AND jsonb_typeof(x.elem -> 'phone') IS DISTINCT FROM 'string')
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'recipient % is neither a phone number string nor an object with a "phone" string', left(bad, 100)
                USING ERRCODE = '22023';
        END IF;
        SELECT coalesce(array_agg(CASE WHEN jsonb_typeof(x.elem) = 'string' THEN x.elem #>> '{}'
                                       ELSE x.elem ->> 'phone' END ORDER BY x.position), '{}'),
               coalesce(array_agg(x.elem ->> 'name' ORDER BY x.position), '{}'),
               coalesce(array_agg(x.elem ->> 'contact_id' ORDER BY x.position), '{}')
          INTO inputs, names, contact_ids
          FROM jsonb_array_elements(recipients) WITH ORDINALITY AS x(elem, position);
    END IF;
    nraw := cardinality(inputs);

    problems := ARRAY(SELECT revenue_engine.phone_problem(i.input)
                        FROM unnest(inputs) WITH ORDINALITY AS i(input, position)
                       ORDER BY i.position);
    SELECT count(*) INTO rejected FROM unnest(problems) AS p(problem) WHERE p.problem IS NOT NULL;
    IF rejected > 0 AND on_invalid = 'error' THEN
        SELECT string_agg(pg_catalog.format('#%s %s: %s', c.position,
                                            coalesce(pg_catalog.quote_literal(c.input), 'NULL'), c.problem),
                          '; ' ORDER BY c.position) INTO bad
          FROM (SELECT * FROM unnest(inputs, problems) WITH ORDINALITY AS c(input, problem, position)
                 WHERE c.problem IS NOT NULL ORDER BY c.position LIMIT 5) c;
        RAISE EXCEPTION '% of % recipients are not E.164 phone numbers: %', rejected, nraw,
                        bad || CASE WHEN rejected > 5 THEN '; ...' ELSE '' END
            USING ERRCODE = '22023',
                  HINT = 'Write numbers as +<country code><number>, or pass on_invalid => ''skip'' to leave them out and list them in revenue_engine.blast_rejections.';
    END IF;

    -- the first of each number (normalized), in the order given
    SELECT coalesce(array_agg(f.position ORDER BY f.position), '{}'),
           coalesce(array_agg(f.phone ORDER BY f.position), '{}')
      INTO ok_pos, ok_phones
      FROM (SELECT DISTINCT ON (n.phone) n.position, n.phone
              FROM (SELECT c.position, revenue_engine.normalize_phone(c.input) AS phone
                      FROM unnest(inputs, problems) WITH ORDINALITY AS c(input, problem, position)
                     WHERE c.problem IS NULL) n
             ORDER BY n.phone, n.position) f;
    recipient_count := cardinality(ok_pos);
    duplicates := nraw - rejected - recipient_count;
    IF recipient_count = 0 THEN
        RAISE EXCEPTION 'the blast has no valid recipients (% given, % rejected)', nraw, rejected
            USING ERRCODE = '22023';
    END IF;

    INSERT INTO revenue_engine.blasts AS b
           (tenant_id, tag, follow_up_stage, channel_id, message, template, payload,
            scheduled_for, total_recipients, duplicates, rejected)
    VALUES (tenant, tag, follow_up_stage, ch, message, template, payload,
            coalesce(scheduled_for, ts), recipient_count, duplicates, rejected)
    RETURNING b.id INTO blast_id;
    INSERT INTO revenue_engine.blast_counters (tenant_id, blast_id, slot)
    SELECT tenant, blast_id, s FROM generate_series(0, slots - 1) s;
    INSERT INTO revenue_engine.blast_rejections (tenant_id, blast_id, position, input, reason)
    SELECT tenant, blast_id, c.position, c.input, c.problem
      FROM unnest(inputs, problems) WITH ORDINALITY AS c(input, problem, position)
     WHERE c.problem IS NOT NULL;

    -- The recipients (ids in the order given), then one send per recipient.
    -- Three statements, each on one table and routed by tenant_id = $n, not
    -- a modifying CTE feeding an INSERT ... SELECT, which Citus cannot plan.
    -- The ids are drawn from the identity sequences here, as an INSERT ...
    -- VALUES draws them: Citus inserts the rows of an INSERT ... SELECT into
    -- the shards, whose identity columns have sequences of their own.
    INSERT INTO revenue_engine.blast_recipients (id, tenant_id, blast_id, phone, name, contact_id)
    OVERRIDING SYSTEM VALUE
    SELECT nextval(recipient_seq), tenant, blast_id, o.phone, o.name, o.contact_id
      FROM (SELECT o.phone, n.name, n.contact_id
              FROM unnest(ok_pos, ok_phones) AS o(position, phone)
              JOIN unnest(inputs, names, contact_ids) WITH ORDINALITY AS n(input, name, contact_id, position)
                ON n.position = o.position
             ORDER BY o.position) o;
    SELECT array_agg(r.id ORDER BY r.id), array_agg(r.phone ORDER BY r.id), array_agg(r.name ORDER BY r.id)
      INTO r_ids, r_phones, r_names
      FROM revenue_engine.blast_recipients r
     WHERE r.tenant_id = tenant AND r.blast_id = blast_apply.blast_id;
    INSERT INTO revenue_engine.sends
           (id, tenant_id, channel_id, payload, scheduled_for, next_attempt_at, blast_id, recipient_id,
            metadata)
    OVERRIDING SYSTEM VALUE
    SELECT nextval(send_seq), tenant, ch, r.payload, coalesce(scheduled_for, ts), coalesce(scheduled_for, ts),
           blast_id, r.id, jsonb_build_object('blast_id', blast_id)
      FROM (SELECT r.id,
                   payload || jsonb_build_object('to', r.phone)
                     || CASE WHEN message IS NOT NULL
                             THEN jsonb_build_object('type', 'text', 'text', jsonb_build_object('body',
                                      replace(replace(message, '{{name}}', coalesce(r.name, '')), '{{phone}}', r.phone)))
                             ELSE jsonb_build_object('type', 'template', 'template', template) END AS payload
              FROM unnest(r_ids, r_phones, r_names) AS r(id, phone, name)
             ORDER BY r.id) r;

    PERFORM revenue_engine.wake_worker();
END
$fn$;
REVOKE ALL ON FUNCTION
    revenue_engine.blast_apply(text, text, jsonb, text[], text[], text[], text, jsonb, jsonb,
                               timestamptz, integer, text)
  FROM PUBLIC, revenue_engine_user;


REVOKE ALL ON revenue_engine.channel_events FROM PUBLIC;
GRANT SELECT ON revenue_engine.channel_events TO revenue_engine_user;

-- Every counter set again from a scan of blast_recipients (after writes with
-- the triggers disabled or in replica mode); waits for the table's writers.
CREATE FUNCTION revenue_engine.funnel_recount()
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 're_funnel_recount';
COMMENT ON FUNCTION revenue_engine.funnel_recount() IS
    'set every funnel counter from a scan of blast_recipients (blocks writers of blast_recipients while it runs)';

-- A counted column of blast_recipients dropped, added, retyped or renamed:
-- the counters are recounted in the ALTER TABLE's transaction.
CREATE FUNCTION revenue_engine.funnel_columns_altered()
RETURNS event_trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_funnel_columns_altered';
CREATE EVENT TRIGGER revenue_engine_funnel_columns
    ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION revenue_engine.funnel_columns_altered();
REVOKE ALL ON FUNCTION revenue_engine.funnel_recount() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.funnel_columns_altered() FROM PUBLIC;

------------------------------------------------------------------------------
-- tenancy (src/tenancy/tenancy.sql): row level security on every tenant
-- table and view, and roles bound to a tenant.  Existing rows are not
-- touched; from now on the application role sees its tenant's rows only.
------------------------------------------------------------------------------
-- Roles bound to a tenant: written by bind_role() and unbind_role(), read by the C code.
CREATE TABLE revenue_engine.role_tenants (
    role     regrole     NOT NULL PRIMARY KEY,
    tenant   text        NOT NULL,
    bound_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE revenue_engine.role_tenants IS
    'roles bound to a tenant: their calls act for it whatever revenue_engine.tenant says; owner only';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.role_tenants', '');

-- Every backend caches bindings; a change resets the caches (relcache invalidation).
CREATE FUNCTION revenue_engine.role_tenants_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_role_tenants_changed';
CREATE TRIGGER role_tenants_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.role_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.role_tenants_changed();

-- A tenant name as revenue_engine.tenant accepts it (1 to 63 bytes, no control characters), or 22023.
CREATE FUNCTION revenue_engine.check_tenant(tenant text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_tenant';

CREATE FUNCTION revenue_engine.bind_role(role regrole, tenant text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r pg_roles;
BEGIN
    IF bind_role.role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_tenant(bind_role.tenant);
    SELECT * INTO r FROM pg_roles WHERE oid = bind_role.role;
    IF r.rolsuper OR r.rolbypassrls THEN
        RAISE EXCEPTION 'role "%" bypasses row level security and cannot be bound to a tenant', r.rolname
            USING ERRCODE = '22023',
                  HINT = 'Bind the role the application connects as: neither a superuser nor BYPASSRLS.';
    END IF;
    IF bind_role.role = (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'revenue_engine') THEN
        RAISE EXCEPTION 'role "%" owns the extension and cannot be bound to a tenant', r.rolname
            USING ERRCODE = '22023',
                  HINT = 'Bind the role the application connects as.';
    END IF;
    INSERT INTO revenue_engine.role_tenants AS b (role, tenant)
    VALUES (bind_role.role, bind_role.tenant)
    ON CONFLICT ON CONSTRAINT role_tenants_pkey DO UPDATE
       SET tenant = excluded.tenant, bound_at = excluded.bound_at;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.bind_role(regrole, text) IS
    'bind a role to a tenant: a session logged in as it, or SET ROLE to it, acts for that tenant only';

CREATE FUNCTION revenue_engine.unbind_role(role regrole)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF unbind_role.role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM revenue_engine.role_tenants b WHERE b.role = unbind_role.role;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.unbind_role(regrole) IS
    'remove a role''s binding (true if it had one): it acts for the tenant of revenue_engine.tenant again';

-- True in the delivery workers only; IMMUTABLE so that plans fold it (see tenancy.c).
CREATE FUNCTION revenue_engine.is_delivery_worker()
RETURNS boolean
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_is_delivery_worker';

-- A view whose tables the application reads anyway: as the invoker, the policies apply.
ALTER VIEW revenue_engine.user_lifetime_stats SET (security_invoker = true);

/*
 * Every relation with tenant rows.  A table gets row level security, enabled
 * and forced, and one policy; the tenant is a subquery so that it is computed
 * once per statement (an initplan), not once per row, and a scan can look it
 * up in the keys that lead with it; the delivery workers see every tenant.
 * A view that does not run as its invoker must filter on current_tenant()
 * itself, and becomes a security barrier.
 */
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind,
               coalesce('security_invoker=true' OPERATOR(pg_catalog.=) ANY (c.reloptions), false) AS invoker
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm']::"char"[])
           AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped
         ORDER BY c.relname
    LOOP
        IF r.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::"char"[]) THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', r.rel);
            EXECUTE pg_catalog.format(
                'CREATE POLICY tenant_isolation ON %s'
                ' USING (tenant_id OPERATOR(pg_catalog.=) (SELECT revenue_engine.current_tenant())'
                '        OR revenue_engine.is_delivery_worker())', r.rel);
        ELSIF r.relkind OPERATOR(pg_catalog.=) 'm' THEN
            RAISE EXCEPTION 'materialized view % holds tenant rows, which row level security cannot filter', r.rel;
        ELSIF NOT r.invoker THEN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w
                             JOIN pg_catalog.pg_depend d
                               ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::regclass
                              AND d.objid OPERATOR(pg_catalog.=) w.oid
                            WHERE w.ev_class OPERATOR(pg_catalog.=) r.rel
                              AND d.refobjid OPERATOR(pg_catalog.=) 'revenue_engine.current_tenant()'::regprocedure) THEN
                RAISE EXCEPTION 'view % shows tenant rows but does not filter them on revenue_engine.current_tenant()', r.rel
                    USING HINT = 'Add WHERE tenant_id = revenue_engine.current_tenant(), or make it security_invoker if the application may read its tables.';
            END IF;
            EXECUTE pg_catalog.format('ALTER VIEW %s SET (security_barrier = true)', r.rel);
        END IF;
    END LOOP;
END
$do$;

REVOKE ALL ON revenue_engine.role_tenants FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.role_tenants_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.check_tenant(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.bind_role(regrole, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.unbind_role(regrole) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.is_delivery_worker() FROM PUBLIC;
-- Planning a query of a tenant table evaluates it, as the one who queries.
GRANT EXECUTE ON FUNCTION revenue_engine.is_delivery_worker() TO revenue_engine_user;


-- Statements Citus can plan (README, Tenants): the tenant and the time are
-- parameters of every statement, computed once per call; funnel_by_tag,
-- blast_stage_times and reset_usage_type are PL/pgSQL.  The functions keep
-- their identity, so their grants and comments stay.

CREATE OR REPLACE FUNCTION revenue_engine.set_user_profile(
    user_id     uuid,
    timezone    text  DEFAULT NULL,
    daily_goals jsonb DEFAULT NULL)
RETURNS revenue_engine.user_profiles
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tz    text;
    k     text;
    v     jsonb;
    goals jsonb;
    row   revenue_engine.user_profiles;
    -- the tenant and the time, once per call, are parameters of the
    -- statements (Citus routes by tenant_id = $n and evaluates no STABLE
    -- function on columns in ON CONFLICT ... DO UPDATE)
    tenant text := revenue_engine.current_tenant();
    ts    timestamptz := now();
BEGIN
    IF set_user_profile.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF set_user_profile.timezone IS NOT NULL THEN
        tz := revenue_engine.canonical_timezone(set_user_profile.timezone);
    END IF;
    IF set_user_profile.daily_goals IS NOT NULL THEN
        IF jsonb_typeof(set_user_profile.daily_goals) <> 'object' THEN
            RAISE EXCEPTION 'daily_goals must be a JSON object, not %', set_user_profile.daily_goals
                USING ERRCODE = '22023',
                      HINT = 'Map usage types to goals, such as ''{"reply": 20}''; null removes a goal.';
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(set_user_profile.daily_goals) LOOP
            PERFORM revenue_engine.check_usage_type(k);
            IF jsonb_typeof(v) <> 'null' AND (jsonb_typeof(v) <> 'number'
                    OR v::numeric <> trunc(v::numeric) OR v::numeric <= 0 OR v::numeric > 2147483647) THEN
                RAISE EXCEPTION 'daily goal % for usage type "%" is not a positive integer', v, k
                    USING ERRCODE = '22023',
                          HINT = 'Map usage types to goals, such as ''{"reply": 20}''; null removes a goal.';
            END IF;
        END LOOP;
    END IF;

    SELECT p.daily_goals INTO goals FROM revenue_engine.user_profiles p
     WHERE p.tenant_id = tenant
       AND p.user_id = set_user_profile.user_id;
    goals := jsonb_strip_nulls(coalesce(goals, '{}') || coalesce(set_user_profile.daily_goals, '{}'));

    INSERT INTO revenue_engine.user_profiles AS p
           (tenant_id, user_id, timezone, daily_goals, created_at, updated_at)
    VALUES (tenant, set_user_profile.user_id, coalesce(tz, 'UTC'), goals, ts, ts)
    ON CONFLICT ON CONSTRAINT user_profiles_pkey DO UPDATE
       SET timezone = coalesce(tz, p.timezone),
           daily_goals = excluded.daily_goals,
           updated_at = excluded.updated_at
    RETURNING * INTO row;
    RETURN row;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.reset_usage_type(usage_type text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM revenue_engine.check_usage_type(reset_usage_type.usage_type);
    DELETE FROM revenue_engine.usage_types t WHERE t.usage_type = reset_usage_type.usage_type;
    RETURN FOUND;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.create_channel(
    name               text,
    url                text,
    method             text       DEFAULT 'POST',
    headers            jsonb      DEFAULT '{}',
    body_template      jsonb      DEFAULT '{}',
    message_id_path    text[]     DEFAULT NULL,
    timeout_ms         integer    DEFAULT 10000,
    connect_timeout_ms integer    DEFAULT 5000,
    max_in_flight      integer    DEFAULT 16,
    rate_limit         integer    DEFAULT NULL,
    rate_period        text       DEFAULT 'second',
    retry_schedule     interval[] DEFAULT '{5 seconds,1 minute,5 minutes,30 minutes}',
    enabled            boolean    DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id bigint;
    -- the tenant once, a parameter of the statements (Citus routes by it)
    tenant text := revenue_engine.current_tenant();
BEGIN
    IF name IS NULL OR url IS NULL OR method IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'name, url, method and enabled must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_name('channel name', name);
    IF EXISTS (SELECT 1 FROM revenue_engine.channels c
                WHERE c.tenant_id = tenant AND c.name = create_channel.name) THEN
        RAISE EXCEPTION 'channel "%" already exists', name USING ERRCODE = '42710';
    END IF;
    PERFORM revenue_engine.check_http_target(url, headers, timeout_ms, connect_timeout_ms,
                                             max_in_flight, rate_limit, rate_period, retry_schedule);
    IF upper(method) NOT IN ('POST', 'PUT', 'PATCH') THEN
        RAISE EXCEPTION 'method "%" is not POST, PUT or PATCH', method USING ERRCODE = '22023';
    END IF;
    IF body_template IS NULL OR jsonb_typeof(body_template) <> 'object' THEN
        RAISE EXCEPTION 'body_template must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF message_id_path IS NOT NULL AND (cardinality(message_id_path) = 0
                                        OR array_position(message_id_path, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'message_id_path must be a non-empty path without nulls, such as ''{messages,0,id}'''
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO revenue_engine.channels AS c
           (tenant_id, name, url, method, headers, body_template, message_id_path, timeout_ms,
            connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule,
            enabled, disabled_reason)
    VALUES (tenant, name, url, upper(method), headers, body_template, message_id_path, timeout_ms,
            connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule,
            enabled, CASE WHEN NOT enabled THEN 'created disabled' END)
    RETURNING c.id INTO new_id;
    RETURN new_id;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.enqueue_send(
    channel         text,
    payload         jsonb,
    idempotency_key text        DEFAULT NULL,
    scheduled_for   timestamptz DEFAULT NULL,
    user_id         uuid        DEFAULT NULL,
    metadata        jsonb       DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    ch     bigint;
    sid    bigint;
    -- the tenant and the time, once: parameters of the statements (Citus
    -- routes by tenant_id = $n, and takes no STABLE function in COALESCE)
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
BEGIN
    IF channel IS NULL OR payload IS NULL THEN
        RAISE EXCEPTION 'channel and payload must not be null' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object, not %', left(payload::text, 100)
            USING ERRCODE = '22023';
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF idempotency_key IS NOT NULL AND (length(idempotency_key) = 0 OR length(idempotency_key) > 200) THEN
        RAISE EXCEPTION 'idempotency key must have 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF scheduled_for IS NOT NULL AND NOT isfinite(scheduled_for) THEN
        RAISE EXCEPTION 'scheduled_for must be a finite time' USING ERRCODE = '22008';
    END IF;
    SELECT c.id INTO ch FROM revenue_engine.channels c
     WHERE c.tenant_id = tenant AND c.name = enqueue_send.channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = '42704';
    END IF;
    INSERT INTO revenue_engine.sends AS s
           (tenant_id, channel_id, idempotency_key, user_id, payload, metadata,
            scheduled_for, next_attempt_at)
    VALUES (tenant, ch, idempotency_key, user_id, payload, metadata,
            coalesce(scheduled_for, ts), coalesce(scheduled_for, ts))
    ON CONFLICT (tenant_id, channel_id, idempotency_key) DO NOTHING
    RETURNING s.id INTO sid;
    IF sid IS NULL THEN
        SELECT s.id INTO sid FROM revenue_engine.sends s
         WHERE s.tenant_id = tenant AND s.channel_id = ch
           AND s.idempotency_key = enqueue_send.idempotency_key;
    ELSE
        PERFORM revenue_engine.wake_worker();
    END IF;
    RETURN sid;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.set_channel_enabled(name text, enabled boolean, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- computed once: parameters of the UPDATE (see enqueue_send)
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    why    text := CASE WHEN set_channel_enabled.enabled THEN NULL
                        ELSE coalesce(reason, 'disabled by ' || current_user) END;
BEGIN
    IF name IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'name and enabled must not be null' USING ERRCODE = '22004';
    END IF;
    UPDATE revenue_engine.channels c
       SET enabled = set_channel_enabled.enabled,
           disabled_reason = why,
           updated_at = ts
     WHERE c.tenant_id = tenant AND c.name = set_channel_enabled.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    IF enabled THEN
        PERFORM revenue_engine.wake_worker();
    END IF;
    RETURN enabled;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.redrive_sends(
    channel text DEFAULT NULL,
    since   timestamptz DEFAULT '-infinity',
    until   timestamptz DEFAULT 'infinity')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
    -- computed once: parameters of the UPDATE (see enqueue_send)
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
BEGIN
    UPDATE revenue_engine.sends s
       SET status = 'queued', attempts = 0, next_attempt_at = ts, last_error = NULL
      FROM revenue_engine.channels c
     WHERE s.tenant_id = tenant AND s.status = 'failed'
       AND c.tenant_id = s.tenant_id AND c.id = s.channel_id
       AND (redrive_sends.channel IS NULL OR c.name = redrive_sends.channel)
       AND s.created_at >= since AND s.created_at < until;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM revenue_engine.wake_worker();
    RETURN n;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.set_channel_status_source(
    channel       text,
    webhook_kind  text     DEFAULT NULL,
    webhook_secret text    DEFAULT NULL,
    status_url    text     DEFAULT NULL,
    status_path   text[]   DEFAULT NULL,
    status_map    jsonb    DEFAULT '{}',
    poll_interval interval DEFAULT '5 minutes',
    poll_max_age  interval DEFAULT '3 days')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    k text;
    v jsonb;
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
BEGIN
    IF channel IS NULL OR status_map IS NULL OR poll_interval IS NULL OR poll_max_age IS NULL THEN
        RAISE EXCEPTION 'channel, status_map, poll_interval and poll_max_age must not be null'
            USING ERRCODE = '22004';
    END IF;
    IF webhook_kind IS NOT NULL AND webhook_kind NOT IN ('whatsapp', 'standard_webhooks') THEN
        RAISE EXCEPTION 'webhook kind "%" is not whatsapp or standard_webhooks', webhook_kind
            USING ERRCODE = '22023';
    END IF;
    IF (webhook_kind IS NULL) <> (webhook_secret IS NULL) THEN
        RAISE EXCEPTION 'webhook_kind and webhook_secret go together' USING ERRCODE = '22023';
    END IF;
    IF webhook_kind = 'whatsapp' AND length(webhook_secret) < 16 THEN
        RAISE EXCEPTION 'a WhatsApp app secret has at least 16 characters' USING ERRCODE = '22023';
    END IF;
    IF webhook_kind = 'standard_webhooks' THEN
        PERFORM revenue_engine.check_signing_secret(webhook_secret);
    END IF;
    IF (status_url IS NULL) <> (status_path IS NULL) THEN
        RAISE EXCEPTION 'status_url and status_path go together' USING ERRCODE = '22023';
    END IF;
    IF status_url IS NOT NULL THEN
        IF strpos(status_url, '{message_id}') = 0 THEN
            RAISE EXCEPTION 'status URL "%" has no {message_id} placeholder', status_url
                USING ERRCODE = '22023';
        END IF;
        PERFORM revenue_engine.check_url(replace(status_url, '{message_id}', 'x'));
        IF cardinality(status_path) = 0 OR array_position(status_path, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'status_path must be a non-empty path without nulls, such as ''{status}'''
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF jsonb_typeof(status_map) <> 'object' THEN
        RAISE EXCEPTION 'status_map must be a JSON object of provider status -> status'
            USING ERRCODE = '22023';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(status_map) LOOP
        IF jsonb_typeof(v) <> 'string'
           OR v #>> '{}' NOT IN ('sent', 'delivered', 'read', 'failed', 'pending') THEN
            RAISE EXCEPTION 'status_map maps "%" to %, not one of sent, delivered, read, failed, pending', k, v
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF poll_interval < interval '1 second' OR poll_max_age <= interval '0' THEN
        RAISE EXCEPTION 'poll_interval must be at least 1 second and poll_max_age positive'
            USING ERRCODE = '22023';
    END IF;
    UPDATE revenue_engine.channels c
       SET webhook_kind = set_channel_status_source.webhook_kind,
           webhook_secret = set_channel_status_source.webhook_secret,
           status_url = set_channel_status_source.status_url,
           status_path = set_channel_status_source.status_path,
           status_map = set_channel_status_source.status_map,
           poll_interval = set_channel_status_source.poll_interval,
           poll_max_age = set_channel_status_source.poll_max_age,
           updated_at = ts
     WHERE c.tenant_id = tenant AND c.name = channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = '42704';
    END IF;
    PERFORM revenue_engine.wake_worker();
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.funnel_by_tag(
    only_tag  text DEFAULT NULL,
    from_date date DEFAULT NULL,
    to_date   date DEFAULT NULL,
    OUT tag text, OUT follow_up_stage integer, OUT blasts bigint, OUT total bigint,
    OUT sent bigint, OUT delivered bigint, OUT read bigint, OUT replied bigint,
    OUT closed bigint, OUT failed bigint,
    OUT delivered_pct numeric, OUT read_pct numeric, OUT replied_pct numeric, OUT closed_pct numeric)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    tenant text := revenue_engine.current_tenant();
BEGIN
    -- as the owner (the application reads blast_counters through blast_funnel
    -- only), for the caller's tenant, which the policies enforce as well
    RETURN QUERY
    SELECT f.tag, f.follow_up_stage, count(*), sum(f.total)::bigint, sum(f.sent)::bigint,
           sum(f.delivered)::bigint, sum(f.read)::bigint, sum(f.replied)::bigint,
           sum(f.closed)::bigint, sum(f.failed)::bigint,
           round(100.0 * sum(f.delivered) / NULLIF(sum(f.total), 0), 1),
           round(100.0 * sum(f.read) / NULLIF(sum(f.total), 0), 1),
           round(100.0 * sum(f.replied) / NULLIF(sum(f.total), 0), 1),
           round(100.0 * sum(f.closed) / NULLIF(sum(f.total), 0), 1)
      FROM (SELECT b.tag, b.follow_up_stage,
                   coalesce(sum(k.total), 0) AS total, coalesce(sum(k.sent), 0) AS sent,
                   coalesce(sum(k.delivered), 0) AS delivered, coalesce(sum(k.read), 0) AS read,
                   coalesce(sum(k.replied), 0) AS replied, coalesce(sum(k.closed), 0) AS closed,
                   coalesce(sum(k.at_failed), 0) AS failed
              FROM revenue_engine.blasts b
              LEFT JOIN revenue_engine.blast_counters k
                     ON k.tenant_id = b.tenant_id AND k.blast_id = b.id
             WHERE b.tenant_id = tenant
               AND (only_tag IS NULL OR b.tag = only_tag)
               AND (from_date IS NULL OR (b.scheduled_for)::date >= from_date)
               AND (to_date IS NULL OR (b.scheduled_for)::date <= to_date)
             GROUP BY b.tenant_id, b.id) f
     GROUP BY f.tag, f.follow_up_stage
     ORDER BY f.tag, f.follow_up_stage;
END
$fn$;

CREATE OR REPLACE FUNCTION revenue_engine.blast_stage_times(
    blast_id bigint,
    OUT from_stage text, OUT to_stage text, OUT recipients bigint,
    OUT median interval, OUT p90 interval)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    tenant text := revenue_engine.current_tenant();
BEGIN
    RETURN QUERY
    SELECT s.from_stage, s.to_stage, count(s.d),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY s.d),
           percentile_cont(0.9) WITHIN GROUP (ORDER BY s.d)
      FROM revenue_engine.blast_recipients r
      CROSS JOIN LATERAL (VALUES
           (1, 'queued', 'sent', r.sent_at - r.created_at),
           (2, 'sent', 'delivered', r.delivered_at - r.sent_at),
           (3, 'delivered', 'read', r.read_at - r.delivered_at),
           (4, 'read', 'replied', r.replied_at - r.read_at),
           (5, 'replied', 'closed', r.closed_at - r.replied_at)) AS s(ord, from_stage, to_stage, d)
     WHERE r.tenant_id = tenant AND r.blast_id = blast_stage_times.blast_id
     GROUP BY s.ord, s.from_stage, s.to_stage
     ORDER BY s.ord;
END
$fn$;

/*
 * Tenant forms: for every function the application calls on tenant rows, an
 * overload of the same name whose first argument is "tenant text", followed
 * by the plain form's arguments, such as
 *
 *     revenue_engine.track_daily_usage(tenant text, user_id uuid,
 *         usage_type text, count integer, usage_date date)
 *
 * The tenant argument alone decides the tenant of everything the call reads
 * and writes, so a Citus cluster can distribute the function by it
 * (create_distributed_function(..., distribution_arg_name => 'tenant')) and
 * run the call on the node that holds the tenant.  Rules (re_tenant_form in
 * tenancy.c, one C function for all of them):
 *
 * - the tenant is checked like the setting revenue_engine.tenant (22023);
 * - a session whose roles are bound to a tenant may name only its own
 *   tenant; another is an error (42501) naming both, never replaced;
 * - an unbound session acts for the named tenant for this call only; the
 *   setting is neither read nor changed, and nothing remains after the call,
 *   however it ends;
 * - the plain form runs unchanged (its SECURITY DEFINER, search_path and
 *   checks), and EXECUTE on it is required too.
 *
 * A tenant form has no defaults: every argument is required.  With defaults
 * it would capture calls of the plain form: a call with untyped literals
 * such as track_daily_usage('<uuid>', 'reply', '2') would match both with
 * three arguments, and PostgreSQL prefers the string category (text) for an
 * untyped literal, so 'tenant text' would win and the uuid become the tenant.
 * Without defaults, a tenant form takes exactly one argument more than the
 * plain form's full list, so a call resolves as before whatever its notation.
 *
 * The forms are generated from the list below, with the plain form's argument
 * names and types (OUT arguments included), result, volatility and parallel
 * safety, and granted to revenue_engine_user when the plain form is.  Runs
 * after every module (and tenancy.sql's grants).
 */
DO $do$
DECLARE
    plain  regprocedure;
    p      pg_catalog.pg_proc;
    lib    text;
    args   text;
    result text;
    tenant_form text;
BEGIN
    SELECT c.probin INTO STRICT lib FROM pg_catalog.pg_proc c
     WHERE c.oid OPERATOR(pg_catalog.=) 'revenue_engine.check_tenant(text)'::pg_catalog.regprocedure;
    FOREACH plain IN ARRAY ARRAY[
        -- usage
        'revenue_engine.track_daily_usage(uuid, text, integer, date)',
        'revenue_engine.set_user_profile(uuid, text, jsonb)',
        'revenue_engine.backfill_usage(text, boolean)',
        -- events and their delivery
        'revenue_engine.enqueue_event(uuid, text, jsonb)',
        'revenue_engine.redrive(text, timestamptz, timestamptz)',
        -- messaging and blasts
        'revenue_engine.enqueue_send(text, jsonb, text, timestamptz, uuid, jsonb)',
        'revenue_engine.redrive_sends(text, timestamptz, timestamptz)',
        'revenue_engine.create_blast(text, text, jsonb, text, text, jsonb, jsonb, timestamptz, integer, text)',
        'revenue_engine.record_message_status(text, text, timestamptz, text, jsonb)',
        'revenue_engine.record_inbound_message(text, timestamptz, text, jsonb)',
        'revenue_engine.mark_closed(text, numeric, timestamptz, bigint, jsonb)',
        'revenue_engine.ingest_status_webhook(text, jsonb, text)',
        'revenue_engine.funnel_by_tag(text, date, date)',
        'revenue_engine.blast_stage_times(bigint)'
    ]::pg_catalog.regprocedure[] LOOP
        SELECT * INTO STRICT p FROM pg_catalog.pg_proc c WHERE c.oid OPERATOR(pg_catalog.=) plain;
        -- every argument but TABLE columns, which the result names, without defaults
        SELECT pg_catalog.string_agg(
                   CASE a.mode WHEN 'o' THEN 'OUT ' WHEN 'b' THEN 'INOUT ' WHEN 'v' THEN 'VARIADIC ' ELSE '' END
                   OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.name) OPERATOR(pg_catalog.||) ' '
                   OPERATOR(pg_catalog.||) pg_catalog.format_type(a.typ, NULL), ', ' ORDER BY a.n)
          INTO args
          FROM ROWS FROM (pg_catalog.unnest(coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[])),
                          pg_catalog.unnest(coalesce(p.proargmodes,
                                                     pg_catalog.array_fill('i'::"char", ARRAY[p.pronargs]))),
                          pg_catalog.unnest(p.proargnames)) WITH ORDINALITY AS a(typ, mode, name, n)
         WHERE a.mode OPERATOR(pg_catalog.<>) 't';
        result := CASE WHEN 't' OPERATOR(pg_catalog.=) ANY (p.proargmodes) THEN pg_catalog.pg_get_function_result(plain)
                       ELSE CASE WHEN p.proretset THEN 'SETOF ' ELSE '' END
                            OPERATOR(pg_catalog.||) pg_catalog.format_type(p.prorettype, NULL) END;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION revenue_engine.%I(tenant text, %s) RETURNS %s LANGUAGE C %s PARALLEL %s AS %L, %L',
            p.proname, args, result,
            CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
            CASE p.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
            lib, 're_tenant_form');
        tenant_form := pg_catalog.format('revenue_engine.%I(text, %s)', p.proname,
                                         pg_catalog.oidvectortypes(p.proargtypes));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', tenant_form,
                                  'tenant form of ' OPERATOR(pg_catalog.||) plain::text
                                  OPERATOR(pg_catalog.||) ': the same call for the tenant named first (see README, Tenants)');
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', tenant_form);
        IF pg_catalog.has_function_privilege('revenue_engine_user', plain, 'EXECUTE') THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO revenue_engine_user', tenant_form);
        END IF;
    END LOOP;
END
$do$;

------------------------------------------------------------------------------
-- citus (src/citus/citus.sql): revenue_engine.distribute(), new in 0.2.0.
------------------------------------------------------------------------------
CREATE FUNCTION revenue_engine.distribute()
RETURNS TABLE (object text, distributed_as text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    todo regclass[];
    left_over regclass[];
    is_coordinator boolean;
    anchor CONSTANT text := 'revenue_engine.user_profiles';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'revenue_engine.distribute() needs the citus extension in database "%"', pg_catalog.current_database()
            USING ERRCODE = '0A000',
                  HINT = 'CREATE EXTENSION citus on the coordinator, add the worker nodes, then call it again.';
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO is_coordinator;
    IF NOT is_coordinator THEN
        RAISE EXCEPTION 'revenue_engine.distribute() runs on the Citus coordinator, not on worker node %',
            pg_catalog.inet_server_addr()
            USING ERRCODE = '0A000';
    END IF;
    -- the tenant tables carry triggers (the funnel's, the outcome of sends)
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);

    /*
     * The funnel's bulk triggers read transition tables, which do not exist
     * on a shard: per-row triggers (the same C function) count inserts and
     * deletes instead, each into the blast_counters shard colocated with the
     * row's shard (src/blasts/funnel.c).
     */
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                WHERE tgrelid OPERATOR(pg_catalog.=) 'revenue_engine.blast_recipients'::regclass
                  AND tgname OPERATOR(pg_catalog.=) 'blast_recipients_funnel_insert') THEN
        DROP TRIGGER blast_recipients_funnel_insert ON revenue_engine.blast_recipients;
        DROP TRIGGER blast_recipients_funnel_delete ON revenue_engine.blast_recipients;
        CREATE TRIGGER blast_recipients_funnel_insert_row
            AFTER INSERT ON revenue_engine.blast_recipients
            FOR EACH ROW EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
        CREATE TRIGGER blast_recipients_funnel_delete_row
            AFTER DELETE ON revenue_engine.blast_recipients
            FOR EACH ROW EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
        object := 'revenue_engine.blast_recipients'; distributed_as := 'funnel triggers per row';
        RETURN NEXT;
    END IF;

    -- configuration: a copy on every node
    FOR r IN
        SELECT c.oid::regclass AS rel
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                              AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                            WHERE p.logicalrelid OPERATOR(pg_catalog.=) c.oid)
         ORDER BY c.relname
    LOOP
        PERFORM pg_catalog.create_reference_table(r.rel);
        object := r.rel::text; distributed_as := 'reference table';
        RETURN NEXT;
    END LOOP;

    /*
     * Tenant tables: by tenant_id, colocated with user_profiles; a table
     * after the tables its foreign keys reference.  Row level security's
     * policy evaluates the tenant per row on a shard (Citus takes no subquery
     * in a policy of a distributed table).
     */
    SELECT pg_catalog.array_agg(c.oid::regclass ORDER BY c.relname OPERATOR(pg_catalog.<>) 'user_profiles', c.relname)
      INTO todo
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
       AND c.relkind OPERATOR(pg_catalog.=) 'r'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                      AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                        WHERE p.logicalrelid OPERATOR(pg_catalog.=) c.oid);
    WHILE pg_catalog.cardinality(todo) OPERATOR(pg_catalog.>) 0 LOOP
        left_over := '{}';
        FOR r IN SELECT t.rel, t.i FROM pg_catalog.unnest(todo) WITH ORDINALITY AS t(rel, i) ORDER BY t.i LOOP
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                        WHERE k.conrelid OPERATOR(pg_catalog.=) r.rel AND k.contype OPERATOR(pg_catalog.=) 'f'
                          AND k.confrelid OPERATOR(pg_catalog.<>) r.rel
                          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                           WHERE p.logicalrelid OPERATOR(pg_catalog.=) k.confrelid)) THEN
                left_over := left_over OPERATOR(pg_catalog.||) r.rel;
                CONTINUE;
            END IF;
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy
                        WHERE polrelid OPERATOR(pg_catalog.=) r.rel
                          AND polname OPERATOR(pg_catalog.=) 'tenant_isolation') THEN
                EXECUTE pg_catalog.format('DROP POLICY tenant_isolation ON %s', r.rel);
                EXECUTE pg_catalog.format(
                    'CREATE POLICY tenant_isolation ON %s'
                    ' USING (tenant_id OPERATOR(pg_catalog.=) revenue_engine.current_tenant()'
                    '        OR revenue_engine.is_delivery_worker())', r.rel);
            END IF;
            IF r.rel OPERATOR(pg_catalog.=) anchor::regclass THEN
                PERFORM pg_catalog.create_distributed_table(r.rel, 'tenant_id');
            ELSE
                PERFORM pg_catalog.create_distributed_table(r.rel, 'tenant_id', colocate_with => anchor);
            END IF;
            object := r.rel::text; distributed_as := 'distributed by tenant_id';
            RETURN NEXT;
        END LOOP;
        IF pg_catalog.cardinality(left_over) OPERATOR(pg_catalog.=) pg_catalog.cardinality(todo) THEN
            RAISE EXCEPTION 'tables % reference tables that are not distributed', left_over
                USING ERRCODE = '55000';
        END IF;
        todo := left_over;
    END LOOP;

    /*
     * Views that filter on the session's tenant: as a subquery, which the
     * coordinator evaluates once (a distributed subplan) and sends as a
     * value; a bare call would be shipped with the query and evaluated on
     * the workers, where the session's revenue_engine.tenant is not (an
     * error there, src/tenancy/tenancy.c).  Their options are kept.
     */
    FOR r IN
        SELECT c.oid::regclass AS rel, pg_catalog.pg_get_viewdef(c.oid) AS def, c.reloptions AS opts
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'v'
           AND pg_catalog.strpos(pg_catalog.pg_get_viewdef(c.oid), 'revenue_engine.current_tenant()') OPERATOR(pg_catalog.>) 0
           AND pg_catalog.strpos(pg_catalog.pg_get_viewdef(c.oid), 'SELECT revenue_engine.current_tenant()') OPERATOR(pg_catalog.=) 0
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW %s AS %s', r.rel,
                    pg_catalog.replace(r.def, 'revenue_engine.current_tenant()',
                                       '(SELECT revenue_engine.current_tenant() AS current_tenant)'));
        IF r.opts IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER VIEW %s SET (%s)', r.rel, pg_catalog.array_to_string(r.opts, ', '));
        END IF;
        object := r.rel::text; distributed_as := 'view: tenant filter evaluated on the coordinator';
        RETURN NEXT;
    END LOOP;

    /*
     * A worker node inserts too (a distributed call, the delivery worker's
     * attempt log): each node's identity sequences get a range of their own,
     * as Citus gives the tables it creates there (the extension created
     * these itself on every node).  A node added later needs distribute()
     * again.
     */
    FOR r IN
        SELECT DISTINCT a.attrelid::regclass AS rel
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND a.attidentity OPERATOR(pg_catalog.<>) '' AND NOT a.attisdropped
    LOOP
        PERFORM 1 FROM pg_catalog.run_command_on_workers(pg_catalog.format(
                    'SELECT pg_catalog.worker_adjust_identity_column_seq_ranges(%L::regclass)', r.rel::text)) w
          WHERE NOT w.success;
        IF FOUND THEN
            RAISE EXCEPTION 'could not give the identity sequence of % a range of its own on every worker node', r.rel
                USING ERRCODE = '55000';
        END IF;
    END LOOP;

    /*
     * The tenant-first forms of the app-facing functions (first argument
     * "tenant text"): a call runs on the node that holds its tenant.  The
     * forms without it are left on the coordinator, where the session's
     * revenue_engine.tenant is: their statements are routed by tenant_id.
     */
    FOR r IN
        SELECT p.oid::regprocedure AS fn
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND p.pronargs OPERATOR(pg_catalog.>) 0
           AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'pg_catalog.text'::regtype
           AND p.proargnames[1] OPERATOR(pg_catalog.=) 'tenant'
           AND p.prokind OPERATOR(pg_catalog.=) 'f'
           AND pg_catalog.has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_object o
                            WHERE o.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::regclass
                              AND o.objid OPERATOR(pg_catalog.=) p.oid
                              AND o.distribution_argument_index IS NOT NULL)
         ORDER BY 1::text
    LOOP
        PERFORM pg_catalog.create_distributed_function(r.fn, 'tenant', colocate_with => anchor);
        object := r.fn::text; distributed_as := 'function distributed by tenant';
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.distribute() IS
    'on a Citus coordinator: configuration tables as reference tables, tenant tables distributed by tenant_id and colocated, tenant-first functions distributed by their tenant';
REVOKE ALL ON FUNCTION revenue_engine.distribute() FROM PUBLIC;

-- Campaign scheduling (issue 12, foundation): when a step is due.  Pure
-- arithmetic on its arguments (src/campaigns/schedule.c; the campaign
-- scheduler calls the same C code).  IMMUTABLE like pg_catalog.timezone(text,
-- timestamptz): the result depends on the arguments and the server's time zone
-- database only, never on the session's TimeZone (a NULL timezone means
-- fallback_timezone, default UTC).
CREATE FUNCTION revenue_engine.next_send_time(
    start_at          timestamptz,
    delay_amount      integer,
    delay_unit        text,
    timezone          text    DEFAULT NULL,
    window_start      time    DEFAULT NULL,
    window_end        time    DEFAULT NULL,
    quiet_start       time    DEFAULT NULL,
    quiet_end         time    DEFAULT NULL,
    holidays          date[]  DEFAULT NULL,
    at_local_time     time    DEFAULT NULL,
    fallback_timezone text    DEFAULT 'UTC')
RETURNS timestamptz
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_next_send_time_sql';
COMMENT ON FUNCTION revenue_engine.next_send_time(timestamptz, integer, text, text, time, time,
                                                  time, time, date[], time, text) IS
    'the instant a campaign step started at start_at is due: delay in minutes/hours (elapsed), days/weeks/business_days (calendar, in the contact''s zone), then at_local_time, then the send window and quiet hours (local, DST-correct)';
REVOKE ALL ON FUNCTION revenue_engine.next_send_time(timestamptz, integer, text, text, time, time,
                                                     time, time, date[], time, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.next_send_time(timestamptz, integer, text, text, time, time,
                                                        time, time, date[], time, text)
    TO revenue_engine_user;
