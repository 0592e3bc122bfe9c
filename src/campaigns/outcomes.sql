/*
 * campaigns: outcomes (see schema.sql for the module's files).
 *
 * A campaign message (campaign_messages, one per send a step queued) moves
 *
 *   queued -> sent -> delivered -> read -> replied        (never backwards)
 *   queued | sent -> failed        (a failed send, or a provider's failed
 *                                   status before delivered)
 *   queued -> unknown              (at-most-once channel, outcome lost in a
 *                                   crash: never sent again; the provider's
 *                                   next status for it settles it)
 *   queued -> cancelled            (a stop condition: enroll.sql)
 *
 * fed by
 *   - the send's own outcome: the trigger sends_campaign_outcome below, on
 *     sends whose idempotency key is a campaign's ('campaign:...'), so other
 *     sends pay one comparison in the trigger's WHEN and nothing else;
 *   - provider statuses (record_message_status, ingest_status_webhook,
 *     polls: a campaign message of a polling channel is in poll_queue as
 *     recipient -send_id): C in
 *     src/blasts/status.c looks the message id up among blast recipients,
 *     then here (campaign_message_status), then parks it; a campaign
 *     message's id landing applies the statuses parked for it
 *     (campaign_message_landed, C);
 *   - inbound messages (record_inbound_message, ingest_status_webhook's
 *     messages, which are inbound only): campaign_inbound finds the
 *     contacts of the sender's phone, notes the inbound message (the
 *     WhatsApp 24-hour window), stops their enrollments (stop on reply) and
 *     marks the message answered replied.
 *
 * History: 'sent' is written by the runner when it queues a send; here
 * 'failed', 'unknown', 'deferred' (WhatsApp 131049) and 'sent' for the
 * WhatsApp template form queued after 131047, and 'sent' with reason
 * 'reconciled' when a status settles an unknown message.
 *
 * WhatsApp errors (channels of kind whatsapp; the code from the send's
 * response {"error": {"code": n}} or a failed status's "errors"):
 *   131047  re-engagement: the 24-hour window is closed.  The step's
 *           template is rendered in its WhatsApp template form and queued as
 *           a new campaign message (form whatsapp_template, idempotency key
 *           'campaign:<enrollment>:<step>:whatsapp_template').
 *   131049  per-user marketing limit: the same send is queued again 24 hours
 *           later (history 'deferred'); the enrollment's next step is not
 *           run before it.  A fourth 131049 for the step is a failure.
 *   131050  the user stopped marketing messages: a marketing opt-out for
 *           whatsapp is recorded (contact_consents granted false, source
 *           'whatsapp 131050'), which stops the contact's enrollments
 *           through the consent trigger (enroll.sql).
 * The Cloud API answers these with HTTP 400, which the worker records as
 * failed at once (a 4xx is never retried as it is).
 */

-- The WhatsApp error code of a send's response or a status's error, or NULL.
CREATE FUNCTION revenue_engine.whatsapp_error_code(j jsonb)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN c ~ '^[0-9]{1,9}$' THEN c::integer END
      FROM (SELECT coalesce(j #>> '{error,code}', j #>> '{errors,0,code}', j #>> '{0,code}',
                            CASE WHEN jsonb_typeof(j) = 'object' THEN j ->> 'code' END) AS c) x
$fn$;
COMMENT ON FUNCTION revenue_engine.whatsapp_error_code(jsonb) IS
    'the WhatsApp Cloud API error code of a response ({"error": {"code": n}}) or a status''s errors ([{"code": n}]), or NULL';

-- The request body of a WhatsApp template message to phone from a rendered
-- template's "whatsapp" form ({"name", "language", "params": [...]}).
CREATE FUNCTION revenue_engine.whatsapp_template_payload(phone text, whatsapp jsonb)
RETURNS jsonb
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_whatsapp_template_payload';
COMMENT ON FUNCTION revenue_engine.whatsapp_template_payload(text, jsonb) IS
    'the WhatsApp Cloud API body of a template message: {"to", "type": "template", "template": {"name", "language", "components"}}';

