/*
 * campaigns: the tables of drip campaigns (issue 12).  The functions that
 * write them are in the module's other SQL files, in this order:
 *
 *   schema.sql       the tables, shared by every part (this file)
 *   contacts.sql     contacts, tags, consent, last inbound message
 *   templates.sql    versioned templates and their rendering (template.c)
 *   definitions.sql  campaigns, versions, steps, holidays; activate, pause ...
 *   enroll.sql       enrollment and its triggers, re-entry, stop conditions (enroll.c)
 *   runner.sql       the worker's job kind "campaign steps" (runner.c)
 *   outcomes.sql     sends' outcomes on campaign messages, WhatsApp errors
 *   views.sql        counters and views: funnels, template stats, due queue (counters.c)
 *   schedule         next_send_time (schedule.c), the time arithmetic
 *
 * Every table is a tenant table: keys lead with tenant_id, row level
 * security is forced on it (tenancy.sql), it is distributed by tenant_id on
 * Citus (distribute()), foreign keys stay inside a tenant.  Timestamps are
 * timestamptz; local times are computed in the contact's IANA zone.
 *
 * Nothing here is written by the application directly: it calls the
 * functions, which check their input and raise a clear error.
 */

/*
 * Channels get a kind (consent and frequency caps are per kind; WhatsApp has
 * its 24-hour window) and a delivery guarantee: at_least_once (a send whose
 * outcome a crash lost is sent again, with the same idempotency key) or
 * at_most_once, for providers that cannot drop duplicates (such a send
 * becomes 'unknown' and is settled by status callbacks, never sent again).
 */
ALTER TABLE revenue_engine.channels
    ADD COLUMN kind     text NOT NULL DEFAULT 'webhook',
    ADD COLUMN delivery text NOT NULL DEFAULT 'at_least_once',
    ADD CONSTRAINT channels_kind_check CHECK (kind IN ('whatsapp', 'sms', 'email', 'push', 'webhook')),
    ADD CONSTRAINT channels_delivery_check CHECK (delivery IN ('at_least_once', 'at_most_once'));
COMMENT ON COLUMN revenue_engine.channels.kind IS
    'whatsapp, sms, email, push or webhook: consent and frequency caps are per kind';
COMMENT ON COLUMN revenue_engine.channels.delivery IS
    'at_least_once (a lost outcome is sent again with the same idempotency key) or at_most_once (it becomes unknown)';

CREATE OR REPLACE VIEW revenue_engine.channels_public AS
SELECT tenant_id, id, name, method, revenue_engine.mask_url(url) AS url,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(headers)) AS header_names,
       revenue_engine.mask_json(body_template) AS body_template, message_id_path, timeout_ms,
       connect_timeout_ms, max_in_flight, rate_limit, rate_period, retry_schedule, enabled,
       disabled_reason, created_at, updated_at,
       webhook_kind, revenue_engine.mask_url(status_url) AS status_url, status_path, status_map,
       poll_interval, poll_max_age, kind, delivery
  FROM revenue_engine.channels
 WHERE tenant_id = revenue_engine.current_tenant();

CREATE FUNCTION revenue_engine.set_channel_kind(
    name     text,
    kind     text,
    delivery text DEFAULT 'at_least_once')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- computed once: parameters of the UPDATE (see enqueue_send)
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
BEGIN
    IF name IS NULL OR kind IS NULL OR delivery IS NULL THEN
        RAISE EXCEPTION 'name, kind and delivery must not be null' USING ERRCODE = '22004';
    END IF;
    IF kind NOT IN ('whatsapp', 'sms', 'email', 'push', 'webhook') THEN
        RAISE EXCEPTION 'channel kind "%" is not whatsapp, sms, email, push or webhook', kind
            USING ERRCODE = '22023';
    END IF;
    IF delivery NOT IN ('at_least_once', 'at_most_once') THEN
        RAISE EXCEPTION 'delivery "%" is not at_least_once or at_most_once', delivery
            USING ERRCODE = '22023';
    END IF;
    UPDATE revenue_engine.channels c
       SET kind = set_channel_kind.kind, delivery = set_channel_kind.delivery, updated_at = ts
     WHERE c.tenant_id = tenant AND c.name = set_channel_kind.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', name USING ERRCODE = '42704';
    END IF;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_channel_kind(text, text, text) IS
    'set a channel''s kind (whatsapp, sms, email, push, webhook) and delivery guarantee (at_least_once, at_most_once)';

