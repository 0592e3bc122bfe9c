-- Campaign outcomes (src/campaigns/outcomes.sql, status.c, delivery.c): a
-- campaign send's outcome on its campaign message, provider statuses and
-- parked statuses, inbound messages (stop on reply), WhatsApp's 131047,
-- 131049 and 131050, and at-most-once sends whose outcome was lost.
--
-- The runner's part is played by oc_queue (a send and its campaign message,
-- as the runner queues them), the worker's by UPDATEs of revenue_engine.sends
-- (queued -> sending -> sent / failed / unknown), which fire the outcome
-- trigger.  The channels are disabled: the delivery worker claims nothing.
-- Status times are instants around T0 = 2026-11-01 10:00 UTC, shown as
-- intervals from T0.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SET revenue_engine.tenant = 'outcomes';

SELECT revenue_engine.create_channel('oc_wa', 'https://graph.facebook.com/v19.0/106540352242922/messages',
         body_template => '{"messaging_product": "whatsapp"}', message_id_path => '{messages,0,id}',
         enabled => false) > 0 AS created;
SELECT revenue_engine.set_channel_kind('oc_wa', 'whatsapp');
SELECT revenue_engine.set_channel_status_source('oc_wa', webhook_kind => 'whatsapp',
         webhook_secret => 'meta-app-secret-7f3a9c2e5b');
SELECT revenue_engine.create_channel('oc_sms', 'https://api.sms.example.com/v1/messages',
         message_id_path => '{id}', enabled => false) > 0 AS created;
SELECT revenue_engine.set_channel_kind('oc_sms', 'sms', 'at_most_once');
SELECT name, kind, delivery FROM revenue_engine.channels_public WHERE name LIKE 'oc\_%' ORDER BY name;

-- Contacts, a campaign of two send steps around a wait, one enrollment per contact.
INSERT INTO revenue_engine.contacts (external_ref, phone, name)
SELECT 'c' || n, '+4915110000' || lpad(n::text, 3, '0'), 'Contact ' || n FROM generate_series(1, 12) n;
-- two contacts share a phone (one person known under two references)
INSERT INTO revenue_engine.contacts (external_ref, phone, name) VALUES ('c1b', '+4915110000001', 'Contact 1b');
-- Templates: one with a WhatsApp form, one without.
SELECT revenue_engine.create_template('welcome', 'Hi {{first_name|there}}, welcome!',
         whatsapp => '{"name": "welcome_v1", "language": "de", "params": ["{{first_name|there}}"]}');
SELECT revenue_engine.create_template('plain', 'Hi {{first_name|there}}, a tip.');
INSERT INTO revenue_engine.campaigns (name, channel_id, status)
SELECT 'drip_' || c.name, c.id, 'active' FROM revenue_engine.channels c
 WHERE c.tenant_id = 'outcomes' AND c.name IN ('oc_wa', 'oc_sms');
INSERT INTO revenue_engine.campaign_versions (campaign_id, version)
SELECT id, 1 FROM revenue_engine.campaigns WHERE tenant_id = 'outcomes';
INSERT INTO revenue_engine.campaign_steps (campaign_id, version, position, kind, template, delay_amount, delay_unit)
SELECT c.id, 1, s.position, s.kind, s.template, s.amount, s.unit
  FROM (SELECT * FROM revenue_engine.campaigns WHERE tenant_id = 'outcomes') c,
       (VALUES (1, 'send', 'welcome', NULL, NULL), (2, 'wait', NULL, 1, 'days'), (3, 'send', 'plain', NULL, NULL),
               (4, 'send', 'deleted_since', NULL, NULL))
       AS s(position, kind, template, amount, unit);
INSERT INTO revenue_engine.enrollments (campaign_id, contact_id, version, step, next_run_at)
SELECT g.id, k.id, 1, 3, now() + interval '1 day'
  FROM revenue_engine.campaigns g, revenue_engine.contacts k
 WHERE g.tenant_id = 'outcomes' AND k.tenant_id = 'outcomes';

-- The runner's part: step 1's send of a contact in a campaign, and its message.
CREATE FUNCTION oc_queue(p_campaign text, p_contact text, p_step integer DEFAULT 1)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    g revenue_engine.campaigns;
    e revenue_engine.enrollments;
    sid bigint;
