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
    bad      record;
    pairs    revenue_engine.backfill_pair[];
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
    pairs := ARRAY(
        SELECT ROW(x.*)::revenue_engine.backfill_pair FROM (
            SELECT s.user_id, s.usage_type,
                   coalesce(p.timezone, 'UTC') AS tz,
                   coalesce((p.daily_goals ->> s.usage_type)::integer,
                            CASE WHEN t.usage_type IS NOT NULL THEN t.daily_goal ELSE b.daily_goal END) AS goal,
                   CASE WHEN t.usage_type IS NOT NULL THEN t.milestones ELSE b.milestones END AS milestones,
                   CASE WHEN t.usage_type IS NOT NULL THEN t.is_feature ELSE b.is_feature END AS is_feature,
                   timezone(coalesce(p.timezone, 'UTC'), revenue_engine.clock_now())::date AS today,
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
      JOIN unnest(pairs) pr ON pr.user_id = s.user_id AND pr.usage_type = s.usage_type
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
      JOIN unnest(pairs) pr ON pr.user_id = pp.user_id AND pr.usage_type = pp.usage_type
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
          FROM unnest(pairs) pr
          JOIN revenue_engine.lifetime_usage l
            ON l.tenant_id = tenant AND l.user_id = pr.user_id AND l.usage_type = pr.usage_type
         CROSS JOIN LATERAL unnest(pr.milestones) AS ms(milestone)
         WHERE ms.milestone <= l.total
        ON CONFLICT DO NOTHING
        RETURNING m.user_id, m.usage_type, m.milestone, m.lifetime_total, m.event_id
    ), latest AS (
        UPDATE revenue_engine.lifetime_usage l
           SET latest_milestone = x.milestone, latest_milestone_at = now()
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
          JOIN unnest(pairs) pr ON pr.user_id = i.user_id AND pr.usage_type = i.usage_type
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = i.user_id
         WHERE emit_events
        RETURNING 1
    )
    SELECT count(*) INTO n_ms FROM ins;

    -- Goals reached on days not yet marked.
    WITH g AS (
        UPDATE revenue_engine.daily_usage d
           SET goal = pr.goal,
               goal_achieved_at = least(now(), ((d.usage_date + 1)::timestamp AT TIME ZONE pr.tz)
                                               - interval '1 microsecond')
          FROM unnest(pairs) pr
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
          JOIN unnest(pairs) pr
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
              JOIN unnest(pairs) pr
                ON d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
             WHERE d.goal_achieved_at IS NOT NULL
             ORDER BY d.user_id, d.usage_type, d.usage_date DESC) x
     WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type;

    SELECT count(*) INTO n_new FROM unnest(pairs) pr WHERE pr.is_new AND pr.is_feature;
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
          FROM unnest(pairs) pr
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = pr.user_id
         WHERE pr.is_new AND pr.is_feature;
    END IF;

    RETURN jsonb_build_object(
               'rows', cardinality(user_ids),
               'users', (SELECT count(DISTINCT pr.user_id) FROM unnest(pairs) pr),
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
    tenant   text := revenue_engine.current_tenant();
    ch       bigint;
    nraw     integer;
    bad      text;
    problems text[];
    ok_pos    integer[];
    ok_phones text[];
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
            coalesce(scheduled_for, now()), recipient_count, duplicates, rejected)
    RETURNING b.id INTO blast_id;
    INSERT INTO revenue_engine.blast_counters (tenant_id, blast_id, slot)
    SELECT tenant, blast_id, s FROM generate_series(0, slots - 1) s;
    INSERT INTO revenue_engine.blast_rejections (tenant_id, blast_id, position, input, reason)
    SELECT tenant, blast_id, c.position, c.input, c.problem
      FROM unnest(inputs, problems) WITH ORDINALITY AS c(input, problem, position)
     WHERE c.problem IS NOT NULL;

    WITH r AS (
        INSERT INTO revenue_engine.blast_recipients (tenant_id, blast_id, phone, name, contact_id)
        SELECT tenant, blast_id, o.phone, n.name, n.contact_id
          FROM unnest(ok_pos, ok_phones) AS o(position, phone)
          JOIN unnest(inputs, names, contact_ids) WITH ORDINALITY AS n(input, name, contact_id, position)
            ON n.position = o.position
         ORDER BY o.position
        RETURNING id, phone, name)
    INSERT INTO revenue_engine.sends
           (tenant_id, channel_id, payload, scheduled_for, next_attempt_at, blast_id, recipient_id,
            metadata)
    SELECT tenant, ch,
           payload || jsonb_build_object('to', r.phone)
             || CASE WHEN message IS NOT NULL
                     THEN jsonb_build_object('type', 'text', 'text', jsonb_build_object('body',
                              replace(replace(message, '{{name}}', coalesce(r.name, '')), '{{phone}}', r.phone)))
                     ELSE jsonb_build_object('type', 'template', 'template', template) END,
           coalesce(scheduled_for, now()), coalesce(scheduled_for, now()), blast_id, r.id,
           jsonb_build_object('blast_id', blast_id)
      FROM r ORDER BY r.id;

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