-- Contacts: the people campaigns talk to, keyed by the application's own reference.
CREATE TABLE revenue_engine.contacts (
    tenant_id    text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    external_ref text        NOT NULL,
    user_id      uuid,
    phone        text,
    email        text,
    name         text,
    timezone     text,
    attributes   jsonb       NOT NULL DEFAULT '{}',
    tags         text[]      NOT NULL DEFAULT '{}',
    source       text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_ref),
    CONSTRAINT contacts_phone_check CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    CONSTRAINT contacts_attributes_check CHECK (pg_catalog.jsonb_typeof(attributes) = 'object')
);
COMMENT ON TABLE revenue_engine.contacts IS
    'people campaigns talk to: the application''s reference, E.164 phone, e-mail, IANA time zone, attributes and tags';
CREATE INDEX contacts_phone_idx ON revenue_engine.contacts (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_user_idx ON revenue_engine.contacts (tenant_id, user_id) WHERE user_id IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.contacts', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.contacts_id_seq', '');

-- Consent per contact, channel kind and purpose.  No row: marketing is not
-- allowed (opt-in), transactional is (a service message the contact expects).
CREATE TABLE revenue_engine.contact_consents (
    tenant_id    text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    contact_id   bigint      NOT NULL,
    channel_kind text        NOT NULL,
    purpose      text        NOT NULL,
    granted      boolean     NOT NULL,
    source       text,
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, contact_id, channel_kind, purpose),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES revenue_engine.contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT contact_consents_kind_check
        CHECK (channel_kind IN ('whatsapp', 'sms', 'email', 'push', 'webhook')),
    CONSTRAINT contact_consents_purpose_check CHECK (purpose IN ('marketing', 'transactional'))
);
COMMENT ON TABLE revenue_engine.contact_consents IS
    'consent per contact, channel kind and purpose; without a row marketing is refused and transactional allowed';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.contact_consents', '');