BEGIN
    SELECT * INTO g FROM revenue_engine.campaigns WHERE tenant_id = 'outcomes' AND name = p_campaign;
    SELECT en.* INTO e FROM revenue_engine.enrollments en JOIN revenue_engine.contacts k
        ON k.tenant_id = en.tenant_id AND k.id = en.contact_id
     WHERE en.tenant_id = 'outcomes' AND en.campaign_id = g.id AND k.external_ref = p_contact;
    INSERT INTO revenue_engine.sends (channel_id, idempotency_key, payload, scheduled_for, next_attempt_at)
    VALUES (g.channel_id, format('campaign:%s:%s', e.id, p_step),
            jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'Welcome')),
            now(), now())
    RETURNING id INTO sid;
    INSERT INTO revenue_engine.campaign_messages
           (send_id, enrollment_id, campaign_id, version, step, contact_id, channel_id)
    VALUES (sid, e.id, g.id, 1, p_step, e.contact_id, g.channel_id);
    INSERT INTO revenue_engine.enrollment_history (enrollment_id, campaign_id, version, step, event, reason)
    VALUES (e.id, g.id, 1, p_step, 'sent', 'queued');
    RETURN sid;
END
$$;
-- The worker's part: claim, then the answer (2xx with a message id, or an error).
CREATE FUNCTION oc_sent(p_send bigint, p_message_id text, p_at timestamptz DEFAULT '2026-11-01 10:00+00')
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revenue_engine.sends SET status = 'sending', attempts = attempts + 1 WHERE id = p_send;
    UPDATE revenue_engine.sends
       SET status = 'sent', sent_at = p_at, provider_message_id = p_message_id, response_status = 200,
           response_body = jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('id', p_message_id)))::text
     WHERE id = p_send;
    RETURN (SELECT status FROM revenue_engine.campaign_messages WHERE tenant_id = 'outcomes' AND send_id = p_send);
END
$$;
CREATE FUNCTION oc_failed(p_send bigint, p_code integer, p_body text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revenue_engine.sends SET status = 'sending', attempts = attempts + 1 WHERE id = p_send;
    UPDATE revenue_engine.sends
       SET status = 'failed', response_status = p_code, response_body = p_body, last_error = 'HTTP ' || p_code
     WHERE id = p_send;
    RETURN (SELECT status FROM revenue_engine.campaign_messages WHERE tenant_id = 'outcomes' AND send_id = p_send);
END
$$;
-- A campaign message: status, id, stage times from T0, error.
CREATE FUNCTION oc_message(p_send bigint)
RETURNS TABLE (form text, status text, message_id text, sent interval, delivered interval,
               read interval, replied interval, failed boolean, error text)
LANGUAGE sql AS $$
  SELECT m.form, m.status, m.message_id, m.sent_at - t0, m.delivered_at - t0, m.read_at - t0,
         m.replied_at - t0, m.failed_at IS NOT NULL, m.error
    FROM revenue_engine.campaign_messages m, (SELECT timestamptz '2026-11-01 10:00+00' AS t0) c
   WHERE m.tenant_id = 'outcomes' AND m.send_id = p_send
$$;
-- The history a campaign's contact got from this test (after the runner's 'sent').
CREATE FUNCTION oc_history(p_campaign text, p_contact text)
RETURNS TABLE (step integer, event text, reason text, form text)
LANGUAGE sql AS $$
  SELECT h.step, h.event, h.reason, h.detail ->> 'form'
    FROM revenue_engine.enrollment_history h
    JOIN revenue_engine.enrollments e ON e.tenant_id = h.tenant_id AND e.id = h.enrollment_id
    JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
    JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
   WHERE h.tenant_id = 'outcomes' AND g.name = p_campaign AND k.external_ref = p_contact
   ORDER BY h.id
$$;
-- WhatsApp callbacks exactly as received, signed with the app secret.
CREATE FUNCTION oc_wa(p_value jsonb)
RETURNS TABLE (item integer, kind text, message_id text, status text, result text, reason text)
LANGUAGE sql AS $$
  SELECT w.* FROM (SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry',
                     jsonb_build_array(jsonb_build_object('id', '1', 'changes', jsonb_build_array(
                       jsonb_build_object('field', 'messages', 'value',
                         jsonb_build_object('messaging_product', 'whatsapp') || p_value)))))::text AS body) b,
         revenue_engine.ingest_status_webhook('oc_wa',
           jsonb_build_object('X-Hub-Signature-256',
                              'sha256=' || encode(hmac(b.body, 'meta-app-secret-7f3a9c2e5b', 'sha256'), 'hex')),
           b.body) w
$$;

