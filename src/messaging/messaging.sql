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
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.channels_id_seq', '');

-- The current tenant's channels without credentials (src/tenancy/masking.c); blasts.sql adds columns.
CREATE VIEW revenue_engine.channels_public AS
SELECT tenant_id, id, name, method, revenue_engine.mask_url(url) AS url,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       revenue_engine.mask_json(body_template) AS body_template, message_id_path, timeout_ms,
       connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule, enabled,
       disabled_reason, created_at, updated_at
  FROM revenue_engine.channels
 WHERE tenant_id = revenue_engine.current_tenant();

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
    CONSTRAINT sends_status_check CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown'))
) WITH (fillfactor = 80);
COMMENT ON TABLE revenue_engine.sends IS
    'outbound messages: queued -> sending -> sent (with the provider''s message id) or failed; cancelled (a campaign stopped before it was claimed), unknown (an at-most-once send whose outcome a crash lost)';
CREATE INDEX sends_due_idx ON revenue_engine.sends (channel_id, next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX sends_sending_idx ON revenue_engine.sends (lease_until) WHERE status = 'sending';
CREATE INDEX sends_provider_message_idx ON revenue_engine.sends (tenant_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.sends', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.sends_id_seq', '');

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
COMMENT ON FUNCTION revenue_engine.enqueue_send(text, jsonb, text, timestamptz, uuid, jsonb) IS
    'queue a message on a channel; the same idempotency key returns the first send''s id';

CREATE FUNCTION revenue_engine.set_channel_enabled(name text, enabled boolean, reason text DEFAULT NULL)
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
          AND t.started_at > now() - interval '5 minutes') a ON true
 WHERE c.tenant_id = revenue_engine.current_tenant();

REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.enqueue_send(text, jsonb, text, timestamptz, uuid, jsonb)
  TO revenue_engine_user;
GRANT SELECT ON revenue_engine.sends, revenue_engine.channels_public, revenue_engine.channel_stats
  TO revenue_engine_user;
