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
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.endpoints_id_seq', '');

-- The current tenant's endpoints without secrets (mask_url: src/tenancy/masking.c).
CREATE VIEW revenue_engine.endpoints_public AS
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
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.delivery_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.delivery_attempts_id_seq', '');

CREATE FUNCTION revenue_engine.check_url(url text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_url';
-- The class of address the worker refuses to connect to, NULL when it connects.
CREATE FUNCTION revenue_engine.http_address_class(address text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_http_address_class';
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
          AND t.started_at > now() - interval '5 minutes') a ON true
 WHERE e.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.endpoint_stats IS
    'per endpoint of the current tenant: pending, in flight, retrying, dead, oldest pending age; deliveries and p50/p99 latency over 5 minutes';

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