-- ---------------------------------------------------------------------------
-- The send's outcome
-- ---------------------------------------------------------------------------
SELECT oc_queue('drip_oc_wa', 'c1') AS s1 \gset
SELECT * FROM oc_message(:s1);
SELECT oc_sent(:s1, 'wamid.A1');
SELECT * FROM oc_message(:s1);
-- the provider's answer is the runner's 'sent': no history of its own
SELECT * FROM oc_history('drip_oc_wa', 'c1');
-- A send that is not a campaign's does not fire the trigger (its WHEN)
SELECT revenue_engine.enqueue_send('oc_wa', '{"to": "+4915110000001"}', 'app:1') AS s0 \gset
UPDATE revenue_engine.sends SET status = 'sending' WHERE id = :s0;
UPDATE revenue_engine.sends SET status = 'failed', response_body = '{"error": {"code": 131050}}' WHERE id = :s0;
SELECT count(*) AS consents FROM revenue_engine.contact_consents WHERE tenant_id = 'outcomes';
-- A failed send: failed, with its error and a history row
SELECT oc_queue('drip_oc_wa', 'c2') AS s2 \gset
SELECT oc_failed(:s2, 400, '{"error": {"code": 131026, "message": "Message undeliverable"}}');
SELECT * FROM oc_message(:s2);
SELECT * FROM oc_history('drip_oc_wa', 'c2');

-- ---------------------------------------------------------------------------
-- Provider statuses: by message id, as for blast recipients
-- ---------------------------------------------------------------------------
SELECT revenue_engine.record_message_status('wamid.A1', 'delivered', '2026-11-01 10:01+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.A1', 'delivered', '2026-11-01 10:01+00', 'webhook');
-- read implies delivered; never backwards; failed after delivered is stale
SELECT revenue_engine.record_message_status('wamid.A1', 'read', '2026-11-01 10:05+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.A1', 'sent', '2026-11-01 10:06+00', 'webhook');
SELECT revenue_engine.record_message_status('wamid.A1', 'failed', '2026-11-01 10:07+00', 'webhook');
SELECT * FROM oc_message(:s1);
-- failed after sent is taken (providers report it so), with history
SELECT oc_queue('drip_oc_wa', 'c3') AS s3 \gset
SELECT oc_sent(:s3, 'wamid.A3');
SELECT revenue_engine.record_message_status('wamid.A3', 'failed', '2026-11-01 10:02+00', 'webhook',
         '{"errors": [{"code": 131026, "title": "Message undeliverable"}]}');
SELECT * FROM oc_message(:s3);
-- a delivered after failed moves it on (the provider delivered after all)
SELECT revenue_engine.record_message_status('wamid.A3', 'delivered', '2026-11-01 10:03+00', 'webhook');
SELECT * FROM oc_message(:s3);
SELECT * FROM oc_history('drip_oc_wa', 'c3');
-- A WhatsApp callback's statuses
SELECT oc_queue('drip_oc_wa', 'c4') AS s4 \gset
SELECT oc_sent(:s4, 'wamid.A4');
SELECT * FROM oc_wa('{"statuses": [
   {"id": "wamid.A4", "status": "delivered", "timestamp": "1793527320", "recipient_id": "4915110000004"},
   {"id": "wamid.A4", "status": "read", "timestamp": "1793527380", "recipient_id": "4915110000004"}]}');
SELECT * FROM oc_message(:s4);

-- A status that comes before the send's answer is parked, and applied when the id lands.
SELECT oc_queue('drip_oc_wa', 'c5') AS s5 \gset
SELECT revenue_engine.record_message_status('wamid.A5', 'delivered', '2026-11-01 10:02+00', 'webhook');
SELECT count(*) AS parked FROM revenue_engine.status_parked WHERE tenant_id = 'outcomes' AND message_id = 'wamid.A5';
SELECT oc_sent(:s5, 'wamid.A5');
SELECT count(*) AS parked FROM revenue_engine.status_parked WHERE tenant_id = 'outcomes' AND message_id = 'wamid.A5';
SELECT * FROM oc_message(:s5);

-- ---------------------------------------------------------------------------
-- Inbound messages: the sender's contacts, stop on reply, the message replied
-- ---------------------------------------------------------------------------
-- c1 (and c1b, the same phone) write back: c1's latest message is replied
SELECT revenue_engine.record_inbound_message('+49 151 10000001', '2026-11-01 11:00+00', 'webhook');
SELECT * FROM oc_message(:s1);
-- both contacts' enrollments (every campaign) stopped; the time noted on the
-- channel of the message answered (record_inbound_message names none)
SELECT k.external_ref, g.name, e.status, e.end_reason
  FROM revenue_engine.enrollments e
  JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
  JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
 WHERE k.tenant_id = 'outcomes' AND k.external_ref IN ('c1', 'c1b') ORDER BY 1, 2;
