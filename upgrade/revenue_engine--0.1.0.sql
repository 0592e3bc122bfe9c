/*
 * revenue_engine: base objects shared by every module (roles, tenant helper).
 * The install script is this file followed by each module's SQL (see Makefile).
 */
\echo Use "CREATE EXTENSION revenue_engine" to load this file. \quit

/*
 * The role an application is granted to call the extension's functions.
 * Roles are cluster-wide, so it is created only when missing and is left in
 * place by DROP EXTENSION (another database may still use it).
 */
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                   WHERE rolname OPERATOR(pg_catalog.=) 'revenue_engine_user') THEN
        CREATE ROLE revenue_engine_user NOLOGIN;
    END IF;
END
$do$;

REVOKE ALL ON SCHEMA revenue_engine FROM PUBLIC;
GRANT USAGE ON SCHEMA revenue_engine TO revenue_engine_user;

-- The tenant of the current session: revenue_engine.tenant, 'default' unless set.
CREATE FUNCTION revenue_engine.current_tenant()
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_current_tenant';
COMMENT ON FUNCTION revenue_engine.current_tenant() IS
    'the tenant of this session (setting revenue_engine.tenant), ''default'' unless set';
-- now(), or revenue_engine.clock_override when a test or demo sets it.
CREATE FUNCTION revenue_engine.clock_now()
RETURNS timestamptz
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_clock_now_sql';

REVOKE ALL ON FUNCTION revenue_engine.current_tenant() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.clock_now() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.clock_now() TO revenue_engine_user;
GRANT EXECUTE ON FUNCTION revenue_engine.current_tenant() TO revenue_engine_user;
/*
 * outbox: the durable table of events.  Rows are written in the caller's own
 * transaction; delivery (a later module) reads them after commit.
 */

CREATE TABLE revenue_engine.webhook_events (
    tenant_id       text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id              uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    user_id         uuid,
    event_type      text        NOT NULL,
    event_data      jsonb       NOT NULL DEFAULT '{}',
    user_data       jsonb,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at         timestamptz,
    error_message   text,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT webhook_events_status_check
        CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT webhook_events_attempts_check CHECK (attempts >= 0)
) WITH (fillfactor = 90);
COMMENT ON TABLE revenue_engine.webhook_events IS
    'the outbox: one row per event, written in the transaction that caused it';
COMMENT ON COLUMN revenue_engine.webhook_events.user_data IS
    'the "user" object of the payload, built at enqueue time by revenue_engine.user_payload_function';
COMMENT ON COLUMN revenue_engine.webhook_events.next_attempt_at IS
    'when the event is next due for delivery (the earliest of its pending deliveries)';

CREATE INDEX webhook_events_user_idx
    ON revenue_engine.webhook_events (tenant_id, user_id, created_at);

SELECT pg_catalog.pg_extension_config_dump('revenue_engine.webhook_events', '');

