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
SELECT tenant_id, id, name, method, revenue_engine.mask_url(url) AS url,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       revenue_engine.mask_json(body_template) AS body_template, message_id_path, timeout_ms,
       connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule, enabled,
       disabled_reason, created_at, updated_at,
       webhook_kind, revenue_engine.mask_url(status_url) AS status_url, status_path, status_map,
       poll_interval, poll_max_age
  FROM revenue_engine.channels
 WHERE tenant_id = revenue_engine.current_tenant();

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
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blasts_id_seq', '');

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
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.blast_recipients_id_seq', '');

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
-- Not dumped (pg_extension_config_dump): pg_restore's COPY into blast_recipients
-- counts the restored rows again through the insert trigger; a restore with
-- triggers disabled runs funnel_recount() afterwards.

-- How many counter rows a new blast gets (fixed per blast at creation).
CREATE FUNCTION revenue_engine.funnel_slots()
RETURNS integer
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_funnel_slots';

CREATE FUNCTION revenue_engine.funnel_recipients_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_funnel_trigger';

-- One row changed: its counter changes summed in memory, written at commit.
CREATE TRIGGER blast_recipients_funnel_update
    AFTER UPDATE ON revenue_engine.blast_recipients
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
-- Rows added or removed in bulk: counted per statement from the transition table
-- (and also written at commit).
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
-- dumped: restoring sends does not fill it again (it is filled when a send's status changes)
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.poll_queue', '');

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
    'status updates that arrived before their message id was known; applied and removed when it appears, deleted after revenue_engine.parked_retention; capped per callback and per tenant (revenue_engine.parked_max_per_callback, parked_max_per_tenant)';

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
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_parked_id_seq', '');

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
    result       text        NOT NULL DEFAULT 'applied',
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT status_history_source_check CHECK (source IN ('send', 'webhook', 'polling', 'manual')),
    CONSTRAINT status_history_result_check CHECK (result IN ('applied', 'duplicate', 'stale'))
);
COMMENT ON TABLE revenue_engine.status_history IS
    'every status change of a blast recipient, append-only; source send = the provider''s answer to the send';
COMMENT ON COLUMN revenue_engine.status_history.result IS
    'applied: the status changed; duplicate or stale: a callback''s item that changed no status, kept for the provider''s data in metadata (conversation, pricing, biz_opaque_callback_data)';
CREATE INDEX status_history_recipient_idx ON revenue_engine.status_history (tenant_id, recipient_id);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_history', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.status_history_id_seq', '');

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
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_create_blast';
COMMENT ON FUNCTION revenue_engine.create_blast(text, text, jsonb, text, text, jsonb, jsonb, timestamptz, integer, text) IS
    'create a blast and queue one send per valid, distinct E.164 number; bad numbers are an error or, with on_invalid => ''skip'', recorded in blast_rejections';

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
-- PL/pgSQL, not SQL, and the tables rather than the view blast_funnel: every
-- statement names the tenant as a parameter, so Citus routes it to the
-- tenant's colocated shards (it plans no statement with parameters in a SQL
-- function, and a view's current_tenant() would be evaluated on the shards).
CREATE FUNCTION revenue_engine.funnel_by_tag(
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
COMMENT ON FUNCTION revenue_engine.funnel_by_tag(text, date, date) IS
    'funnel summed over the blasts of a tag (or every tag) in a date range, per follow-up stage';

-- Median (and 90th percentile) time between consecutive stages; scans the blast's recipients.
CREATE FUNCTION revenue_engine.blast_stage_times(
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
COMMENT ON FUNCTION revenue_engine.blast_stage_times(bigint) IS
    'median and 90th percentile time between consecutive stages of a blast''s recipients (scans them)';

-- Internal (the owner's halves, trigger functions, apply_parked_statuses): no grant.
REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON FUNCTION
    revenue_engine.blast_apply(text, text, jsonb, text[], text[], text[], text, jsonb, jsonb,
                               timestamptz, integer, text)
  FROM PUBLIC, revenue_engine_user;
GRANT EXECUTE ON FUNCTION
    revenue_engine.create_blast(text, text, jsonb, text, text, jsonb, jsonb, timestamptz, integer, text),
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
                revenue_engine.channel_events,
                revenue_engine.blast_stuck
  TO revenue_engine_user;