SELECT * FROM oc_history('drip_oc_wa', 'c1');
SELECT k.external_ref, c.name AS channel, i.last_inbound_at - '2026-11-01 10:00+00' AS last_inbound
  FROM revenue_engine.contact_inbound i
  JOIN revenue_engine.contacts k ON k.tenant_id = i.tenant_id AND k.id = i.contact_id
  JOIN revenue_engine.channels c ON c.tenant_id = i.tenant_id AND c.id = i.channel_id
 WHERE i.tenant_id = 'outcomes' ORDER BY 1;
-- A WhatsApp message answering c4's message (context), a reaction (not a
-- reply) to c5's, and an outbound copy (message_echoes: not read)
SELECT * FROM oc_wa('{"messages": [
   {"from": "4915110000004", "id": "wamid.IN4", "timestamp": "1793530800", "type": "text",
    "text": {"body": "Stop please"}, "context": {"from": "15550001111", "id": "wamid.A4"}},
   {"from": "4915110000005", "id": "wamid.IN5", "timestamp": "1793530800", "type": "reaction",
    "reaction": {"message_id": "wamid.A5", "emoji": "\ud83d\udc4d"}}],
  "message_echoes": [{"from": "15550001111", "to": "4915110000005", "id": "wamid.E5",
    "timestamp": "1793530800", "type": "text", "text": {"body": "hello"}}]}');
SELECT * FROM oc_message(:s4);
SELECT * FROM oc_message(:s5);
SELECT k.external_ref, g.name, e.status, e.end_reason
  FROM revenue_engine.enrollments e
  JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
  JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
 WHERE k.tenant_id = 'outcomes' AND k.external_ref IN ('c4', 'c5') ORDER BY 1, 2;
SELECT k.external_ref, c.name AS channel, i.last_inbound_at - '2026-11-01 10:00+00' AS last_inbound
  FROM revenue_engine.contact_inbound i
  JOIN revenue_engine.contacts k ON k.tenant_id = i.tenant_id AND k.id = i.contact_id
  JOIN revenue_engine.channels c ON c.tenant_id = i.tenant_id AND c.id = i.channel_id
 WHERE i.tenant_id = 'outcomes' ORDER BY 1;
-- a message answering another message (not a campaign's): c5's stays delivered
SELECT * FROM oc_wa('{"messages": [
   {"from": "4915110000005", "id": "wamid.IN5b", "timestamp": "1793530800", "type": "text",
    "text": {"body": "About my order"}, "context": {"from": "15550001111", "id": "wamid.OTHER"}}]}');
SELECT * FROM oc_message(:s5);
-- A generic provider's callback (Standard Webhooks): an outbound copy
-- ("direction": "outbound...") is no reply; the inbound message stops c9
SELECT revenue_engine.set_channel_status_source('oc_sms', webhook_kind => 'standard_webhooks',
         webhook_secret => 'whsec_' || encode(convert_to('revenue-engine-outcome-test-key!', 'UTF8'), 'base64'));
SELECT w.* FROM (SELECT '{"messages": [{"from": "+4915110000009", "id": "out-9", "direction": "outbound-api", "timestamp": 1793530800}, {"from": "+4915110000009", "id": "in-9", "direction": "inbound", "timestamp": 1793530860}]}'::text AS body) b,
       LATERAL revenue_engine.ingest_status_webhook('oc_sms',
         jsonb_build_object('webhook-id', 'msg_oc1', 'webhook-timestamp', '1795176000',
           'webhook-signature', 'v1,' || encode(hmac(convert_to('msg_oc1.1795176000.' || b.body, 'UTF8'),
                                                     convert_to('revenue-engine-outcome-test-key!', 'UTF8'), 'sha256'), 'base64')),
         b.body) w;
SELECT k.external_ref, g.name, e.status, e.end_reason
  FROM revenue_engine.enrollments e
  JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
  JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
 WHERE k.tenant_id = 'outcomes' AND k.external_ref = 'c9' ORDER BY 1, 2;
-- a phone with no contact and no message: nothing
SELECT revenue_engine.record_inbound_message('+4915119999999', '2026-11-01 11:00+00', 'webhook');