-- Application-defined events (payment_failed, trial_ending ...) enter the same outbox.
CREATE FUNCTION revenue_engine.enqueue_event(
    user_id    uuid,
    event_type text,
    event_data jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_enqueue_event';
COMMENT ON FUNCTION revenue_engine.enqueue_event(uuid, text, jsonb) IS
    'write an application event into the outbox in the current transaction; returns its id';

-- The "user" object for a user, from revenue_engine.user_payload_function (NULL if unset).
CREATE FUNCTION revenue_engine.user_payload(user_id uuid)
RETURNS jsonb
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_user_payload';
COMMENT ON FUNCTION revenue_engine.user_payload(uuid) IS
    'the payload''s "user" object, built by the function named in revenue_engine.user_payload_function';

REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.enqueue_event(uuid, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.user_payload(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.enqueue_event(uuid, text, jsonb) TO revenue_engine_user;
GRANT SELECT ON revenue_engine.webhook_events TO revenue_engine_user;
/*
 * delivery: endpoints that receive events, one delivery row per (event,
 * endpoint) following the state machine pending -> sending -> sent / dead,
 * and the log of every attempt.  The worker (src/worker) drives the rows.
 */

-- Event types applications enqueue besides the built-in ones.
CREATE TABLE revenue_engine.event_types (
    event_type  text        NOT NULL PRIMARY KEY,
    description text,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE revenue_engine.event_types IS
    'event types the application enqueues with enqueue_event, besides the built-in ones';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.event_types', '');

CREATE FUNCTION revenue_engine.builtin_event_types()
RETURNS SETOF text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_builtin_event_types';

CREATE FUNCTION revenue_engine.register_event_type(event_type text, description text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF register_event_type.event_type IS NULL THEN
        RAISE EXCEPTION 'event_type must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_name('event type', register_event_type.event_type);
    IF register_event_type.event_type IN (SELECT revenue_engine.builtin_event_types()) THEN
        RETURN false;
    END IF;
    INSERT INTO revenue_engine.event_types (event_type, description)
    VALUES (register_event_type.event_type, register_event_type.description)
    ON CONFLICT ON CONSTRAINT event_types_pkey DO UPDATE
       SET description = coalesce(excluded.description, event_types.description);
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.register_event_type(text, text) IS
    'allow enqueue_event and endpoint filters to use an application event type';

CREATE FUNCTION revenue_engine.check_name(what text, name text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_name_sql';

CREATE TABLE revenue_engine.endpoints (
    tenant_id           text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id                  bigint      GENERATED ALWAYS AS IDENTITY,
    name                text        NOT NULL,
    url                 text        NOT NULL,
    event_types         text[],
    headers             jsonb       NOT NULL DEFAULT '{}',
    signing_secrets     text[]      NOT NULL DEFAULT '{}',
    timeout_ms          integer     NOT NULL DEFAULT 10000,
    connect_timeout_ms  integer     NOT NULL DEFAULT 5000,
    max_in_flight       integer     NOT NULL DEFAULT 64,
    rate_limit          integer,
    rate_period         text        NOT NULL DEFAULT 'second',
    retry_schedule      interval[]  NOT NULL
        DEFAULT '{5 seconds,5 minutes,30 minutes,2 hours,5 hours,10 hours,10 hours}',
    circuit_break_after interval    NOT NULL DEFAULT '3 days',
    enabled             boolean     NOT NULL DEFAULT true,
    disabled_reason     text,
    disabled_at         timestamptz,
    failing_since       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    CONSTRAINT endpoints_rate_period_check CHECK (rate_period IN ('second', 'minute')),
    CONSTRAINT endpoints_timeout_check CHECK (timeout_ms BETWEEN 1 AND 600000
                                              AND connect_timeout_ms BETWEEN 1 AND 600000),
    CONSTRAINT endpoints_max_in_flight_check CHECK (max_in_flight BETWEEN 1 AND 10000),
    CONSTRAINT endpoints_rate_limit_check CHECK (rate_limit > 0)
);
COMMENT ON TABLE revenue_engine.endpoints IS
    'HTTP endpoints that receive events; holds secrets, so the application role reads endpoints_public';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.endpoints', '');

CREATE VIEW revenue_engine.endpoints_public AS
SELECT tenant_id, id, name, url, event_types,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       pg_catalog.cardinality(signing_secrets) AS signing_secrets,
       timeout_ms, connect_timeout_ms, max_in_flight, rate_limit, rate_period,
       retry_schedule, circuit_break_after, enabled, disabled_reason, disabled_at,
       failing_since, created_at, updated_at
  FROM revenue_engine.endpoints;
COMMENT ON VIEW revenue_engine.endpoints_public IS 'endpoints without their secrets';

-- One row per (event, endpoint): the delivery state machine.
CREATE TABLE revenue_engine.deliveries (
    tenant_id       text        NOT NULL,
    event_id        uuid        NOT NULL,
    endpoint_id     bigint      NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_until     timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at         timestamptz,
    PRIMARY KEY (tenant_id, event_id, endpoint_id),
    CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'sending', 'sent', 'dead'))
) WITH (fillfactor = 80);
COMMENT ON TABLE revenue_engine.deliveries IS
    'one row per event and endpoint: pending -> sending -> sent, retried, or dead (redrivable)';
CREATE INDEX deliveries_due_idx ON revenue_engine.deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_sending_idx ON revenue_engine.deliveries (lease_until)
    WHERE status = 'sending';
CREATE INDEX deliveries_dead_idx ON revenue_engine.deliveries (endpoint_id, created_at)
    WHERE status = 'dead';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.deliveries', '');

-- Every HTTP attempt, events' and sends' alike; purged after revenue_engine.attempt_retention.
CREATE TABLE revenue_engine.delivery_attempts (
    tenant_id     text        NOT NULL,
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    kind          text        NOT NULL,
    event_id      uuid,
    endpoint_id   bigint,
    send_id       bigint,
    channel_id    bigint,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    latency_ms    real        NOT NULL,
    status_code   integer,
    outcome       text        NOT NULL,
    error         text,
    response_body text,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT delivery_attempts_kind_check CHECK (kind IN ('event', 'send')),
    CONSTRAINT delivery_attempts_outcome_check CHECK (outcome IN ('sent', 'retry', 'dead'))
);
COMMENT ON TABLE revenue_engine.delivery_attempts IS
    'the log of HTTP attempts: status, latency, error and the response body capped at 20 kB';
CREATE INDEX delivery_attempts_started_idx ON revenue_engine.delivery_attempts (started_at);

CREATE FUNCTION revenue_engine.check_url(url text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_url';
CREATE FUNCTION revenue_engine.check_signing_secret(secret text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_signing_secret';

-- Validates the settings shared by endpoints and channels; raises on bad input.
CREATE FUNCTION revenue_engine.check_http_target(
    url text, headers jsonb, timeout_ms integer, connect_timeout_ms integer,
    max_in_flight integer, rate_limit integer, rate_period text, retry_schedule interval[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    k text;
    v jsonb;
    i interval;
BEGIN
    PERFORM revenue_engine.check_url(url);
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'headers must be a JSON object of strings, not %', coalesce(headers::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'For example ''{"Authorization": "Bearer ..."}''.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(headers) LOOP
        IF k !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
            RAISE EXCEPTION 'header name "%" is not a valid HTTP header name', k USING ERRCODE = '22023';
        END IF;
        IF lower(k) IN ('host', 'content-length', 'transfer-encoding', 'connection', 'expect')
           OR lower(k) LIKE 'webhook-%' THEN
            RAISE EXCEPTION 'header "%" is set by revenue_engine and cannot be configured', k
                USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(v) <> 'string' OR (v #>> '{}') ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' THEN
            RAISE EXCEPTION 'header "%" must have a string value without control characters', k
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF timeout_ms IS NULL OR timeout_ms < 1 OR timeout_ms > 600000 THEN
        RAISE EXCEPTION 'timeout % ms is out of range', coalesce(timeout_ms::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use 1 to 600000 milliseconds.';
    END IF;
    IF connect_timeout_ms IS NULL OR connect_timeout_ms < 1 OR connect_timeout_ms > 600000 THEN
        RAISE EXCEPTION 'connect timeout % ms is out of range', coalesce(connect_timeout_ms::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use 1 to 600000 milliseconds.';
    END IF;
    IF max_in_flight IS NULL OR max_in_flight < 1 OR max_in_flight > 10000 THEN
        RAISE EXCEPTION 'max_in_flight % is out of range', coalesce(max_in_flight::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Use 1 to 10000 requests.';
    END IF;
    IF rate_limit IS NOT NULL AND rate_limit < 1 THEN
        RAISE EXCEPTION 'rate limit % is not a positive number', rate_limit
            USING ERRCODE = '22023', HINT = 'Pass NULL for no limit.';
    END IF;
    IF rate_period IS NULL OR rate_period NOT IN ('second', 'minute') THEN
        RAISE EXCEPTION 'rate period "%" is not "second" or "minute"', coalesce(rate_period, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF retry_schedule IS NULL OR cardinality(retry_schedule) > 30 THEN
        RAISE EXCEPTION 'a retry schedule has 0 to 30 delays' USING ERRCODE = '22023';
    END IF;
    FOREACH i IN ARRAY retry_schedule LOOP
        IF i IS NULL OR i <= interval '0' OR i > interval '7 days' THEN
            RAISE EXCEPTION 'retry delay % is out of range', coalesce(i::text, 'NULL')
                USING ERRCODE = '22023', HINT = 'Each delay is more than 0 and at most 7 days.';
        END IF;
    END LOOP;
END
$fn$;

CREATE FUNCTION revenue_engine.create_endpoint(
    name                  text,
    url                   text,
    event_types           text[]     DEFAULT NULL,
    signing_secret        text       DEFAULT NULL,
    headers               jsonb      DEFAULT '{}',
    timeout_ms            integer    DEFAULT 10000,
    connect_timeout_ms    integer    DEFAULT 5000,
    max_in_flight         integer    DEFAULT 64,
    rate_limit            integer    DEFAULT NULL,
    rate_period           text       DEFAULT 'second',
    retry_schedule        interval[] DEFAULT '{5 seconds,5 minutes,30 minutes,2 hours,5 hours,10 hours,10 hours}',
    circuit_break_after   interval   DEFAULT '3 days',
    deliver_pending_since timestamptz DEFAULT NULL,
    enabled               boolean    DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t      text;
    new_id bigint;
    tenant text := revenue_engine.current_tenant();
BEGIN
    IF name IS NULL OR url IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'name, url and enabled must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_name('endpoint name', name);
    IF EXISTS (SELECT 1 FROM revenue_engine.endpoints e
                WHERE e.tenant_id = tenant AND e.name = create_endpoint.name) THEN
        RAISE EXCEPTION 'endpoint "%" already exists', name
            USING ERRCODE = '42710', HINT = 'Change it with revenue_engine.alter_endpoint().';
    END IF;
    PERFORM revenue_engine.check_http_target(url, headers, timeout_ms, connect_timeout_ms,
                                             max_in_flight, rate_limit, rate_period, retry_schedule);
    IF event_types IS NOT NULL THEN
        IF cardinality(event_types) = 0 THEN
            RAISE EXCEPTION 'event_types must not be empty' USING ERRCODE = '22023',
                HINT = 'Pass NULL to receive every event type.';
        END IF;
        FOREACH t IN ARRAY event_types LOOP
            IF t IS NULL OR (t NOT IN (SELECT revenue_engine.builtin_event_types())
                             AND NOT EXISTS (SELECT 1 FROM revenue_engine.event_types e WHERE e.event_type = t)) THEN
                RAISE EXCEPTION 'unknown event type "%"', coalesce(t, 'NULL')
                    USING ERRCODE = '22023',
                          HINT = 'Use a built-in event type or register it with revenue_engine.register_event_type().';
            END IF;
        END LOOP;
    END IF;
    IF signing_secret IS NOT NULL THEN
        PERFORM revenue_engine.check_signing_secret(signing_secret);
    END IF;
    IF circuit_break_after IS NULL OR circuit_break_after <= interval '0' THEN
        RAISE EXCEPTION 'circuit_break_after must be a positive interval' USING ERRCODE = '22023';
    END IF;

    INSERT INTO revenue_engine.endpoints AS ep
           (tenant_id, name, url, event_types, headers, signing_secrets, timeout_ms,
            connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule,
            circuit_break_after, enabled, disabled_reason, disabled_at)
    VALUES (tenant, name, url, event_types, headers,
            CASE WHEN signing_secret IS NULL THEN '{}' ELSE ARRAY[signing_secret] END,
            timeout_ms, connect_timeout_ms, max_in_flight, rate_limit, rate_period,
            retry_schedule, circuit_break_after, enabled,
            CASE WHEN NOT enabled THEN 'created disabled' END,
            CASE WHEN NOT enabled THEN now() END)
    RETURNING ep.id INTO new_id;

    IF deliver_pending_since IS NOT NULL THEN
        INSERT INTO revenue_engine.deliveries (tenant_id, event_id, endpoint_id)
        SELECT e.tenant_id, e.id, new_id
          FROM revenue_engine.webhook_events e
         WHERE e.tenant_id = tenant AND e.status = 'pending'
           AND e.created_at >= deliver_pending_since
           AND (create_endpoint.event_types IS NULL OR e.event_type = ANY (create_endpoint.event_types));
        PERFORM revenue_engine.wake_worker();
    END IF;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.create_endpoint(text, text, text[], text, jsonb, integer, integer, integer, integer, text, interval[], interval, timestamptz, boolean) IS
    'create an HTTP endpoint for events; events enqueued from now on (or pending since deliver_pending_since) go to it';

-- Change an endpoint: a NULL argument keeps the current value.
CREATE FUNCTION revenue_engine.alter_endpoint(
    name               text,
    url                text       DEFAULT NULL,
    event_types        text[]     DEFAULT NULL,
    headers            jsonb      DEFAULT NULL,
    timeout_ms         integer    DEFAULT NULL,
    max_in_flight      integer    DEFAULT NULL,
    rate_limit         integer    DEFAULT NULL,
    rate_period        text       DEFAULT NULL,
    retry_schedule     interval[] DEFAULT NULL,
    add_signing_secret text       DEFAULT NULL,
    drop_signing_secrets_except_newest boolean DEFAULT false)
RETURNS revenue_engine.endpoints_public
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ep revenue_engine.endpoints;
    r  revenue_engine.endpoints_public;
BEGIN
    SELECT * INTO ep FROM revenue_engine.endpoints e
     WHERE e.tenant_id = revenue_engine.current_tenant() AND e.name = alter_endpoint.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', coalesce(alter_endpoint.name, 'NULL')
            USING ERRCODE = '42704';
    END IF;
    ep.url := coalesce(alter_endpoint.url, ep.url);
    ep.event_types := coalesce(alter_endpoint.event_types, ep.event_types);
    ep.headers := coalesce(alter_endpoint.headers, ep.headers);
    ep.timeout_ms := coalesce(alter_endpoint.timeout_ms, ep.timeout_ms);
    ep.max_in_flight := coalesce(alter_endpoint.max_in_flight, ep.max_in_flight);
    ep.rate_limit := coalesce(alter_endpoint.rate_limit, ep.rate_limit);
    ep.rate_period := coalesce(alter_endpoint.rate_period, ep.rate_period);
    ep.retry_schedule := coalesce(alter_endpoint.retry_schedule, ep.retry_schedule);
    PERFORM revenue_engine.check_http_target(ep.url, ep.headers, ep.timeout_ms, ep.connect_timeout_ms,
                                             ep.max_in_flight, ep.rate_limit, ep.rate_period, ep.retry_schedule);
    IF add_signing_secret IS NOT NULL THEN
        PERFORM revenue_engine.check_signing_secret(add_signing_secret);
        ep.signing_secrets := ep.signing_secrets || add_signing_secret;
    END IF;
    IF drop_signing_secrets_except_newest AND cardinality(ep.signing_secrets) > 1 THEN
        ep.signing_secrets := ep.signing_secrets[cardinality(ep.signing_secrets):];
    END IF;
    UPDATE revenue_engine.endpoints e
       SET url = ep.url, event_types = ep.event_types, headers = ep.headers,
           timeout_ms = ep.timeout_ms, max_in_flight = ep.max_in_flight,
           rate_limit = ep.rate_limit, rate_period = ep.rate_period,
           retry_schedule = ep.retry_schedule, signing_secrets = ep.signing_secrets,
           updated_at = now()
     WHERE e.tenant_id = ep.tenant_id AND e.id = ep.id;
    SELECT * INTO r FROM revenue_engine.endpoints_public p
     WHERE p.tenant_id = ep.tenant_id AND p.id = ep.id;
    RETURN r;
END
$fn$;

CREATE FUNCTION revenue_engine.set_endpoint_enabled(name text, enabled boolean, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'name and enabled must not be null' USING ERRCODE = '22004';
    END IF;
    UPDATE revenue_engine.endpoints e
       SET enabled = set_endpoint_enabled.enabled,
           disabled_reason = CASE WHEN set_endpoint_enabled.enabled THEN NULL
                                  ELSE coalesce(reason, 'disabled by ' || current_user) END,
           disabled_at = CASE WHEN set_endpoint_enabled.enabled THEN NULL ELSE now() END,
           failing_since = NULL, updated_at = now()
     WHERE e.tenant_id = revenue_engine.current_tenant() AND e.name = set_endpoint_enabled.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    IF enabled THEN
        PERFORM revenue_engine.wake_worker();
    END IF;
    RETURN enabled;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_endpoint_enabled(text, boolean, text) IS
    'enable or disable an endpoint; its deliveries wait while it is disabled';

-- Requeue dead deliveries of an endpoint (all endpoints when NULL) created in a time range.
CREATE FUNCTION revenue_engine.redrive(
    endpoint text DEFAULT NULL,
    since    timestamptz DEFAULT '-infinity',
    until    timestamptz DEFAULT 'infinity')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
    tenant text := revenue_engine.current_tenant();
BEGIN
    IF since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'since and until must not be null' USING ERRCODE = '22004';
    END IF;
    IF endpoint IS NOT NULL AND NOT EXISTS (SELECT 1 FROM revenue_engine.endpoints e
                                             WHERE e.tenant_id = tenant AND e.name = endpoint) THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', endpoint USING ERRCODE = '42704';
    END IF;
    WITH r AS (
        UPDATE revenue_engine.deliveries d
           SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
          FROM revenue_engine.endpoints e
         WHERE d.tenant_id = tenant AND d.status = 'dead'
           AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
           AND (redrive.endpoint IS NULL OR e.name = redrive.endpoint)
           AND d.created_at >= since AND d.created_at < until
        RETURNING d.tenant_id, d.event_id
    ), ev AS (
        UPDATE revenue_engine.webhook_events w SET status = 'pending', error_message = NULL
          FROM (SELECT DISTINCT tenant_id, event_id FROM r) x
         WHERE w.tenant_id = x.tenant_id AND w.id = x.event_id
        RETURNING 1
    )
    SELECT count(*) INTO n FROM r;
    PERFORM revenue_engine.wake_worker();
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.redrive(text, timestamptz, timestamptz) IS
    'requeue dead deliveries (of one endpoint, created in [since, until)); returns how many';

CREATE FUNCTION revenue_engine.purge_attempts(older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
    keep interval := coalesce(older_than, current_setting('revenue_engine.attempt_retention')::interval);
BEGIN
    DELETE FROM revenue_engine.delivery_attempts WHERE started_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

-- Queue state per endpoint, and deliveries and latency over the last 5 minutes.
CREATE VIEW revenue_engine.endpoint_stats AS
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
          AND t.started_at > now() - interval '5 minutes') a ON true;
COMMENT ON VIEW revenue_engine.endpoint_stats IS
    'per endpoint: pending, in flight, retrying, dead, oldest pending age; deliveries and p50/p99 latency over 5 minutes';

-- Extra maintenance through pg_cron when it is installed (the worker purges on its own too).
CREATE FUNCTION revenue_engine.schedule_maintenance(schedule text DEFAULT '17 * * * *')
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    jobid bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN 'pg_cron is not installed: the delivery worker runs maintenance by itself';
    END IF;
    -- pg_cron runs jobs in its own database unless told which one.
    EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4)'
       INTO jobid
      USING 'revenue_engine_maintenance_' || current_database(), schedule,
            'SELECT revenue_engine.purge_attempts()', current_database();
    RETURN format('scheduled pg_cron job %s (%s)', jobid, schedule);
END
$fn$;

REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
GRANT SELECT ON revenue_engine.endpoints_public, revenue_engine.deliveries,
    revenue_engine.delivery_attempts, revenue_engine.endpoint_stats, revenue_engine.event_types
  TO revenue_engine_user;
GRANT EXECUTE ON FUNCTION revenue_engine.builtin_event_types() TO revenue_engine_user;
/*
 * messaging: channels (a provider's HTTP API) and sends (one outbound message
 * each), queued -> sending -> sent / failed, delivered by the same worker as
 * events.  Blasts and campaigns enqueue sends and read their outcome here.
 */

CREATE TABLE revenue_engine.channels (
    tenant_id          text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    name               text        NOT NULL,
    method             text        NOT NULL DEFAULT 'POST',
    url                text        NOT NULL,
    headers            jsonb       NOT NULL DEFAULT '{}',
    body_template      jsonb       NOT NULL DEFAULT '{}',
    message_id_path    text[],
    timeout_ms         integer     NOT NULL DEFAULT 10000,
    connect_timeout_ms integer     NOT NULL DEFAULT 5000,
    max_in_flight      integer     NOT NULL DEFAULT 16,
    rate_limit         integer,
    rate_period        text        NOT NULL DEFAULT 'second',
    retry_schedule     interval[]  NOT NULL DEFAULT '{5 seconds,1 minute,5 minutes,30 minutes}',
    enabled            boolean     NOT NULL DEFAULT true,
    disabled_reason    text,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    CONSTRAINT channels_method_check CHECK (method IN ('POST', 'PUT', 'PATCH')),
    CONSTRAINT channels_rate_period_check CHECK (rate_period IN ('second', 'minute')),
    CONSTRAINT channels_body_template_check CHECK (pg_catalog.jsonb_typeof(body_template) = 'object')
);
COMMENT ON TABLE revenue_engine.channels IS
    'providers'' HTTP APIs that sends go to; holds credentials, so the application role reads channels_public';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.channels', '');

CREATE VIEW revenue_engine.channels_public AS
SELECT tenant_id, id, name, method, url,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       body_template, message_id_path, timeout_ms, connect_timeout_ms, max_in_flight,
       rate_limit, rate_period, retry_schedule, enabled, disabled_reason, created_at, updated_at
  FROM revenue_engine.channels;

CREATE TABLE revenue_engine.sends (
    tenant_id           text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id                  bigint      GENERATED ALWAYS AS IDENTITY,
    channel_id          bigint      NOT NULL,
    idempotency_key     text,
    user_id             uuid,
    payload             jsonb       NOT NULL,
    metadata            jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'queued',
    attempts            integer     NOT NULL DEFAULT 0,
    scheduled_for       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    next_attempt_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_until         timestamptz,
    provider_message_id text,
    response_status     integer,
    response_body       text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at             timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_id, idempotency_key),
    CONSTRAINT sends_status_check CHECK (status IN ('queued', 'sending', 'sent', 'failed'))
) WITH (fillfactor = 80);
COMMENT ON TABLE revenue_engine.sends IS
    'outbound messages: queued -> sending -> sent (with the provider''s message id) or failed';
CREATE INDEX sends_due_idx ON revenue_engine.sends (channel_id, next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX sends_sending_idx ON revenue_engine.sends (lease_until) WHERE status = 'sending';
CREATE INDEX sends_provider_message_idx ON revenue_engine.sends (tenant_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.sends', '');

CREATE FUNCTION revenue_engine.create_channel(
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
BEGIN
    IF name IS NULL OR url IS NULL OR method IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'name, url, method and enabled must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_name('channel name', name);
    IF EXISTS (SELECT 1 FROM revenue_engine.channels c
                WHERE c.tenant_id = revenue_engine.current_tenant() AND c.name = create_channel.name) THEN
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
           (name, url, method, headers, body_template, message_id_path, timeout_ms,
            connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule,
            enabled, disabled_reason)
    VALUES (name, url, upper(method), headers, body_template, message_id_path, timeout_ms,
            connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule,
            enabled, CASE WHEN NOT enabled THEN 'created disabled' END)
    RETURNING c.id INTO new_id;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.create_channel(text, text, text, jsonb, jsonb, text[], integer, integer, integer, integer, text, interval[], boolean) IS
    'create a channel: a provider API that sends are POSTed to, with the body template || the send''s payload';

/*
 * Queue one message.  The same idempotency key on the same channel returns
 * the first send's id and queues nothing.
 */
CREATE FUNCTION revenue_engine.enqueue_send(
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
    tenant text := revenue_engine.current_tenant();
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
            coalesce(scheduled_for, now()), coalesce(scheduled_for, now()))
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
COMMENT ON FUNCTION revenue_engine.enqueue_send(text, jsonb, text, timestamptz, uuid, jsonb) IS
    'queue a message on a channel; the same idempotency key returns the first send''s id';

CREATE FUNCTION revenue_engine.set_channel_enabled(name text, enabled boolean, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION 'name and enabled must not be null' USING ERRCODE = '22004';
    END IF;
    UPDATE revenue_engine.channels c
       SET enabled = set_channel_enabled.enabled,
           disabled_reason = CASE WHEN set_channel_enabled.enabled THEN NULL
                                  ELSE coalesce(reason, 'disabled by ' || current_user) END,
           updated_at = now()
     WHERE c.tenant_id = revenue_engine.current_tenant() AND c.name = set_channel_enabled.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    IF enabled THEN
        PERFORM revenue_engine.wake_worker();
    END IF;
    RETURN enabled;
END
$fn$;

CREATE FUNCTION revenue_engine.redrive_sends(
    channel text DEFAULT NULL,
    since   timestamptz DEFAULT '-infinity',
    until   timestamptz DEFAULT 'infinity')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    UPDATE revenue_engine.sends s
       SET status = 'queued', attempts = 0, next_attempt_at = now(), last_error = NULL
      FROM revenue_engine.channels c
     WHERE s.tenant_id = revenue_engine.current_tenant() AND s.status = 'failed'
       AND c.tenant_id = s.tenant_id AND c.id = s.channel_id
       AND (redrive_sends.channel IS NULL OR c.name = redrive_sends.channel)
       AND s.created_at >= since AND s.created_at < until;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM revenue_engine.wake_worker();
    RETURN n;
END
$fn$;

CREATE VIEW revenue_engine.channel_stats AS
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
          AND t.started_at > now() - interval '5 minutes') a ON true;

REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.enqueue_send(text, jsonb, text, timestamptz, uuid, jsonb)
  TO revenue_engine_user;
GRANT SELECT ON revenue_engine.sends, revenue_engine.channels_public, revenue_engine.channel_stats
  TO revenue_engine_user;
/*
 * usage: per-user settings, daily and lifetime counters, milestone ladders,
 * daily goals, streaks and feature first use.  track_daily_usage is in C
 * (usage.c); backfill and settings are set-based SQL.
 */

-- Settings of a usage type that differ from the built-in defaults.
CREATE TABLE revenue_engine.usage_types (
    usage_type        text      NOT NULL PRIMARY KEY,
    milestones        bigint[]  NOT NULL,
    streak_milestones integer[] NOT NULL,
    daily_goal        integer,
    is_feature        boolean   NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT usage_types_daily_goal_check CHECK (daily_goal > 0)
);
COMMENT ON TABLE revenue_engine.usage_types IS
    'usage types whose settings differ from the built-in defaults; write it with revenue_engine.set_usage_type()';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.usage_types', '');

CREATE TABLE revenue_engine.user_profiles (
    tenant_id   text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    user_id     uuid        NOT NULL,
    timezone    text        NOT NULL DEFAULT 'UTC',
    daily_goals jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT user_profiles_daily_goals_check
        CHECK (pg_catalog.jsonb_typeof(daily_goals) = 'object')
);
COMMENT ON TABLE revenue_engine.user_profiles IS
    'per-user time zone and daily goals; write it with revenue_engine.set_user_profile()';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.user_profiles', '');

-- Updated in place many times a day: leave room on the page for HOT updates.
CREATE TABLE revenue_engine.daily_usage (
    tenant_id        text    NOT NULL,
    user_id          uuid    NOT NULL,
    usage_type       text    NOT NULL,
    usage_date       date    NOT NULL,
    count            bigint  NOT NULL,
    backfilled_count bigint  NOT NULL DEFAULT 0,
    goal             integer,
    goal_achieved_at timestamptz,
    streak_days      integer,
    PRIMARY KEY (tenant_id, user_id, usage_type, usage_date)
) WITH (fillfactor = 70);
COMMENT ON TABLE revenue_engine.daily_usage IS
    'usage per user, usage type and local calendar day of the user';
COMMENT ON COLUMN revenue_engine.daily_usage.backfilled_count IS
    'the part of count set by backfill_usage (replaced, not added, when backfill runs again)';
COMMENT ON COLUMN revenue_engine.daily_usage.streak_days IS
    'consecutive local days with the goal achieved, ending on this day (NULL unless achieved)';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.daily_usage', '');

CREATE TABLE revenue_engine.lifetime_usage (
    tenant_id           text        NOT NULL,
    user_id             uuid        NOT NULL,
    usage_type          text        NOT NULL,
    total               bigint      NOT NULL,
    backfilled_total    bigint      NOT NULL DEFAULT 0,
    first_used_at       timestamptz NOT NULL,
    last_used_at        timestamptz NOT NULL,
    latest_milestone    bigint,
    latest_milestone_at timestamptz,
    current_streak      integer     NOT NULL DEFAULT 0,
    streak_end_date     date,
    best_streak         integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id, usage_type)
) WITH (fillfactor = 70);
COMMENT ON TABLE revenue_engine.lifetime_usage IS
    'lifetime usage per user and usage type';
COMMENT ON COLUMN revenue_engine.lifetime_usage.current_streak IS
    'length of the most recent run of goal days, which ends on streak_end_date';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.lifetime_usage', '');

-- One row per (user, usage type, threshold), ever: the primary key is the guarantee.
CREATE TABLE revenue_engine.milestones_reached (
    tenant_id      text        NOT NULL,
    user_id        uuid        NOT NULL,
    usage_type     text        NOT NULL,
    milestone      bigint      NOT NULL,
    reached_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lifetime_total bigint      NOT NULL,
    backfilled     boolean     NOT NULL DEFAULT false,
    event_id       uuid,
    PRIMARY KEY (tenant_id, user_id, usage_type, milestone)
);
COMMENT ON TABLE revenue_engine.milestones_reached IS
    'every milestone each user reached, exactly once; backfilled rows emitted no event';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.milestones_reached', '');

-- track_daily_usage caches profiles and usage types per backend; changes reset the caches.
CREATE FUNCTION revenue_engine.invalidate_cache()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_invalidate_cache';
CREATE TRIGGER user_profiles_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.user_profiles
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.invalidate_cache();
CREATE TRIGGER usage_types_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.usage_types
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.invalidate_cache();

CREATE FUNCTION revenue_engine.track_daily_usage(
    user_id    uuid,
    usage_type text,
    count      integer DEFAULT 1,
    usage_date date DEFAULT NULL)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 're_track_daily_usage';
COMMENT ON FUNCTION revenue_engine.track_daily_usage(uuid, text, integer, date) IS
    'count usage for a user on their local day; records milestones, goals, streaks and first use, and writes their events';

-- The built-in settings, for every usage type the extension knows by name.
CREATE FUNCTION revenue_engine.builtin_usage_types(
    OUT usage_type text, OUT milestones bigint[], OUT streak_milestones integer[],
    OUT daily_goal integer, OUT is_feature boolean)
RETURNS SETOF record
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_builtin_usage_types';

-- The built-in settings of any usage type (the defaults for a type not listed).
CREATE FUNCTION revenue_engine.builtin_usage_type(
    usage_type text,
    OUT milestones bigint[], OUT streak_milestones integer[],
    OUT daily_goal integer, OUT is_feature boolean)
RETURNS record
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_builtin_usage_type';

-- A time zone name as PostgreSQL spells it, or error 22023.
CREATE FUNCTION revenue_engine.canonical_timezone(timezone text)
RETURNS text
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 're_canonical_timezone';

-- Validates a usage type name; raises 22004/22023 or returns it unchanged.
CREATE FUNCTION revenue_engine.check_usage_type(usage_type text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_usage_type';

CREATE VIEW revenue_engine.usage_type_settings AS
SELECT t.usage_type, t.milestones, t.streak_milestones, t.daily_goal, t.is_feature,
       true AS customized
  FROM revenue_engine.usage_types t
UNION ALL
SELECT b.usage_type, b.milestones, b.streak_milestones, b.daily_goal, b.is_feature,
       false
  FROM revenue_engine.builtin_usage_types() b
 WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.usage_types t
                    WHERE t.usage_type OPERATOR(pg_catalog.=) b.usage_type);
COMMENT ON VIEW revenue_engine.usage_type_settings IS
    'the settings in effect for every usage type that is configured or built in';

CREATE FUNCTION revenue_engine.set_usage_type(
    usage_type        text,
    milestones        bigint[]  DEFAULT NULL,
    streak_milestones integer[] DEFAULT NULL,
    daily_goal        integer   DEFAULT NULL,
    is_feature        boolean   DEFAULT NULL,
    clear_daily_goal  boolean   DEFAULT false)
RETURNS revenue_engine.usage_types
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cur  revenue_engine.usage_types;
    b    record;
    v    bigint;
    prev bigint;
    row  revenue_engine.usage_types;
BEGIN
    PERFORM revenue_engine.check_usage_type(set_usage_type.usage_type);

    FOREACH v IN ARRAY coalesce(set_usage_type.milestones, '{}'::bigint[]) || coalesce(set_usage_type.streak_milestones::bigint[], '{}'::bigint[])
    LOOP
        IF v IS NULL OR v <= 0 THEN
            RAISE EXCEPTION 'milestone % is not a positive number', coalesce(v::text, 'NULL')
                USING ERRCODE = '22023',
                      HINT = 'A ladder is a list of increasing positive thresholds, such as ''{1,10,50,100}''.';
        END IF;
    END LOOP;
    prev := NULL;
    FOREACH v IN ARRAY coalesce(set_usage_type.milestones, '{}'::bigint[]) LOOP
        IF prev IS NOT NULL AND v <= prev THEN
            RAISE EXCEPTION 'milestones % are not strictly increasing', set_usage_type.milestones
                USING ERRCODE = '22023',
                      HINT = 'List each threshold once, smallest first, such as ''{1,10,50,100}''.';
        END IF;
        prev := v;
    END LOOP;
    prev := NULL;
    FOREACH v IN ARRAY coalesce(set_usage_type.streak_milestones::bigint[], '{}'::bigint[]) LOOP
        IF prev IS NOT NULL AND v <= prev THEN
            RAISE EXCEPTION 'streak milestones % are not strictly increasing', set_usage_type.streak_milestones
                USING ERRCODE = '22023',
                      HINT = 'List each number of days once, smallest first, such as ''{1,7,30}''.';
        END IF;
        prev := v;
    END LOOP;
    IF set_usage_type.daily_goal IS NOT NULL AND set_usage_type.daily_goal <= 0 THEN
        RAISE EXCEPTION 'daily goal % is not a positive number', set_usage_type.daily_goal
            USING ERRCODE = '22023',
                  HINT = 'Pass clear_daily_goal => true to remove the goal.';
    END IF;

    SELECT * INTO cur FROM revenue_engine.usage_types t
     WHERE t.usage_type = set_usage_type.usage_type FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO b FROM revenue_engine.builtin_usage_type(set_usage_type.usage_type);
        cur.usage_type := set_usage_type.usage_type;
        cur.milestones := b.milestones;
        cur.streak_milestones := b.streak_milestones;
        cur.daily_goal := b.daily_goal;
        cur.is_feature := b.is_feature;
    END IF;

    INSERT INTO revenue_engine.usage_types AS t
           (usage_type, milestones, streak_milestones, daily_goal, is_feature, updated_at)
    VALUES (cur.usage_type,
            coalesce(set_usage_type.milestones, cur.milestones),
            coalesce(set_usage_type.streak_milestones, cur.streak_milestones),
            CASE WHEN clear_daily_goal THEN NULL
                 ELSE coalesce(set_usage_type.daily_goal, cur.daily_goal) END,
            coalesce(set_usage_type.is_feature, cur.is_feature),
            now())
    ON CONFLICT ON CONSTRAINT usage_types_pkey DO UPDATE
       SET milestones = excluded.milestones,
           streak_milestones = excluded.streak_milestones,
           daily_goal = excluded.daily_goal,
           is_feature = excluded.is_feature,
           updated_at = excluded.updated_at
    RETURNING * INTO row;
    RETURN row;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_usage_type(text, bigint[], integer[], integer, boolean, boolean) IS
    'configure a usage type: milestone ladder, streak ladder, default daily goal, feature flag (NULL keeps the current value)';

-- Back to the built-in settings.
CREATE FUNCTION revenue_engine.reset_usage_type(usage_type text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT revenue_engine.check_usage_type(reset_usage_type.usage_type);
    WITH d AS (DELETE FROM revenue_engine.usage_types t
                WHERE t.usage_type = reset_usage_type.usage_type RETURNING 1)
    SELECT count(*) > 0 FROM d;
END;

CREATE FUNCTION revenue_engine.set_user_profile(
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
     WHERE p.tenant_id = revenue_engine.current_tenant()
       AND p.user_id = set_user_profile.user_id;
    goals := jsonb_strip_nulls(coalesce(goals, '{}') || coalesce(set_user_profile.daily_goals, '{}'));

    INSERT INTO revenue_engine.user_profiles AS p (tenant_id, user_id, timezone, daily_goals)
    VALUES (revenue_engine.current_tenant(), set_user_profile.user_id, coalesce(tz, 'UTC'), goals)
    ON CONFLICT ON CONSTRAINT user_profiles_pkey DO UPDATE
       SET timezone = coalesce(tz, p.timezone),
           daily_goals = excluded.daily_goals,
           updated_at = now()
    RETURNING * INTO row;
    RETURN row;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_user_profile(uuid, text, jsonb) IS
    'set a user''s IANA time zone and daily goals per usage type (merged; a null goal removes it)';

-- Lifetime figures per user and usage type, with the streak as of the user's today.
CREATE VIEW revenue_engine.user_lifetime_stats AS
SELECT l.tenant_id,
       l.user_id,
       l.usage_type,
       l.total AS lifetime_total,
       l.first_used_at,
       l.last_used_at,
       l.latest_milestone,
       l.latest_milestone_at,
       (SELECT count(*) FROM revenue_engine.milestones_reached m
         WHERE m.tenant_id = l.tenant_id AND m.user_id = l.user_id
           AND m.usage_type = l.usage_type) AS milestones_reached,
       CASE WHEN l.streak_end_date >= (pg_catalog.timezone(coalesce(p.timezone, 'UTC'), revenue_engine.clock_now()))::date - 1
            THEN l.current_streak ELSE 0 END AS current_streak,
       l.best_streak,
       coalesce(p.timezone, 'UTC') AS timezone
  FROM revenue_engine.lifetime_usage l
  LEFT JOIN revenue_engine.user_profiles p
         ON p.tenant_id = l.tenant_id AND p.user_id = l.user_id;
COMMENT ON VIEW revenue_engine.user_lifetime_stats IS
    'lifetime total, first use, latest milestone and streaks per user and usage type';


/*
 * backfill_usage: build counters, milestones, goals and streaks from the
 * application's history.  The query runs with the caller's privileges.  The
 * count of a (user, usage type, day) it returns replaces what an earlier
 * backfill set for that day (tracked usage is kept), so a second run changes
 * nothing.  Milestones and goals it finds already passed are marked reached
 * without events unless emit_events is true.
 */
CREATE FUNCTION revenue_engine.backfill_usage(query text, emit_events boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    -- The caller's query runs with the caller's privileges and search_path;
    -- everything after it runs with a pinned search_path.
    IF query IS NULL THEN
        RAISE EXCEPTION 'query must not be null' USING ERRCODE = '22004';
    END IF;
    IF emit_events IS NULL THEN
        RAISE EXCEPTION 'emit_events must not be null' USING ERRCODE = '22004';
    END IF;
    EXECUTE pg_catalog.concat('CREATE TEMP TABLE re_backfill_raw ON COMMIT DROP AS SELECT * FROM (',
                              query, ') AS q(user_id, usage_type, usage_date, count)');
    RETURN revenue_engine.backfill_apply(emit_events);
END
$fn$;
COMMENT ON FUNCTION revenue_engine.backfill_usage(text, boolean) IS
    'build counters, milestones, goals and streaks from a query of (user_id, usage_type, usage_date, count); idempotent';

-- The part of backfill_usage after the caller's query: reads pg_temp.re_backfill_raw.
CREATE FUNCTION revenue_engine.backfill_apply(emit_events boolean)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant   text := revenue_engine.current_tenant();
    ncols    integer;
    bad      record;
    result   jsonb;
BEGIN
    SELECT count(*) INTO ncols FROM pg_attribute
     WHERE attrelid = 'pg_temp.re_backfill_raw'::regclass AND attnum > 0 AND NOT attisdropped;
    IF ncols <> 4 THEN
        RAISE EXCEPTION 'backfill query returns % columns, expected 4', ncols
            USING ERRCODE = '42601',
                  HINT = 'Return (user_id uuid, usage_type text, usage_date date, count bigint) rows.';
    END IF;

    CREATE TEMP TABLE re_backfill_src ON COMMIT DROP AS
    SELECT r.user_id::uuid AS user_id, r.usage_type::text AS usage_type,
           r.usage_date::date AS usage_date, r.count::bigint AS count
      FROM pg_temp.re_backfill_raw r;

    SELECT * INTO bad FROM pg_temp.re_backfill_src s
     WHERE s.user_id IS NULL OR s.usage_type IS NULL OR s.usage_date IS NULL OR s.count IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill row (%, %, %, %) has a null column',
              coalesce(bad.user_id::text, 'NULL'), coalesce(bad.usage_type, 'NULL'),
              coalesce(bad.usage_date::text, 'NULL'), coalesce(bad.count::text, 'NULL')
            USING ERRCODE = '22004';
    END IF;
    SELECT * INTO bad FROM pg_temp.re_backfill_src s WHERE s.count <= 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill count % for user %, usage type "%", day % is not positive',
              bad.count, bad.user_id, bad.usage_type, bad.usage_date
            USING ERRCODE = '22023';
    END IF;
    PERFORM revenue_engine.check_usage_type(t.usage_type)
       FROM (SELECT DISTINCT s.usage_type FROM pg_temp.re_backfill_src s) t;

    -- One row per (user, type): settings, time zone and the user's today.
    CREATE TEMP TABLE re_backfill_pairs ON COMMIT DROP AS
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
      FROM pg_temp.re_backfill_src s
      LEFT JOIN revenue_engine.user_profiles p
             ON p.tenant_id = tenant AND p.user_id = s.user_id
      LEFT JOIN revenue_engine.usage_types t ON t.usage_type = s.usage_type
      CROSS JOIN LATERAL revenue_engine.builtin_usage_type(s.usage_type) b
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 10;

    SELECT s.*, pr.tz, pr.today INTO bad FROM pg_temp.re_backfill_src s
      JOIN pg_temp.re_backfill_pairs pr USING (user_id, usage_type)
     WHERE s.usage_date > pr.today LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill day % for user % is in the future', bad.usage_date, bad.user_id
            USING ERRCODE = '22008',
                  DETAIL = format('Today is %s in the user''s time zone %s.', bad.today, bad.tz);
    END IF;

    -- Daily counters: this backfill's count replaces the previous backfill's.
    WITH agg AS (
        SELECT s.user_id, s.usage_type, s.usage_date, sum(s.count) AS count
          FROM pg_temp.re_backfill_src s GROUP BY 1, 2, 3
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
      JOIN pg_temp.re_backfill_pairs pr USING (user_id, usage_type)
     WHERE (SELECT count(*) FROM upd) >= 0
    ON CONFLICT (tenant_id, user_id, usage_type) DO UPDATE
       SET total = l.total + excluded.total,
           backfilled_total = l.backfilled_total + excluded.backfilled_total,
           first_used_at = least(l.first_used_at, excluded.first_used_at),
           last_used_at = greatest(l.last_used_at, excluded.last_used_at);

    -- Milestones already passed: each recorded once; events only when asked.
    CREATE TEMP TABLE re_backfill_ms ON COMMIT DROP AS
    WITH ins AS (
        INSERT INTO revenue_engine.milestones_reached AS m
               (tenant_id, user_id, usage_type, milestone, lifetime_total, backfilled)
        SELECT tenant, pr.user_id, pr.usage_type, ms.milestone, l.total, NOT emit_events
          FROM pg_temp.re_backfill_pairs pr
          JOIN revenue_engine.lifetime_usage l
            ON l.tenant_id = tenant AND l.user_id = pr.user_id AND l.usage_type = pr.usage_type
         CROSS JOIN LATERAL unnest(pr.milestones) AS ms(milestone)
         WHERE ms.milestone <= l.total
        ON CONFLICT DO NOTHING
        RETURNING m.user_id, m.usage_type, m.milestone, m.lifetime_total
    )
    SELECT ins.*, pr.milestones[1] = ins.milestone AS is_first,
           CASE WHEN emit_events THEN gen_random_uuid() END AS event_id
      FROM ins JOIN pg_temp.re_backfill_pairs pr USING (user_id, usage_type);

    UPDATE revenue_engine.lifetime_usage l
       SET latest_milestone = x.milestone, latest_milestone_at = now()
      FROM (SELECT user_id, usage_type, max(milestone) AS milestone
              FROM pg_temp.re_backfill_ms GROUP BY 1, 2) x
     WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type
       AND l.latest_milestone IS DISTINCT FROM greatest(l.latest_milestone, x.milestone)
       AND (l.latest_milestone IS NULL OR x.milestone > l.latest_milestone);

    -- Goals reached on days not yet marked.
    CREATE TEMP TABLE re_backfill_goals ON COMMIT DROP AS
    WITH g AS (
        UPDATE revenue_engine.daily_usage d
           SET goal = pr.goal,
               goal_achieved_at = least(now(), ((d.usage_date + 1)::timestamp AT TIME ZONE pr.tz)
                                               - interval '1 microsecond')
          FROM pg_temp.re_backfill_pairs pr
         WHERE d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
           AND d.goal_achieved_at IS NULL AND pr.goal IS NOT NULL AND d.count >= pr.goal
        RETURNING d.user_id, d.usage_type, d.usage_date, d.count, d.goal
    )
    SELECT g.*, CASE WHEN emit_events THEN gen_random_uuid() END AS event_id FROM g;

    -- Streaks: recompute every run of consecutive goal days of the pairs touched.
    WITH a AS (
        SELECT d.user_id, d.usage_type, d.usage_date,
               d.usage_date - (row_number() OVER w)::integer AS grp
          FROM revenue_engine.daily_usage d
          JOIN pg_temp.re_backfill_pairs pr
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
              JOIN pg_temp.re_backfill_pairs pr
                ON d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
             WHERE d.goal_achieved_at IS NOT NULL
             ORDER BY d.user_id, d.usage_type, d.usage_date DESC) x
     WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type;

    IF emit_events THEN
        INSERT INTO revenue_engine.webhook_events
               (tenant_id, id, user_id, event_type, event_data, user_data)
        SELECT tenant, m.event_id, m.user_id, 'milestone_reached',
               jsonb_build_object('usage_type', m.usage_type, 'milestone_type', m.usage_type,
                                  'milestone_value', m.milestone, 'lifetime_total', m.lifetime_total,
                                  'is_first', m.is_first, 'backfilled', true),
               revenue_engine.user_payload(m.user_id)
          FROM pg_temp.re_backfill_ms m;
        UPDATE revenue_engine.milestones_reached r SET event_id = m.event_id
          FROM pg_temp.re_backfill_ms m
         WHERE r.tenant_id = tenant AND r.user_id = m.user_id AND r.usage_type = m.usage_type
           AND r.milestone = m.milestone;

        INSERT INTO revenue_engine.webhook_events
               (tenant_id, id, user_id, event_type, event_data, user_data)
        SELECT tenant, g.event_id, g.user_id, 'daily_goal_achieved',
               jsonb_build_object('usage_type', g.usage_type, 'date', g.usage_date,
                                  'count', g.count, 'goal', g.goal, 'streak_days', d.streak_days,
                                  'streak_milestone',
                                  CASE WHEN d.streak_days = ANY (b.streak_milestones)
                                       THEN d.streak_days END,
                                  'backfilled', true),
               revenue_engine.user_payload(g.user_id)
          FROM pg_temp.re_backfill_goals g
          JOIN revenue_engine.daily_usage d
            ON d.tenant_id = tenant AND d.user_id = g.user_id AND d.usage_type = g.usage_type
           AND d.usage_date = g.usage_date
          LEFT JOIN revenue_engine.usage_type_settings b ON b.usage_type = g.usage_type;

        INSERT INTO revenue_engine.webhook_events (tenant_id, user_id, event_type, event_data, user_data)
        SELECT tenant, pr.user_id, 'feature_first_used',
               jsonb_build_object('feature', pr.usage_type,
                                  'first_used_at', pr.first_date::timestamp AT TIME ZONE pr.tz,
                                  'backfilled', true),
               revenue_engine.user_payload(pr.user_id)
          FROM pg_temp.re_backfill_pairs pr
         WHERE pr.is_new AND pr.is_feature;
    END IF;

    SELECT jsonb_build_object(
               'rows', (SELECT count(*) FROM pg_temp.re_backfill_src),
               'users', (SELECT count(DISTINCT user_id) FROM pg_temp.re_backfill_pairs),
               'usage_days', (SELECT count(*) FROM (SELECT DISTINCT user_id, usage_type, usage_date
                                                      FROM pg_temp.re_backfill_src) d),
               'milestones_marked', (SELECT count(*) FROM pg_temp.re_backfill_ms),
               'goals_marked', (SELECT count(*) FROM pg_temp.re_backfill_goals),
               'features_first_used', (SELECT count(*) FROM pg_temp.re_backfill_pairs
                                        WHERE is_new AND is_feature),
               'events_emitted', CASE WHEN emit_events THEN
                     (SELECT count(*) FROM pg_temp.re_backfill_ms)
                   + (SELECT count(*) FROM pg_temp.re_backfill_goals)
                   + (SELECT count(*) FROM pg_temp.re_backfill_pairs WHERE is_new AND is_feature)
                   ELSE 0 END)
      INTO result;

    DROP TABLE pg_temp.re_backfill_raw, pg_temp.re_backfill_src, pg_temp.re_backfill_pairs,
        pg_temp.re_backfill_ms, pg_temp.re_backfill_goals;
    RETURN result;
END
$fn$;

-- Functions are for the application role only; the tables are written through them.
REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    revenue_engine.track_daily_usage(uuid, text, integer, date),
    revenue_engine.set_user_profile(uuid, text, jsonb),
    revenue_engine.builtin_usage_types(),
    revenue_engine.builtin_usage_type(text),
    revenue_engine.canonical_timezone(text),
    revenue_engine.check_usage_type(text)
  TO revenue_engine_user;
GRANT SELECT ON revenue_engine.user_profiles, revenue_engine.daily_usage,
    revenue_engine.lifetime_usage, revenue_engine.milestones_reached,
    revenue_engine.usage_types, revenue_engine.usage_type_settings,
    revenue_engine.user_lifetime_stats
  TO revenue_engine_user;
/*
 * blasts: one message to many phone numbers through a channel; each
 * recipient's progress pending < sent < delivered < read < replied < closed
 * (or failed) from the send's response, provider callbacks, polling and
 * manual marks; the append-only history of every change; and funnel counters
 * kept exact by C triggers (status.c, funnel.c), spread over
 * revenue_engine.funnel_slots rows per blast.
 */

-- Provider callbacks and polling are configured per channel.
ALTER TABLE revenue_engine.channels
    ADD COLUMN webhook_kind   text,
    ADD COLUMN webhook_secret text,
    ADD COLUMN status_url     text,
    ADD COLUMN status_path    text[],
    ADD COLUMN status_map     jsonb    NOT NULL DEFAULT '{}',
    ADD COLUMN poll_interval  interval NOT NULL DEFAULT '5 minutes',
    ADD COLUMN poll_max_age   interval NOT NULL DEFAULT '3 days',
    ADD CONSTRAINT channels_webhook_kind_check
        CHECK (webhook_kind IN ('whatsapp', 'standard_webhooks')),
    ADD CONSTRAINT channels_webhook_secret_check
        CHECK ((webhook_kind IS NULL) = (webhook_secret IS NULL)),
    ADD CONSTRAINT channels_status_poll_check
        CHECK ((status_url IS NULL) = (status_path IS NULL));
COMMENT ON COLUMN revenue_engine.channels.webhook_kind IS
    'how ingest_status_webhook verifies this provider''s callbacks: whatsapp (X-Hub-Signature-256) or standard_webhooks';
COMMENT ON COLUMN revenue_engine.channels.status_url IS
    'polling: GET this URL, {message_id} replaced, for recipients not yet final; status_path finds the status in the JSON response';

CREATE OR REPLACE VIEW revenue_engine.channels_public AS
SELECT tenant_id, id, name, method, url,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       body_template, message_id_path, timeout_ms, connect_timeout_ms, max_in_flight,
       rate_limit, rate_period, retry_schedule, enabled, disabled_reason, created_at, updated_at,
       webhook_kind, status_url, status_path, status_map, poll_interval, poll_max_age
  FROM revenue_engine.channels;

CREATE TABLE revenue_engine.blasts (
    tenant_id        text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    tag              text        NOT NULL,
    follow_up_stage  integer     NOT NULL DEFAULT 0,
    channel_id       bigint      NOT NULL,
    message          text,
    template         jsonb,
    payload          jsonb       NOT NULL DEFAULT '{}',
    scheduled_for    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    status           text        NOT NULL DEFAULT 'pending',
    total_recipients integer     NOT NULL DEFAULT 0,
    duplicates       integer     NOT NULL DEFAULT 0,
    rejected         integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES revenue_engine.channels (tenant_id, id),
    CONSTRAINT blasts_status_check CHECK (status IN ('pending', 'sending', 'completed', 'failed')),
    CONSTRAINT blasts_follow_up_stage_check CHECK (follow_up_stage >= 0),
    CONSTRAINT blasts_content_check CHECK (message IS NOT NULL OR template IS NOT NULL)
);
COMMENT ON TABLE revenue_engine.blasts IS
    'one message or template sent to many recipients through a channel; totals are fixed at creation';
CREATE INDEX blasts_tag_idx ON revenue_engine.blasts (tenant_id, tag, scheduled_for);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blasts', '');

CREATE TABLE revenue_engine.blast_recipients (
    tenant_id           text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id                  bigint      GENERATED ALWAYS AS IDENTITY,
    blast_id            bigint      NOT NULL,
    phone               text        NOT NULL,
    name                text,
    contact_id          text,
    provider_message_id text,
    status              text        NOT NULL DEFAULT 'pending',
    sent_at             timestamptz,
    delivered_at        timestamptz,
    read_at             timestamptz,
    replied_at          timestamptz,
    closed_at           timestamptz,
    failed_at           timestamptz,
    error               jsonb,
    amount              numeric,
    send_response       jsonb,
    last_polled_at      timestamptz,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, blast_id) REFERENCES revenue_engine.blasts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT blast_recipients_phone_check CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    CONSTRAINT blast_recipients_status_check
        CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'replied', 'closed', 'failed')),
    CONSTRAINT blast_recipients_failed_check CHECK ((status = 'failed') <= (failed_at IS NOT NULL))
) WITH (fillfactor = 80);
COMMENT ON TABLE revenue_engine.blast_recipients IS
    'one row per phone number of a blast; a timestamp per stage reached; status never moves backwards';
CREATE UNIQUE INDEX blast_recipients_phone_idx
    ON revenue_engine.blast_recipients (tenant_id, blast_id, phone);
CREATE INDEX blast_recipients_message_idx
    ON revenue_engine.blast_recipients (tenant_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX blast_recipients_reply_idx
    ON revenue_engine.blast_recipients (tenant_id, phone, sent_at)
    WHERE sent_at IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blast_recipients', '');

-- Numbers create_blast(on_invalid => 'skip') did not take, with the reason.
CREATE TABLE revenue_engine.blast_rejections (
    tenant_id text    NOT NULL DEFAULT revenue_engine.current_tenant(),
    blast_id  bigint  NOT NULL,
    position  integer NOT NULL,
    input     text,
    reason    text    NOT NULL,
    PRIMARY KEY (tenant_id, blast_id, position),
    FOREIGN KEY (tenant_id, blast_id) REFERENCES revenue_engine.blasts (tenant_id, id) ON DELETE CASCADE
);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blast_rejections', '');

-- Sends of a blast point at their recipient; the send's outcome moves it.
ALTER TABLE revenue_engine.sends
    ADD COLUMN blast_id     bigint,
    ADD COLUMN recipient_id bigint;
CREATE INDEX sends_blast_open_idx ON revenue_engine.sends (tenant_id, blast_id)
    WHERE blast_id IS NOT NULL AND status IN ('queued', 'sending');

/*
 * Funnel counters: revenue_engine.funnel_slots rows per blast, a recipient
 * counted in the slot id % slots, so concurrent updates of one blast rarely
 * wait for each other.  sent .. closed count recipients that reached the
 * stage (cumulative); at_* count the current status.
 */
CREATE TABLE revenue_engine.blast_counters (
    tenant_id    text     NOT NULL,
    blast_id     bigint   NOT NULL,
    slot         smallint NOT NULL,
    total        bigint   NOT NULL DEFAULT 0,
    sent         bigint   NOT NULL DEFAULT 0,
    delivered    bigint   NOT NULL DEFAULT 0,
    read         bigint   NOT NULL DEFAULT 0,
    replied      bigint   NOT NULL DEFAULT 0,
    closed       bigint   NOT NULL DEFAULT 0,
    at_pending   bigint   NOT NULL DEFAULT 0,
    at_sent      bigint   NOT NULL DEFAULT 0,
    at_delivered bigint   NOT NULL DEFAULT 0,
    at_read      bigint   NOT NULL DEFAULT 0,
    at_replied   bigint   NOT NULL DEFAULT 0,
    at_closed    bigint   NOT NULL DEFAULT 0,
    at_failed    bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, blast_id, slot),
    FOREIGN KEY (tenant_id, blast_id) REFERENCES revenue_engine.blasts (tenant_id, id) ON DELETE CASCADE
) WITH (fillfactor = 30);
COMMENT ON TABLE revenue_engine.blast_counters IS
    'funnel counters kept by triggers on blast_recipients; read them through blast_funnel and blast_stuck';

-- How many counter rows a new blast gets (fixed per blast at creation).
CREATE FUNCTION revenue_engine.funnel_slots()
RETURNS integer
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_funnel_slots';

CREATE FUNCTION revenue_engine.funnel_recipients_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_funnel_trigger';

-- One row changed: one counter row updated (C, saved plan).
CREATE TRIGGER blast_recipients_funnel_update
    AFTER UPDATE ON revenue_engine.blast_recipients
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
-- Rows added or removed in bulk: counted per statement from the transition table.
CREATE TRIGGER blast_recipients_funnel_insert
    AFTER INSERT ON revenue_engine.blast_recipients
    REFERENCING NEW TABLE AS re_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
CREATE TRIGGER blast_recipients_funnel_delete
    AFTER DELETE ON revenue_engine.blast_recipients
    REFERENCING OLD TABLE AS re_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
CREATE TRIGGER blast_recipients_funnel_truncate
    AFTER TRUNCATE ON revenue_engine.blast_recipients
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();

-- Recipients of polling channels whose status is not final yet (the worker polls them).
CREATE TABLE revenue_engine.poll_queue (
    tenant_id    text        NOT NULL,
    recipient_id bigint      NOT NULL,
    channel_id   bigint      NOT NULL,
    message_id   text        NOT NULL,
    sent_at      timestamptz NOT NULL,
    next_poll_at timestamptz NOT NULL,
    polls        integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, recipient_id)
);
COMMENT ON TABLE revenue_engine.poll_queue IS
    'recipients the worker polls the channel''s status_url for: until read, failed, replied or closed, or poll_max_age after sending';
CREATE INDEX poll_queue_due_idx ON revenue_engine.poll_queue (channel_id, next_poll_at);

-- Status updates for a message id no recipient has yet: applied when the id lands.
CREATE TABLE revenue_engine.status_parked (
    tenant_id   text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    message_id  text        NOT NULL,
    status      text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    source      text        NOT NULL,
    raw         jsonb,
    error       jsonb,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id)
);
COMMENT ON TABLE revenue_engine.status_parked IS
    'status updates that arrived before their message id was known; applied and removed when it appears';

-- Parked statuses whose id has landed: the worker runs this at each maintenance.
CREATE FUNCTION revenue_engine.apply_parked_statuses()
RETURNS integer
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_apply_parked_statuses';
COMMENT ON FUNCTION revenue_engine.apply_parked_statuses() IS
    'apply parked statuses whose message id has landed (the worker does it at each maintenance); returns how many';
CREATE INDEX status_parked_message_idx ON revenue_engine.status_parked (tenant_id, message_id);
CREATE INDEX status_parked_received_idx ON revenue_engine.status_parked (received_at);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_parked', '');

CREATE TABLE revenue_engine.status_history (
    tenant_id    text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    recipient_id bigint      NOT NULL,
    blast_id     bigint      NOT NULL,
    message_id   text,
    old_status   text        NOT NULL,
    new_status   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    source       text        NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT status_history_source_check CHECK (source IN ('send', 'webhook', 'polling', 'manual'))
);
COMMENT ON TABLE revenue_engine.status_history IS
    'every status change of a blast recipient, append-only; source send = the provider''s answer to the send';
CREATE INDEX status_history_recipient_idx ON revenue_engine.status_history (tenant_id, recipient_id);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_history', '');

CREATE FUNCTION revenue_engine.status_history_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE EXCEPTION 'revenue_engine.status_history is append-only: % is not allowed', TG_OP
        USING ERRCODE = '55000',
              HINT = 'History rows are never changed; TRUNCATE by the extension owner empties it.';
END
$fn$;
CREATE TRIGGER status_history_append_only
    BEFORE UPDATE OR DELETE ON revenue_engine.status_history
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.status_history_append_only();

-- E.164 checks (C): the reason a number is not E.164, or NULL; and the number normalized.
CREATE FUNCTION revenue_engine.phone_problem(phone text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_phone_problem';
COMMENT ON FUNCTION revenue_engine.phone_problem(text) IS
    'NULL when the number (spaces, dots, dashes and parentheses ignored) is E.164, else why not';
CREATE FUNCTION revenue_engine.normalize_phone(phone text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_normalize_phone';
COMMENT ON FUNCTION revenue_engine.normalize_phone(text) IS
    'the number as E.164 (+ and digits), separators removed; an error if it is not E.164';

-- Status ingestion (C).
CREATE FUNCTION revenue_engine.record_message_status(
    message_id  text,
    status      text,
    occurred_at timestamptz DEFAULT NULL,
    source      text        DEFAULT 'manual',
    raw         jsonb       DEFAULT NULL)
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_record_message_status';
COMMENT ON FUNCTION revenue_engine.record_message_status(text, text, timestamptz, text, jsonb) IS
    'apply one status (sent, delivered, read, replied, closed, failed) of a provider message id: applied, duplicate, stale or parked';

CREATE FUNCTION revenue_engine.record_inbound_message(
    phone       text,
    occurred_at timestamptz DEFAULT NULL,
    source      text        DEFAULT 'manual',
    raw         jsonb       DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_record_inbound_message';
COMMENT ON FUNCTION revenue_engine.record_inbound_message(text, timestamptz, text, jsonb) IS
    'a message from this phone: marks its latest open recipient (sent within revenue_engine.reply_window) replied; returns it, or NULL';

CREATE FUNCTION revenue_engine.mark_closed(
    phone       text,
    amount      numeric     DEFAULT NULL,
    occurred_at timestamptz DEFAULT NULL,
    blast_id    bigint      DEFAULT NULL,
    metadata    jsonb       DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_mark_closed';
COMMENT ON FUNCTION revenue_engine.mark_closed(text, numeric, timestamptz, bigint, jsonb) IS
    'a sale closed with this phone: marks its latest recipient (of blast_id, if given) closed with the amount; returns it';

CREATE FUNCTION revenue_engine.ingest_status_webhook(
    provider text,
    headers  jsonb,
    body     text,
    OUT item integer, OUT kind text, OUT message_id text, OUT status text,
    OUT result text, OUT reason text)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_ingest_status_webhook';
COMMENT ON FUNCTION revenue_engine.ingest_status_webhook(text, jsonb, text) IS
    'verify a provider callback''s signature (channel provider''s webhook_kind) and apply each status and inbound message; one row per item';

-- The send's outcome lands on its recipient (C): message id, response, sent or failed.
CREATE FUNCTION revenue_engine.send_outcome_to_recipient()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_send_outcome_trigger';
CREATE TRIGGER sends_blast_outcome
    AFTER UPDATE OF status ON revenue_engine.sends
    FOR EACH ROW
    WHEN (NEW.recipient_id IS NOT NULL AND OLD.status = 'sending' AND NEW.status IN ('sent', 'failed'))
    EXECUTE FUNCTION revenue_engine.send_outcome_to_recipient();

CREATE FUNCTION revenue_engine.set_channel_status_source(
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
           updated_at = now()
     WHERE c.tenant_id = revenue_engine.current_tenant() AND c.name = channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = '42704';
    END IF;
    PERFORM revenue_engine.wake_worker();
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_channel_status_source(text, text, text, text, text[], jsonb, interval, interval) IS
    'how a channel''s statuses arrive: signed callbacks (whatsapp or standard_webhooks) and/or polling a status URL';

/*
 * create_blast: the recipients come as a jsonb array (of "+phone" strings or
 * {"phone", "name", "contact_id"} objects) or as a query returning
 * (phone [, name [, contact_id]]).  Numbers are normalized and checked as
 * E.164; a bad one is an error naming it (on_invalid 'error', the default) or
 * is recorded in blast_rejections (on_invalid 'skip').  A number given twice
 * is taken once (its first name).  One send per recipient is queued on the
 * channel, due at scheduled_for, with the payload
 *   blast payload || {"to": phone} || {"type": "text", "text": {"body": message}}
 * or || {"type": "template", "template": template}, message's {{name}} and
 * {{phone}} replaced: the WhatsApp Cloud API's shape, with the channel's
 * body_template (e.g. {"messaging_product": "whatsapp"}) in front.
 */
CREATE FUNCTION revenue_engine.create_blast(
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
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    -- The caller's query runs with the caller's privileges and search_path.
    IF (recipients IS NULL) = (recipients_query IS NULL) THEN
        RAISE EXCEPTION 'give the recipients either as an array or as a query'
            USING ERRCODE = '22023';
    END IF;
    IF recipients_query IS NOT NULL THEN
        BEGIN
            EXECUTE pg_catalog.concat('CREATE TEMP TABLE re_blast_raw ON COMMIT DROP AS',
                                      ' SELECT * FROM (', recipients_query, ') AS q');
        EXCEPTION WHEN duplicate_column THEN
            RAISE EXCEPTION 'the recipients query''s columns need distinct names: %', SQLERRM
                USING ERRCODE = '42701',
                      HINT = 'Name them, as in SELECT phone, name, contact_id FROM ...';
        END;
    END IF;
    SELECT * INTO blast_id, recipient_count, duplicates, rejected
      FROM revenue_engine.blast_apply(channel, tag, recipients, recipients_query IS NOT NULL,
                                      message, template, payload, scheduled_for,
                                      follow_up_stage, on_invalid);
END
$fn$;
COMMENT ON FUNCTION revenue_engine.create_blast(text, text, jsonb, text, text, jsonb, jsonb, timestamptz, integer, text) IS
    'create a blast and queue one send per valid, distinct E.164 number; bad numbers are an error or, with on_invalid => ''skip'', recorded in blast_rejections';

-- The part of create_blast after the caller's query (pg_temp.re_blast_raw).
CREATE FUNCTION revenue_engine.blast_apply(
    channel text, tag text, recipients jsonb, from_query boolean, message text,
    template jsonb, payload jsonb, scheduled_for timestamptz, follow_up_stage integer,
    on_invalid text,
    OUT blast_id bigint, OUT recipient_count integer, OUT duplicates integer, OUT rejected integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    tenant   text := revenue_engine.current_tenant();
    ch       bigint;
    ncols    integer;
    nraw     integer;
    bad      text;
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

    -- (position, input, name, contact_id) in the order given
    IF from_query THEN
        SELECT count(*) INTO ncols FROM pg_attribute
         WHERE attrelid = 'pg_temp.re_blast_raw'::regclass AND attnum > 0 AND NOT attisdropped;
        IF ncols < 1 OR ncols > 3 THEN
            RAISE EXCEPTION 'recipients query returns % columns, expected 1 to 3', ncols
                USING ERRCODE = '42601',
                      HINT = 'Return (phone text [, name text [, contact_id text]]) rows.';
        END IF;
        EXECUTE pg_catalog.format(
            'CREATE TEMP TABLE re_blast_in ON COMMIT DROP AS'
            ' SELECT (row_number() OVER ())::integer AS position, r.%I::text AS input, %s AS name, %s AS contact_id'
            '   FROM pg_temp.re_blast_raw r',
            (SELECT attname FROM pg_attribute WHERE attrelid = 'pg_temp.re_blast_raw'::regclass AND attnum = 1),
            CASE WHEN ncols >= 2 THEN pg_catalog.format('r.%I::text',
                 (SELECT attname FROM pg_attribute WHERE attrelid = 'pg_temp.re_blast_raw'::regclass AND attnum = 2))
                 ELSE 'NULL::text' END,
            CASE WHEN ncols >= 3 THEN pg_catalog.format('r.%I::text',
                 (SELECT attname FROM pg_attribute WHERE attrelid = 'pg_temp.re_blast_raw'::regclass AND attnum = 3))
                 ELSE 'NULL::text' END);
    ELSE
        IF jsonb_typeof(recipients) <> 'array' THEN
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
        CREATE TEMP TABLE re_blast_in ON COMMIT DROP AS
        SELECT x.position::integer AS position,
               CASE WHEN jsonb_typeof(x.elem) = 'string' THEN x.elem #>> '{}' ELSE x.elem ->> 'phone' END AS input,
               x.elem ->> 'name' AS name,
               x.elem ->> 'contact_id' AS contact_id
          FROM jsonb_array_elements(recipients) WITH ORDINALITY AS x(elem, position);
    END IF;
    SELECT count(*) INTO nraw FROM pg_temp.re_blast_in;

    CREATE TEMP TABLE re_blast_checked ON COMMIT DROP AS
    SELECT i.position, i.input, i.name, i.contact_id,
           revenue_engine.phone_problem(i.input) AS problem
      FROM pg_temp.re_blast_in i;
    SELECT count(*) INTO rejected FROM pg_temp.re_blast_checked c WHERE c.problem IS NOT NULL;
    IF rejected > 0 AND on_invalid = 'error' THEN
        SELECT string_agg(pg_catalog.format('#%s %s: %s', c.position, coalesce(pg_catalog.quote_literal(c.input), 'NULL'), c.problem),
                          '; ' ORDER BY c.position) INTO bad
          FROM (SELECT * FROM pg_temp.re_blast_checked c WHERE c.problem IS NOT NULL
                ORDER BY c.position LIMIT 5) c;
        RAISE EXCEPTION '% of % recipients are not E.164 phone numbers: %', rejected, nraw,
                        bad || CASE WHEN rejected > 5 THEN '; ...' ELSE '' END
            USING ERRCODE = '22023',
                  HINT = 'Write numbers as +<country code><number>, or pass on_invalid => ''skip'' to leave them out and list them in revenue_engine.blast_rejections.';
    END IF;

    CREATE TEMP TABLE re_blast_ok ON COMMIT DROP AS
    SELECT DISTINCT ON (p.phone) p.position, p.phone, p.name, p.contact_id
      FROM (SELECT c.position, revenue_engine.normalize_phone(c.input) AS phone, c.name, c.contact_id
              FROM pg_temp.re_blast_checked c WHERE c.problem IS NULL) p
     ORDER BY p.phone, p.position;
    SELECT count(*) INTO recipient_count FROM pg_temp.re_blast_ok;
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
      FROM pg_temp.re_blast_checked c WHERE c.problem IS NOT NULL;

    WITH r AS (
        INSERT INTO revenue_engine.blast_recipients (tenant_id, blast_id, phone, name, contact_id)
        SELECT tenant, blast_id, o.phone, o.name, o.contact_id
          FROM pg_temp.re_blast_ok o ORDER BY o.position
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

    DROP TABLE pg_temp.re_blast_in, pg_temp.re_blast_checked, pg_temp.re_blast_ok;
    IF from_query THEN
        DROP TABLE pg_temp.re_blast_raw;
    END IF;
    PERFORM revenue_engine.wake_worker();
END
$fn$;

CREATE VIEW revenue_engine.blast_funnel AS
SELECT b.tenant_id, b.id AS blast_id, b.tag, (b.scheduled_for)::date AS blast_date,
       b.follow_up_stage, b.status AS blast_status,
       c.total, c.sent, c.delivered, c.read, c.replied, c.closed, c.failed,
       round(100.0 * c.sent / NULLIF(c.total, 0), 1) AS sent_pct,
       round(100.0 * c.delivered / NULLIF(c.total, 0), 1) AS delivered_pct,
       round(100.0 * c.read / NULLIF(c.total, 0), 1) AS read_pct,
       round(100.0 * c.replied / NULLIF(c.total, 0), 1) AS replied_pct,
       round(100.0 * c.closed / NULLIF(c.total, 0), 1) AS closed_pct,
       round(100.0 * c.failed / NULLIF(c.total, 0), 1) AS failed_pct
  FROM revenue_engine.blasts b
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(k.total), 0)::bigint AS total, coalesce(sum(k.sent), 0)::bigint AS sent,
              coalesce(sum(k.delivered), 0)::bigint AS delivered, coalesce(sum(k.read), 0)::bigint AS read,
              coalesce(sum(k.replied), 0)::bigint AS replied, coalesce(sum(k.closed), 0)::bigint AS closed,
              coalesce(sum(k.at_failed), 0)::bigint AS failed
         FROM revenue_engine.blast_counters k
        WHERE k.tenant_id = b.tenant_id AND k.blast_id = b.id) c
 WHERE b.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.blast_funnel IS
    'per blast: recipients that reached each stage (cumulative: read includes those who replied) and the share of total; from counters, no scan';

CREATE VIEW revenue_engine.blast_stuck AS
SELECT b.tenant_id, b.id AS blast_id, b.tag, s.stage, s.stuck,
       round(100.0 * s.stuck / NULLIF(c.total, 0), 1) AS stuck_pct
  FROM revenue_engine.blasts b
  CROSS JOIN LATERAL (
       SELECT sum(k.total) AS total, sum(k.at_pending) AS at_pending, sum(k.at_sent) AS at_sent,
              sum(k.at_delivered) AS at_delivered, sum(k.at_read) AS at_read,
              sum(k.at_replied) AS at_replied, sum(k.at_closed) AS at_closed,
              sum(k.at_failed) AS at_failed
         FROM revenue_engine.blast_counters k
        WHERE k.tenant_id = b.tenant_id AND k.blast_id = b.id) c
  CROSS JOIN LATERAL (VALUES
       (1, 'pending', coalesce(c.at_pending, 0)::bigint), (2, 'sent', coalesce(c.at_sent, 0)::bigint),
       (3, 'delivered', coalesce(c.at_delivered, 0)::bigint), (4, 'read', coalesce(c.at_read, 0)::bigint),
       (5, 'replied', coalesce(c.at_replied, 0)::bigint), (6, 'closed', coalesce(c.at_closed, 0)::bigint),
       (7, 'failed', coalesce(c.at_failed, 0)::bigint)) AS s(ord, stage, stuck)
 WHERE b.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.blast_stuck IS
    'per blast and stage: recipients whose status is that stage now (stopped there), and their share of total';

-- Funnel of every blast with a tag (all tags if NULL) scheduled within [from_date, to_date].
CREATE FUNCTION revenue_engine.funnel_by_tag(
    only_tag  text DEFAULT NULL,
    from_date date DEFAULT NULL,
    to_date   date DEFAULT NULL,
    OUT tag text, OUT follow_up_stage integer, OUT blasts bigint, OUT total bigint,
    OUT sent bigint, OUT delivered bigint, OUT read bigint, OUT replied bigint,
    OUT closed bigint, OUT failed bigint,
    OUT delivered_pct numeric, OUT read_pct numeric, OUT replied_pct numeric, OUT closed_pct numeric)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT f.tag, f.follow_up_stage, count(*), sum(f.total)::bigint, sum(f.sent)::bigint,
           sum(f.delivered)::bigint, sum(f.read)::bigint, sum(f.replied)::bigint,
           sum(f.closed)::bigint, sum(f.failed)::bigint,
           round(100.0 * sum(f.delivered) / NULLIF(sum(f.total), 0), 1),
           round(100.0 * sum(f.read) / NULLIF(sum(f.total), 0), 1),
           round(100.0 * sum(f.replied) / NULLIF(sum(f.total), 0), 1),
           round(100.0 * sum(f.closed) / NULLIF(sum(f.total), 0), 1)
      FROM revenue_engine.blast_funnel f
     WHERE ($1 IS NULL OR f.tag = $1)
       AND ($2 IS NULL OR f.blast_date >= $2) AND ($3 IS NULL OR f.blast_date <= $3)
     GROUP BY f.tag, f.follow_up_stage
     ORDER BY f.tag, f.follow_up_stage
$fn$;
COMMENT ON FUNCTION revenue_engine.funnel_by_tag(text, date, date) IS
    'funnel summed over the blasts of a tag (or every tag) in a date range, per follow-up stage';

-- Median (and 90th percentile) time between consecutive stages; scans the blast's recipients.
CREATE FUNCTION revenue_engine.blast_stage_times(
    blast_id bigint,
    OUT from_stage text, OUT to_stage text, OUT recipients bigint,
    OUT median interval, OUT p90 interval)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
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
     WHERE r.tenant_id = revenue_engine.current_tenant() AND r.blast_id = $1
     GROUP BY s.ord, s.from_stage, s.to_stage
     ORDER BY s.ord
$fn$;
COMMENT ON FUNCTION revenue_engine.blast_stage_times(bigint) IS
    'median and 90th percentile time between consecutive stages of a blast''s recipients (scans them)';

REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    revenue_engine.create_blast(text, text, jsonb, text, text, jsonb, jsonb, timestamptz, integer, text),
    revenue_engine.blast_apply(text, text, jsonb, boolean, text, jsonb, jsonb, timestamptz, integer, text),
    revenue_engine.funnel_slots(),
    revenue_engine.phone_problem(text),
    revenue_engine.normalize_phone(text),
    revenue_engine.record_message_status(text, text, timestamptz, text, jsonb),
    revenue_engine.record_inbound_message(text, timestamptz, text, jsonb),
    revenue_engine.mark_closed(text, numeric, timestamptz, bigint, jsonb),
    revenue_engine.ingest_status_webhook(text, jsonb, text),
    revenue_engine.funnel_by_tag(text, date, date),
    revenue_engine.blast_stage_times(bigint)
  TO revenue_engine_user;
GRANT SELECT ON revenue_engine.blasts, revenue_engine.blast_recipients,
                revenue_engine.blast_rejections, revenue_engine.status_history,
                revenue_engine.status_parked, revenue_engine.poll_queue, revenue_engine.blast_funnel,
                revenue_engine.blast_stuck
  TO revenue_engine_user;
/*
 * worker: the delivery workers' state, and waking this database's worker.
 * The last part of the install script: its final statement starts the
 * database's worker once CREATE EXTENSION commits.
 */

-- Wake this database's delivery worker when the current transaction commits.
CREATE FUNCTION revenue_engine.wake_worker()
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_wake_worker';

CREATE FUNCTION revenue_engine.worker_status(
    OUT database_name text, OUT pid integer, OUT state text, OUT started_at timestamptz,
    OUT last_activity_at timestamptz, OUT in_flight integer, OUT requests bigint,
    OUT sent bigint, OUT retried bigint, OUT dead bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_worker_status';
CREATE VIEW revenue_engine.workers AS SELECT * FROM revenue_engine.worker_status();
COMMENT ON VIEW revenue_engine.workers IS 'the delivery workers of this cluster and what they are doing';

REVOKE ALL ON FUNCTION revenue_engine.wake_worker() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.worker_status() TO revenue_engine_user;
GRANT SELECT ON revenue_engine.workers TO revenue_engine_user;

-- CREATE EXTENSION starts this database's worker when it commits.
SELECT revenue_engine.wake_worker();