-- One row of enrollment_history for a campaign message.  (PL/pgSQL, not
-- SQL: Citus plans no statement with parameters in a SQL function.)
CREATE FUNCTION revenue_engine.campaign_message_history(
    m revenue_engine.campaign_messages, event text, reason text, detail jsonb, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := m.tenant_id;
    d      jsonb := jsonb_build_object('send_id', m.send_id, 'form', m.form) || coalesce(detail, '{}');
BEGIN
    INSERT INTO revenue_engine.enrollment_history AS h
           (tenant_id, enrollment_id, campaign_id, version, step, event, reason, detail, at)
    VALUES (tenant, m.enrollment_id, m.campaign_id, m.version, m.step,
            campaign_message_history.event, campaign_message_history.reason, d, campaign_message_history.at);
END
$fn$;

/*
 * The locked message m failed (its send, or a provider's status): failed
 * with the error and history, or the WhatsApp error's remedy.  m.status is
 * the status before.
 */
CREATE FUNCTION revenue_engine.campaign_message_failed(
    m revenue_engine.campaign_messages, error text, code integer, detail jsonb, ts timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant  text := m.tenant_id;
    kind    text;
    enr     revenue_engine.enrollments;
    st      revenue_engine.campaign_steps;
    phone   text;
    uid     uuid;
    r       jsonb;
    sid     bigint;
    until   timestamptz := ts + interval '24 hours';
    why     text;
BEGIN
    SELECT c.kind INTO kind FROM revenue_engine.channels c
     WHERE c.tenant_id = tenant AND c.id = m.channel_id;
    IF kind = 'whatsapp' AND code IN (131047, 131049) THEN
        -- a stop committing now waits for this lock, then cancels what we queue
        SELECT * INTO enr FROM revenue_engine.enrollments e
         WHERE e.tenant_id = tenant AND e.id = m.enrollment_id FOR SHARE;
        IF enr.status IS DISTINCT FROM 'active' THEN
            why := pg_catalog.format('WhatsApp %s, and the enrollment has ended: nothing queued again', code);
            code := NULL;
        ELSIF code = 131049 AND (SELECT count(*) FROM revenue_engine.enrollment_history h
                                  WHERE h.tenant_id = tenant AND h.enrollment_id = m.enrollment_id
                                    AND h.step = m.step AND h.event = 'deferred'
                                    AND h.reason LIKE 'WhatsApp 131049%') >= 3 THEN
            -- the limit holds day after day: given up after three deferrals
            why := 'WhatsApp 131049 (per-user marketing limit) a fourth time: given up';
            code := NULL;
        END IF;
    END IF;

    IF kind = 'whatsapp' AND code = 131049 THEN
        -- the same send, 24 hours later; the enrollment's next step waits for it
        UPDATE revenue_engine.sends s
           SET status = 'queued', attempts = 0, scheduled_for = until, next_attempt_at = until,
               provider_message_id = NULL, sent_at = NULL, lease_until = NULL
         WHERE s.tenant_id = tenant AND s.id = m.send_id;
        UPDATE revenue_engine.campaign_messages cm
           SET status = 'queued', message_id = NULL, sent_at = NULL, error = campaign_message_failed.error
         WHERE cm.tenant_id = tenant AND cm.send_id = m.send_id;
        DELETE FROM revenue_engine.poll_queue q WHERE q.tenant_id = tenant AND q.recipient_id = - m.send_id;
        UPDATE revenue_engine.enrollments e
           SET next_run_at = until, updated_at = ts
         WHERE e.tenant_id = tenant AND e.id = m.enrollment_id AND e.status = 'active'
           AND e.next_run_at < until;
        PERFORM revenue_engine.campaign_message_history(m, 'deferred',
            'WhatsApp 131049 (per-user marketing limit): sent again in 24 hours',
            coalesce(detail, '{}') || jsonb_build_object('until', until, 'error', error), ts);
        RETURN;
    END IF;

    UPDATE revenue_engine.campaign_messages cm
       SET status = 'failed', failed_at = ts, error = campaign_message_failed.error
     WHERE cm.tenant_id = tenant AND cm.send_id = m.send_id;

    IF kind = 'whatsapp' AND code = 131050 THEN
        -- the consent trigger (enroll.sql) stops the contact's whatsapp marketing enrollments
        INSERT INTO revenue_engine.contact_consents AS cc
               (tenant_id, contact_id, channel_kind, purpose, granted, source, updated_at)
        VALUES (tenant, m.contact_id, 'whatsapp', 'marketing', false, 'whatsapp 131050', ts)
            ON CONFLICT (tenant_id, contact_id, channel_kind, purpose)
            DO UPDATE SET granted = false, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at;
        why := 'WhatsApp 131050 (the user stopped marketing messages): marketing opt-out recorded';
    ELSIF kind = 'whatsapp' AND code = 131047 THEN
        SELECT * INTO st FROM revenue_engine.campaign_steps s
         WHERE s.tenant_id = tenant AND s.campaign_id = m.campaign_id AND s.version = m.version
           AND s.position = m.step;
        SELECT c.phone, c.user_id INTO phone, uid FROM revenue_engine.contacts c
         WHERE c.tenant_id = tenant AND c.id = m.contact_id;
        IF m.form = 'whatsapp_template' THEN
            why := 'WhatsApp 131047 (24-hour window closed) for the template form itself';
        ELSIF st.template IS NULL OR phone IS NULL THEN
            why := 'WhatsApp 131047 (24-hour window closed), and the step has no template or the contact no phone';
        ELSE
            -- an error here would fail the worker's whole batch of outcomes: kept as the reason
            BEGIN
                r := revenue_engine.render_for_send(tenant, st.template, st.template_version, m.contact_id,
                                                    enr.context, 'whatsapp_template');
            EXCEPTION WHEN OTHERS THEN
                r := jsonb_build_object('skipped', true, 'reason', SQLERRM);
            END;
            IF coalesce((r ->> 'skipped')::boolean, false) OR jsonb_typeof(r -> 'whatsapp') IS DISTINCT FROM 'object' THEN
                why := 'WhatsApp 131047 (24-hour window closed), and the template''s WhatsApp form cannot be sent: '
                       || coalesce(r ->> 'reason', pg_catalog.format('template "%s" has none', st.template));
            ELSE
                INSERT INTO revenue_engine.sends AS s
                       (tenant_id, channel_id, idempotency_key, user_id, payload, metadata,
                        scheduled_for, next_attempt_at)
                VALUES (tenant, m.channel_id,
                        pg_catalog.format('campaign:%s:%s:whatsapp_template', m.enrollment_id, m.step),
                        uid, revenue_engine.whatsapp_template_payload(phone, r -> 'whatsapp'),
                        jsonb_build_object('campaign_id', m.campaign_id, 'enrollment_id', m.enrollment_id,
                                           'step', m.step, 'form', 'whatsapp_template'),
                        ts, ts)
                ON CONFLICT (tenant_id, channel_id, idempotency_key) DO NOTHING
                RETURNING s.id INTO sid;
                IF sid IS NULL THEN
                    why := 'WhatsApp 131047 (24-hour window closed): the template form was queued already';
                ELSE
                    INSERT INTO revenue_engine.campaign_messages
                           (tenant_id, send_id, enrollment_id, campaign_id, version, step, contact_id,
                            channel_id, template_id, template_version, form, status, created_at)
                    VALUES (tenant, sid, m.enrollment_id, m.campaign_id, m.version, m.step, m.contact_id,
                            m.channel_id, (r ->> 'template_id')::bigint, (r ->> 'version')::integer,
                            'whatsapp_template', 'queued', ts);
                    PERFORM revenue_engine.campaign_message_history(m, 'failed',
                        'WhatsApp 131047 (24-hour window closed): sent again as the template''s WhatsApp form',
                        coalesce(detail, '{}') || jsonb_build_object('error', error), ts);
                    m.send_id := sid;
                    m.form := 'whatsapp_template';
                    PERFORM revenue_engine.campaign_message_history(m, 'sent',
                        'the template''s WhatsApp form, after 131047', NULL, ts);
                    PERFORM revenue_engine.wake_worker();
                    RETURN;
                END IF;
            END IF;
        END IF;
    END IF;
    PERFORM revenue_engine.campaign_message_history(m, 'failed', coalesce(why, error, 'failed'),
        coalesce(detail, '{}') || jsonb_build_object('error', error, 'code', code), ts);
END
$fn$;

/*
 * AFTER UPDATE of a campaign send's status (sending -> sent / failed /
 * unknown): its outcome on the campaign message.
 */
CREATE FUNCTION revenue_engine.campaign_send_outcome()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m    revenue_engine.campaign_messages;
    ts   timestamptz := now();
    body jsonb;
    code integer;
BEGIN
    SELECT * INTO m FROM revenue_engine.campaign_messages cm
     WHERE cm.tenant_id = NEW.tenant_id AND cm.send_id = NEW.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'sent' THEN
        UPDATE revenue_engine.campaign_messages cm
           SET status = CASE WHEN cm.status IN ('queued', 'unknown', 'failed') THEN 'sent' ELSE cm.status END,
               message_id = coalesce(NEW.provider_message_id, cm.message_id),
               sent_at = coalesce(NEW.sent_at, ts), error = NULL, failed_at = NULL
         WHERE cm.tenant_id = m.tenant_id AND cm.send_id = m.send_id;
        IF NEW.provider_message_id IS NOT NULL THEN
            -- a polling channel polls it, as blast recipients (its key in
            -- poll_queue is -send_id; delivery.c drops it once final)
            INSERT INTO revenue_engine.poll_queue AS q
                   (tenant_id, recipient_id, channel_id, message_id, sent_at, next_poll_at)
            SELECT c.tenant_id, - m.send_id, c.id, NEW.provider_message_id, coalesce(NEW.sent_at, ts),
                   coalesce(NEW.sent_at, ts) + c.poll_interval
              FROM revenue_engine.channels c
             WHERE c.tenant_id = m.tenant_id AND c.id = m.channel_id AND c.status_url IS NOT NULL
                ON CONFLICT (tenant_id, recipient_id) DO UPDATE
               SET message_id = EXCLUDED.message_id, sent_at = EXCLUDED.sent_at,
                   next_poll_at = EXCLUDED.next_poll_at;
            -- statuses the provider reported before the send's answer landed
            PERFORM revenue_engine.campaign_message_landed(m.tenant_id, NEW.provider_message_id);
        END IF;
    ELSIF NEW.status = 'failed' THEN
        IF left(ltrim(NEW.response_body), 1) = '{' THEN
            BEGIN
                body := NEW.response_body::jsonb;
            EXCEPTION WHEN data_exception THEN
                body := NULL;
            END;
        END IF;
        code := revenue_engine.whatsapp_error_code(body);
        PERFORM revenue_engine.campaign_message_failed(m,
            coalesce(NEW.last_error, 'HTTP ' || NEW.response_status)
              || coalesce(': ' || left(coalesce(body #>> '{error,message}', body #>> '{error,title}'), 200), ''),
            code,
            jsonb_build_object('response_status', NEW.response_status), ts);
    ELSIF NEW.status = 'unknown' THEN
        UPDATE revenue_engine.campaign_messages cm SET status = 'unknown', error = NEW.last_error
         WHERE cm.tenant_id = m.tenant_id AND cm.send_id = m.send_id;
        PERFORM revenue_engine.campaign_message_history(m, 'unknown',
            'at-most-once channel: the worker stopped during the request, so it is not sent again; the provider''s next status for it settles it',
            jsonb_build_object('error', NEW.last_error), ts);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER sends_campaign_outcome
    AFTER UPDATE OF status ON revenue_engine.sends
    FOR EACH ROW
    WHEN (NEW.idempotency_key LIKE 'campaign:%' AND OLD.status = 'sending'
          AND NEW.status IN ('sent', 'failed', 'unknown'))
    EXECUTE FUNCTION revenue_engine.campaign_send_outcome();

-- Statuses parked for a message id that just landed on a campaign message (C, status.c).
CREATE FUNCTION revenue_engine.campaign_message_landed(tenant text, message_id text)
RETURNS integer
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_campaign_message_landed';

/*
 * A provider's status of a campaign message: 'applied', 'duplicate' or
 * 'stale' (status.c's results), NULL when no campaign message carries the
 * id.  The rules are the blast recipients': a status never moves back, a
 * higher one fills the lower stages' times, failed is taken before
 * delivered only, and a delivered (or higher) after failed moves on.  An
 * unknown message (at-most-once, outcome lost) takes any status: the
 * history says it was reconciled; its id is taken from the status when
 * the status carries the send's idempotency key (biz_opaque_callback_data
 * on WhatsApp, "reference" elsewhere).  replied stops the contact's
 * enrollments.
 */
CREATE FUNCTION revenue_engine.campaign_message_status(
    tenant text, msg_id text, status text, at timestamptz, source text, raw jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m   revenue_engine.campaign_messages;
    ref text[];
BEGIN
    SELECT * INTO m FROM revenue_engine.campaign_messages cm
     WHERE cm.tenant_id = tenant AND cm.message_id = msg_id
     ORDER BY cm.send_id DESC LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        -- a message whose id we never learned (at-most-once, its answer lost in
        -- a crash): the provider echoes the send's idempotency key
        -- (biz_opaque_callback_data, which the worker adds on whatsapp channels)
        ref := regexp_match(coalesce(raw ->> 'biz_opaque_callback_data', raw ->> 'reference'),
                            '^campaign:([0-9]{1,18}):([0-9]{1,9})(:whatsapp_template)?$');
        IF ref IS NULL THEN
            RETURN NULL;
        END IF;
        SELECT * INTO m FROM revenue_engine.campaign_messages cm
         WHERE cm.tenant_id = tenant AND cm.enrollment_id = ref[1]::bigint AND cm.step = ref[2]::integer
           AND cm.form = CASE WHEN ref[3] IS NULL THEN 'text' ELSE 'whatsapp_template' END
           AND cm.message_id IS NULL
           FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        UPDATE revenue_engine.campaign_messages cm SET message_id = msg_id
         WHERE cm.tenant_id = tenant AND cm.send_id = m.send_id;
        m.message_id := msg_id;
    END IF;
    RETURN revenue_engine.campaign_message_apply(m, status, at, source, raw);
END
$fn$;

CREATE FUNCTION revenue_engine.campaign_message_apply(
    m revenue_engine.campaign_messages, status text, at timestamptz, source text, raw jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant   text := m.tenant_id;
    ts       timestamptz := now();
    old_rank integer := CASE m.status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                                      WHEN 'replied' THEN 4 ELSE 0 END;
    new_rank integer := CASE status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                                    WHEN 'replied' THEN 4 ELSE 0 END;
    t        timestamptz := greatest(at, m.sent_at);
    err      text;
BEGIN
    IF m.status = 'cancelled' OR status NOT IN ('sent', 'delivered', 'read', 'replied', 'failed') THEN
        RETURN 'stale';
    END IF;
    IF status = 'failed' THEN
        IF m.status = 'failed' THEN
            RETURN 'duplicate';
        END IF;
        IF old_rank >= 2 THEN
            RETURN 'stale';
        END IF;
        err := coalesce(raw #>> '{errors,0,title}', raw #>> '{errors,0,message}', raw #>> '{error,message}',
                        raw ->> 'error', 'the provider reported failed');
        PERFORM revenue_engine.campaign_message_failed(m, err, revenue_engine.whatsapp_error_code(raw),
            jsonb_build_object('source', source, 'message_id', m.message_id), t);
        RETURN 'applied';
    END IF;
    IF m.status = 'failed' AND new_rank < 2 THEN
        RETURN 'stale';
    END IF;
    IF new_rank <= old_rank AND m.status NOT IN ('failed', 'unknown', 'queued') THEN
        -- the stage's own, earlier report moves its time earlier
        UPDATE revenue_engine.campaign_messages cm
           SET sent_at = CASE WHEN new_rank = 1 THEN least(cm.sent_at, t) ELSE cm.sent_at END,
               delivered_at = CASE WHEN new_rank = 2 THEN least(cm.delivered_at, t) ELSE cm.delivered_at END,
               read_at = CASE WHEN new_rank = 3 THEN least(cm.read_at, t) ELSE cm.read_at END
         WHERE cm.tenant_id = tenant AND cm.send_id = m.send_id AND new_rank < old_rank;
        RETURN CASE WHEN new_rank = old_rank THEN 'duplicate' ELSE 'stale' END;
    END IF;
    UPDATE revenue_engine.campaign_messages cm
       SET status = campaign_message_apply.status,
           sent_at = coalesce(cm.sent_at, t),
           delivered_at = CASE WHEN new_rank >= 2 THEN coalesce(cm.delivered_at, t) END,
           read_at = CASE WHEN new_rank >= 3 THEN coalesce(cm.read_at, t) END,
           replied_at = CASE WHEN new_rank >= 4 THEN coalesce(cm.replied_at, t) END
     WHERE cm.tenant_id = tenant AND cm.send_id = m.send_id;
    IF m.status = 'unknown' THEN
        PERFORM revenue_engine.campaign_message_history(m, 'sent',
            pg_catalog.format('reconciled: the provider reported %s for the message whose outcome was unknown', status),
            jsonb_build_object('source', source, 'message_id', m.message_id), ts);
    END IF;
    IF status = 'replied' THEN
        PERFORM revenue_engine.campaign_stop_contact(tenant, m.contact_id, 'replied');
    END IF;
    RETURN 'applied';
END
$fn$;

/*
 * An inbound message from phone (E.164) on channel_id (NULL: not known, as
 * for record_inbound_message), answering the message context_id if given.
 * For each contact of the tenant with that phone: the time of its last
 * inbound message on the channel (note_inbound; without a channel, the one
 * of the campaign message answered), stop on reply (campaign_stop_contact
 * 'replied': every open enrollment of the contact), and the campaign
 * message answered marked replied: the one context_id names (none when it
 * names another message, e.g. a blast's), else the contact's latest sent
 * within reply_window.  Returns how many contacts it
 * found (a context naming a campaign message counts its contact).
 */
CREATE FUNCTION revenue_engine.campaign_inbound(
    tenant text, phone text, channel_id bigint, at timestamptz, context_id text,
    reply_window interval, raw jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    contact bigint;
    found_n integer := 0;
    m       revenue_engine.campaign_messages;
    ch      bigint;
    contacts bigint[];
BEGIN
    IF phone IS NOT NULL THEN
        SELECT coalesce(array_agg(c.id ORDER BY c.id), '{}') INTO contacts
          FROM revenue_engine.contacts c
         WHERE c.tenant_id = tenant AND c.phone = campaign_inbound.phone;
    ELSE
        contacts := '{}';
    END IF;
    IF cardinality(contacts) = 0 AND context_id IS NOT NULL THEN
        SELECT coalesce(array_agg(DISTINCT cm.contact_id), '{}') INTO contacts
          FROM revenue_engine.campaign_messages cm
         WHERE cm.tenant_id = tenant AND cm.message_id = context_id;
    END IF;
    FOREACH contact IN ARRAY contacts LOOP
        found_n := found_n + 1;
        m := NULL;
        IF context_id IS NOT NULL THEN
            SELECT * INTO m FROM revenue_engine.campaign_messages cm
             WHERE cm.tenant_id = tenant AND cm.message_id = context_id AND cm.contact_id = contact
             ORDER BY cm.send_id DESC LIMIT 1 FOR UPDATE;
        END IF;
        IF context_id IS NULL THEN
            SELECT * INTO m FROM revenue_engine.campaign_messages cm
             WHERE cm.tenant_id = tenant AND cm.contact_id = contact
               AND cm.sent_at > at - reply_window AND cm.sent_at <= at
               AND cm.status NOT IN ('failed', 'cancelled')
               AND (campaign_inbound.channel_id IS NULL OR cm.channel_id = campaign_inbound.channel_id)
             ORDER BY cm.sent_at DESC, cm.send_id DESC LIMIT 1 FOR UPDATE;
        END IF;
        ch := coalesce(channel_id, m.channel_id);
        IF ch IS NOT NULL THEN
            PERFORM revenue_engine.note_inbound(tenant, contact, ch, at);
        END IF;
        PERFORM revenue_engine.campaign_stop_contact(tenant, contact, 'replied');
        IF m.send_id IS NOT NULL THEN
            PERFORM revenue_engine.campaign_message_apply(m, 'replied', at, 'webhook', raw);
        END IF;
    END LOOP;
    RETURN found_n;
END
$fn$;

-- Internal: triggers, the worker and status.c (in the owner's scope) call these.
REVOKE ALL ON FUNCTION
    revenue_engine.whatsapp_error_code(jsonb),
    revenue_engine.whatsapp_template_payload(text, jsonb),
    revenue_engine.campaign_message_history(revenue_engine.campaign_messages, text, text, jsonb, timestamptz),
    revenue_engine.campaign_message_failed(revenue_engine.campaign_messages, text, integer, jsonb, timestamptz),
    revenue_engine.campaign_send_outcome(),
    revenue_engine.campaign_message_landed(text, text),
    revenue_engine.campaign_message_status(text, text, text, timestamptz, text, jsonb),
    revenue_engine.campaign_message_apply(revenue_engine.campaign_messages, text, timestamptz, text, jsonb),
    revenue_engine.campaign_inbound(text, text, bigint, timestamptz, text, interval, jsonb)
  FROM PUBLIC;