-- ---------------------------------------------------------------------------
-- WhatsApp errors
-- ---------------------------------------------------------------------------
-- 131049 (per-user marketing limit): the same send again in 24 hours; the
-- enrollment's next step waits for it
UPDATE revenue_engine.enrollments SET next_run_at = now() + interval '1 hour'
 WHERE contact_id = (SELECT id FROM revenue_engine.contacts WHERE tenant_id = 'outcomes' AND external_ref = 'c6')
   AND campaign_id = (SELECT id FROM revenue_engine.campaigns WHERE tenant_id = 'outcomes' AND name = 'drip_oc_wa');
SELECT oc_queue('drip_oc_wa', 'c6') AS s6 \gset
SELECT oc_failed(:s6, 400, '{"error": {"message": "(#131049) This message was not delivered to maintain healthy ecosystem engagement.", "type": "OAuthException", "code": 131049}}');
SELECT status, attempts, next_attempt_at - now() BETWEEN interval '23 hours 59 minutes' AND interval '24 hours' AS in_24h,
       provider_message_id
  FROM revenue_engine.sends WHERE id = :s6;
SELECT * FROM oc_message(:s6);
SELECT e.next_run_at - now() BETWEEN interval '23 hours 59 minutes' AND interval '24 hours' AS next_step_in_24h
  FROM revenue_engine.enrollments e
 WHERE e.contact_id = (SELECT id FROM revenue_engine.contacts WHERE tenant_id = 'outcomes' AND external_ref = 'c6')
   AND e.campaign_id = (SELECT id FROM revenue_engine.campaigns WHERE tenant_id = 'outcomes' AND name = 'drip_oc_wa');
SELECT * FROM oc_history('drip_oc_wa', 'c6');
-- three more: deferred twice more, then given up
SELECT oc_failed(:s6, 400, '{"error": {"code": 131049}}') FROM generate_series(1, 3);
SELECT step, event, reason FROM oc_history('drip_oc_wa', 'c6');
SELECT status FROM revenue_engine.sends WHERE id = :s6;
-- 131047 (24-hour window closed): the step's template in its WhatsApp
-- template form, as a new campaign message with a key of its own
SELECT oc_queue('drip_oc_wa', 'c10') AS s10 \gset
SELECT oc_failed(:s10, 400, '{"error": {"message": "(#131047) Re-engagement message", "code": 131047}}');
SELECT m.form, m.status, s.idempotency_key ~ '^campaign:[0-9]+:1:whatsapp_template$' AS key_ok,
       s.payload, m.template_version
  FROM revenue_engine.campaign_messages m JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id
 WHERE m.contact_id = (SELECT id FROM revenue_engine.contacts WHERE tenant_id = 'outcomes' AND external_ref = 'c10')
 ORDER BY m.send_id;
SELECT * FROM oc_history('drip_oc_wa', 'c10');
-- ... sent like any other; a 131047 of the template form itself is a failure
SELECT m.send_id AS s10t FROM revenue_engine.campaign_messages m
 WHERE m.contact_id = (SELECT id FROM revenue_engine.contacts WHERE tenant_id = 'outcomes' AND external_ref = 'c10') AND m.form = 'whatsapp_template' \gset
SELECT oc_failed(:s10t, 400, '{"error": {"code": 131047}}');
SELECT count(*) AS messages FROM revenue_engine.campaign_messages
 WHERE contact_id = (SELECT id FROM revenue_engine.contacts WHERE tenant_id = 'outcomes' AND external_ref = 'c10');
-- a step whose template has no WhatsApp form: failed, with the reason
SELECT oc_queue('drip_oc_wa', 'c11', 3) AS s11 \gset
SELECT oc_failed(:s11, 400, '{"error": {"code": 131047}}');
SELECT * FROM oc_history('drip_oc_wa', 'c11');
-- a template that cannot be rendered (it no longer exists): failed, with the reason
SELECT oc_queue('drip_oc_wa', 'c12', 4) AS s12 \gset
SELECT oc_failed(:s12, 400, '{"error": {"code": 131047}}');
SELECT step, event, reason FROM oc_history('drip_oc_wa', 'c12');
-- an enrollment that has ended (c4 replied): nothing is queued again
SELECT oc_queue('drip_oc_wa', 'c4', 3) AS s4b \gset
SELECT oc_failed(:s4b, 400, '{"error": {"code": 131047}}');
SELECT * FROM oc_history('drip_oc_wa', 'c4');
-- 131050 (the user stopped marketing): a marketing opt-out for whatsapp
SELECT oc_queue('drip_oc_wa', 'c7') AS s7 \gset
SELECT oc_failed(:s7, 400, '{"error": {"message": "(#131050) Unable to deliver the message.", "code": 131050}}');
SELECT * FROM oc_message(:s7);
SELECT k.external_ref, c.channel_kind, c.purpose, c.granted, c.source
  FROM revenue_engine.contact_consents c JOIN revenue_engine.contacts k ON k.tenant_id = c.tenant_id AND k.id = c.contact_id
 WHERE c.tenant_id = 'outcomes' ORDER BY k.external_ref;
