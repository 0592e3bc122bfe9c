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