-- When the contact last wrote to us on a channel (WhatsApp's 24-hour window, stop on reply).
CREATE TABLE revenue_engine.contact_inbound (
    tenant_id       text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    contact_id      bigint      NOT NULL,
    channel_id      bigint      NOT NULL,
    last_inbound_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, channel_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES revenue_engine.contacts (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE revenue_engine.contact_inbound IS
    'the time of each contact''s last inbound message per channel';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.contact_inbound', '');

-- Templates: a name, and its versions (a change is a new version; sends name the one they used).
CREATE TABLE revenue_engine.templates (
    tenant_id      text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    name           text        NOT NULL,
    latest_version integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
COMMENT ON TABLE revenue_engine.templates IS 'named message templates; their text is in template_versions';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.templates', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.templates_id_seq', '');

CREATE TABLE revenue_engine.template_versions (
    tenant_id   text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    template_id bigint      NOT NULL,
    version     integer     NOT NULL,
    body        text        NOT NULL,
    cta_url     text,
    whatsapp    jsonb,
    fallback    text,
    variables   text[]      NOT NULL DEFAULT '{}',
    required    text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, template_id, version),
    FOREIGN KEY (tenant_id, template_id) REFERENCES revenue_engine.templates (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE revenue_engine.template_versions IS
    'one version of a template: body with {{variables|defaults}}, call-to-action URL, WhatsApp template form, fallback template name';
COMMENT ON COLUMN revenue_engine.template_versions.required IS
    'variables without a default: a send missing one falls back or is skipped';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.template_versions', '');

-- The tenant's holidays, skipped by delays in business days.
CREATE TABLE revenue_engine.holidays (
    tenant_id text NOT NULL DEFAULT revenue_engine.current_tenant(),
    day       date NOT NULL,
    name      text,
    PRIMARY KEY (tenant_id, day)
);
COMMENT ON TABLE revenue_engine.holidays IS 'the tenant''s holidays: business-day delays skip them';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.holidays', '');

/*
 * Campaigns: what does not change with versions (name, channel, trigger,
 * re-entry, status); the version new enrollments get.  A campaign's steps
 * and send rules are a version: editing an active campaign adds one, and
 * running enrollments keep theirs.
 */
CREATE TABLE revenue_engine.campaigns (
    tenant_id        text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    name             text        NOT NULL,
    channel_id       bigint,
    purpose          text        NOT NULL DEFAULT 'marketing',
    status           text        NOT NULL DEFAULT 'draft',
    version          integer     NOT NULL DEFAULT 1,
    trigger_kind     text        NOT NULL DEFAULT 'manual',
    trigger_value    text,
    trigger_after    interval,
    followups_until  timestamptz,
    reentry          text        NOT NULL DEFAULT 'never',
    reentry_cooldown interval,
    paused_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    CONSTRAINT campaigns_status_check CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    CONSTRAINT campaigns_purpose_check CHECK (purpose IN ('marketing', 'transactional')),
    CONSTRAINT campaigns_trigger_check
        CHECK (trigger_kind IN ('manual', 'contact_created', 'tag_added', 'event', 'blast_no_reply')),
    CONSTRAINT campaigns_reentry_check CHECK (reentry IN ('never', 'cooldown', 'always')),
    CONSTRAINT campaigns_cooldown_check CHECK ((reentry = 'cooldown') = (reentry_cooldown IS NOT NULL))
);
COMMENT ON TABLE revenue_engine.campaigns IS
    'drip campaigns: channel, trigger, re-entry policy, status draft/active/paused/archived, the version new enrollments get';
COMMENT ON COLUMN revenue_engine.campaigns.followups_until IS
    'blast_no_reply: recipients sent up to this time were considered for follow-up (campaign_blast_followups)';
-- Triggers look up the active campaigns of a kind (and tag or event type).
CREATE INDEX campaigns_trigger_idx ON revenue_engine.campaigns (tenant_id, trigger_kind, trigger_value)
    WHERE status = 'active';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.campaigns_id_seq', '');

CREATE TABLE revenue_engine.campaign_versions (
    tenant_id         text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    campaign_id       bigint      NOT NULL,
    version           integer     NOT NULL,
    window_start      time,
    window_end        time,
    quiet_start       time,
    quiet_end         time,
    fallback_timezone text        NOT NULL DEFAULT 'UTC',
    cap_count         integer,
    cap_period        text,
    cap_window        interval,
    cap_action        text        NOT NULL DEFAULT 'defer',
    stale_after       interval,
    whatsapp_margin   interval    NOT NULL DEFAULT '30 minutes',
    exit_rules        jsonb       NOT NULL DEFAULT '[]',
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, campaign_id, version),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES revenue_engine.campaigns (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT campaign_versions_cap_check
        CHECK (cap_count IS NULL OR (cap_count > 0 AND cap_period IN ('local_day', 'rolling')
                                     AND (cap_period = 'local_day') = (cap_window IS NULL))),
    CONSTRAINT campaign_versions_cap_action_check CHECK (cap_action IN ('skip', 'defer')),
    CONSTRAINT campaign_versions_window_check CHECK ((window_start IS NULL) = (window_end IS NULL)),
    CONSTRAINT campaign_versions_quiet_check CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CONSTRAINT campaign_versions_exit_rules_check CHECK (pg_catalog.jsonb_typeof(exit_rules) = 'array')
);
COMMENT ON TABLE revenue_engine.campaign_versions IS
    'a version of a campaign''s send rules: send window, quiet hours, fallback zone, frequency cap, stale_after, exit rules';

/*
 * Steps of a version, in position order (1, 2, ...).  Kinds and their columns:
 *   send        template (template_version NULL: the latest at send time),
 *               outside_window: WhatsApp free text outside the 24-hour window
 *   wait        delay_amount, delay_unit (minutes, hours, days, weeks, business_days)
 *   wait_until  at_local_time: the next such local time in the contact's zone
 *   wait_event  event_type (match_key: equal in the entry context and the
 *               event), timeout: then on to the next step (timeout_action continue) or exit
 *   tag, untag  tag
 *   notify      endpoint, event_type, data: an outbox event to that endpoint
 *   exit        reason
 */
CREATE TABLE revenue_engine.campaign_steps (
    tenant_id        text     NOT NULL DEFAULT revenue_engine.current_tenant(),
    campaign_id      bigint   NOT NULL,
    version          integer  NOT NULL,
    position         integer  NOT NULL,
    kind             text     NOT NULL,
    template         text,
    template_version integer,
    outside_window   text,
    delay_amount     integer,
    delay_unit       text,
    at_local_time    time,
    event_type       text,
    match_key        text,
    timeout          interval,
    timeout_action   text,
    tag              text,
    endpoint         text,
    data             jsonb,
    reason           text,
    PRIMARY KEY (tenant_id, campaign_id, version, position),
    FOREIGN KEY (tenant_id, campaign_id, version)
        REFERENCES revenue_engine.campaign_versions (tenant_id, campaign_id, version) ON DELETE CASCADE,
    CONSTRAINT campaign_steps_kind_check
        CHECK (kind IN ('send', 'wait', 'wait_until', 'wait_event', 'tag', 'untag', 'notify', 'exit')),
    CONSTRAINT campaign_steps_position_check CHECK (position > 0),
    CONSTRAINT campaign_steps_delay_check
        CHECK (delay_unit IS NULL OR (delay_amount > 0
               AND delay_unit IN ('minutes', 'hours', 'days', 'weeks', 'business_days'))),
    CONSTRAINT campaign_steps_outside_window_check
        CHECK (outside_window IS NULL OR outside_window IN ('template', 'defer', 'skip')),
    CONSTRAINT campaign_steps_timeout_action_check
        CHECK (timeout_action IS NULL OR timeout_action IN ('continue', 'exit'))
);
COMMENT ON TABLE revenue_engine.campaign_steps IS
    'the steps of a campaign version: send, wait, wait_until, wait_event, tag, untag, notify, exit';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.campaign_versions', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.campaign_steps', '');

/*
 * Enrollments: a contact in a campaign.  step is the next step to run, due
 * at next_run_at (NULL: nothing scheduled, e.g. waiting for an event without
 * a timeout, or ended).  A contact is in a campaign at most once at a time
 * (enrollments_open_idx), and entry numbers its entries (re-entry policy).
 */
CREATE TABLE revenue_engine.enrollments (
    tenant_id       text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    campaign_id     bigint      NOT NULL,
    contact_id      bigint      NOT NULL,
    version         integer     NOT NULL,
    entry           integer     NOT NULL DEFAULT 1,
    status          text        NOT NULL DEFAULT 'active',
    step            integer     NOT NULL DEFAULT 1,
    step_started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    next_run_at     timestamptz,
    context         jsonb       NOT NULL DEFAULT '{}',
    entry_key       text,
    trigger_kind    text        NOT NULL DEFAULT 'manual',
    enrolled_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    ended_at        timestamptz,
    end_reason      text,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, contact_id, entry),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES revenue_engine.campaigns (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, contact_id) REFERENCES revenue_engine.contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT enrollments_status_check CHECK (status IN ('active', 'completed', 'exited')),
    CONSTRAINT enrollments_entry_check CHECK (entry > 0),
    CONSTRAINT enrollments_ended_check CHECK ((status = 'active') = (ended_at IS NULL)),
    CONSTRAINT enrollments_context_check CHECK (pg_catalog.jsonb_typeof(context) = 'object')
) WITH (fillfactor = 70);
COMMENT ON TABLE revenue_engine.enrollments IS
    'a contact in a campaign: its version, the next step and when it is due (next_run_at), how it ended';
-- At most one open enrollment per contact and campaign: a unique key, not a check.
CREATE UNIQUE INDEX enrollments_open_idx ON revenue_engine.enrollments (tenant_id, campaign_id, contact_id)
    WHERE status = 'active';
-- Due enrollments per tenant, in time order (the worker's claim, the due queue's lag).
CREATE INDEX enrollments_due_idx ON revenue_engine.enrollments (tenant_id, next_run_at)
    WHERE status = 'active' AND next_run_at IS NOT NULL;
-- A contact's open enrollments (stop conditions).
CREATE INDEX enrollments_contact_idx ON revenue_engine.enrollments (tenant_id, contact_id)
    WHERE status = 'active';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.enrollments', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.enrollments_id_seq', '');

-- Every transition of an enrollment, deferral and skip, with its reason; append-only.
CREATE TABLE revenue_engine.enrollment_history (
    tenant_id     text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    enrollment_id bigint      NOT NULL,
    campaign_id   bigint      NOT NULL,
    version       integer     NOT NULL,
    step          integer,
    event         text        NOT NULL,
    reason        text,
    detail        jsonb,
    at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT enrollment_history_event_check
        CHECK (event IN ('enrolled', 'step', 'sent', 'deferred', 'skipped', 'waiting', 'resumed',
                         'completed', 'exited', 'cancelled', 'failed', 'unknown', 'refused'))
);
COMMENT ON TABLE revenue_engine.enrollment_history IS
    'append-only: every enrollment, step, send, deferral, skip and exit, with its reason';
CREATE INDEX enrollment_history_enrollment_idx
    ON revenue_engine.enrollment_history (tenant_id, enrollment_id, id);
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.enrollment_history', '');
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.enrollment_history_id_seq', '');

CREATE FUNCTION revenue_engine.enrollment_history_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE EXCEPTION 'revenue_engine.enrollment_history is append-only: % is not allowed', TG_OP
        USING ERRCODE = '55000',
              HINT = 'History rows are never changed; TRUNCATE by the extension owner empties it.';
END
$fn$;
CREATE TRIGGER enrollment_history_append_only
    BEFORE UPDATE OR DELETE ON revenue_engine.enrollment_history
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.enrollment_history_append_only();

/*
 * One row per message a campaign step queued: its send (sends.id), and the
 * stages it reached, moved by the send's outcome and the provider's status
 * callbacks.  (enrollment_id, step, form) is unique: a step sends once per
 * entry; the send's idempotency key is 'campaign:<enrollment_id>:<step>'
 * (':whatsapp_template' appended for the template form outcomes.sql queues
 * after WhatsApp's 131047).
 */
CREATE TABLE revenue_engine.campaign_messages (
    tenant_id        text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    send_id          bigint      NOT NULL,
    enrollment_id    bigint      NOT NULL,
    campaign_id      bigint      NOT NULL,
    version          integer     NOT NULL,
    step             integer     NOT NULL,
    contact_id       bigint      NOT NULL,
    channel_id       bigint      NOT NULL,
    template_id      bigint,
    template_version integer,
    form             text        NOT NULL DEFAULT 'text',
    fallback_used    boolean     NOT NULL DEFAULT false,
    status           text        NOT NULL DEFAULT 'queued',
    message_id       text,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at          timestamptz,
    delivered_at     timestamptz,
    read_at          timestamptz,
    replied_at       timestamptz,
    failed_at        timestamptz,
    PRIMARY KEY (tenant_id, send_id),
    -- one message per step and form: the WhatsApp template form may follow
    -- a text the provider refused (131047, outcomes.sql)
    CONSTRAINT campaign_messages_step_key UNIQUE (tenant_id, enrollment_id, step, form),
    CONSTRAINT campaign_messages_form_check CHECK (form IN ('text', 'whatsapp_template')),
    CONSTRAINT campaign_messages_status_check
        CHECK (status IN ('queued', 'sent', 'delivered', 'read', 'replied', 'failed', 'cancelled', 'unknown'))
);
COMMENT ON TABLE revenue_engine.campaign_messages IS
    'one row per message a campaign step queued: its send, template version and the stages it reached';
COMMENT ON COLUMN revenue_engine.campaign_messages.fallback_used IS
    'the step''s template missed a required variable: template_id/template_version name the fallback template rendered instead';
CREATE INDEX campaign_messages_message_idx ON revenue_engine.campaign_messages (tenant_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX campaign_messages_queued_idx ON revenue_engine.campaign_messages (tenant_id, enrollment_id)
    WHERE status = 'queued';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.campaign_messages', '');

/*
 * Frequency caps: per contact and channel kind, the times of its recent
 * campaign sends (at most the largest cap).  The runner locks the row
 * (INSERT .. ON CONFLICT DO UPDATE, or FOR UPDATE) before it counts, so
 * concurrent sends to one contact cannot both pass a cap.
 */
CREATE TABLE revenue_engine.contact_frequency (
    tenant_id    text          NOT NULL DEFAULT revenue_engine.current_tenant(),
    contact_id   bigint        NOT NULL,
    channel_kind text          NOT NULL,
    recent       timestamptz[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, contact_id, channel_kind),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES revenue_engine.contacts (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE revenue_engine.contact_frequency IS
    'per contact and channel kind, the times of its recent campaign sends: the frequency cap''s locked counter';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.contact_frequency', '');

REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.enrollment_history_append_only() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.set_channel_kind(text, text, text) FROM PUBLIC;