SELECT * FROM oc_history('drip_oc_wa', 'c7');
SELECT g.name, e.status, e.end_reason FROM revenue_engine.enrollments e
  JOIN revenue_engine.campaigns g ON g.tenant_id = e.tenant_id AND g.id = e.campaign_id
 WHERE e.contact_id = (SELECT id FROM revenue_engine.contacts WHERE tenant_id = 'outcomes' AND external_ref = 'c7') ORDER BY 1;
-- the same code in a failed status callback of a message the provider had accepted
SELECT oc_queue('drip_oc_wa', 'c8') AS s8 \gset
SELECT oc_sent(:s8, 'wamid.A8');
SELECT * FROM oc_wa('{"statuses": [{"id": "wamid.A8", "status": "failed", "timestamp": "1793527320",
   "recipient_id": "4915110000008", "errors": [{"code": 131050, "title": "Unable to deliver the message"}]}]}');
SELECT * FROM oc_message(:s8);
SELECT k.external_ref, c.granted, c.source
  FROM revenue_engine.contact_consents c JOIN revenue_engine.contacts k ON k.tenant_id = c.tenant_id AND k.id = c.contact_id
 WHERE c.tenant_id = 'outcomes' ORDER BY k.external_ref;
-- the codes mean nothing on a channel that is not WhatsApp
SELECT oc_queue('drip_oc_sms', 'c9') AS s9 \gset
SELECT oc_failed(:s9, 400, '{"error": {"code": 131050}}');
SELECT count(*) AS consents FROM revenue_engine.contact_consents WHERE tenant_id = 'outcomes';

-- ---------------------------------------------------------------------------
-- At-most-once: an outcome lost in a crash is unknown, then reconciled
-- ---------------------------------------------------------------------------
-- (the worker's lease reclaim sets such a send unknown: TAP 050_campaign_at_most_once.pl)
SELECT oc_queue('drip_oc_sms', 'c6') AS u1 \gset
UPDATE revenue_engine.sends SET status = 'sending', attempts = 1 WHERE id = :u1;
UPDATE revenue_engine.sends
   SET status = 'unknown', last_error = 'the worker stopped during the attempt; at-most-once channel: not sent again'
 WHERE id = :u1;
SELECT * FROM oc_message(:u1);
SELECT * FROM oc_history('drip_oc_sms', 'c6');
-- a status naming the send's key (reference, or WhatsApp's biz_opaque_callback_data) settles it
SELECT format('campaign:%s:1', enrollment_id) AS ref FROM revenue_engine.campaign_messages WHERE tenant_id = 'outcomes' AND send_id = :u1 \gset
SELECT revenue_engine.record_message_status('sms-9001', 'delivered', '2026-11-01 10:04+00', 'webhook',
         jsonb_build_object('reference', :'ref'));
SELECT * FROM oc_message(:u1);
SELECT * FROM oc_history('drip_oc_sms', 'c6');
-- later statuses find it by its id
SELECT revenue_engine.record_message_status('sms-9001', 'read', '2026-11-01 10:05+00', 'webhook');
SELECT * FROM oc_message(:u1);
-- a key that is not a campaign's, or names a message with an id already: parked as before
SELECT revenue_engine.record_message_status('sms-9002', 'delivered', '2026-11-01 10:04+00', 'webhook',
         jsonb_build_object('reference', :'ref'));
SELECT revenue_engine.record_message_status('sms-9003', 'delivered', '2026-11-01 10:04+00', 'webhook',
         '{"reference": "order-17"}');

-- Nothing of this test is left due for the tests after it
-- (run_campaign_steps runs every tenant's due steps).
UPDATE revenue_engine.enrollments SET next_run_at = NULL WHERE tenant_id = 'outcomes' AND next_run_at IS NOT NULL;
RESET revenue_engine.tenant;
