-- revenue_engine demo, part 3: a drip campaign triggered by a usage milestone.
-- A contact linked to an app user reaches her 10th reply; the milestone's
-- outbox event enrolls her in the same transaction, the delivery worker runs
-- the first step and sends a WhatsApp template to the fake provider, her
-- reply stops the campaign.  Real time (no clock override): the worker runs
-- the steps as in production.  Uses part 2's "whatsapp" channel.
\set QUIET on
\pset footer off
\set user '''6f1c2a4e-0000-4000-8000-000000000002'''
-- the WhatsApp app secret part 2 set on the channel's status source
\set app_secret 'demo-app-secret-0123456789'
CREATE EXTENSION IF NOT EXISTS pgcrypto;

\echo '\n-- Maya uses the app (9 replies so far); she is also a contact: linked to her user id,'
\echo '-- in Kuala Lumpur, and she agreed to marketing messages on WhatsApp.'
SELECT user_id, timezone FROM revenue_engine.set_user_profile(:user, timezone => 'Asia/Kuala_Lumpur');
SELECT r->'lifetime_total' AS replies, r->'milestones' AS milestones
  FROM revenue_engine.track_daily_usage(:user, 'reply', 9) r;
SELECT revenue_engine.upsert_contact('maya', phone => '+60 12-345 6709', name => 'Maya Tan',
         timezone => 'Asia/Kuala_Lumpur', user_id => :user, source => 'signup') \gset
SELECT revenue_engine.set_consent('maya', 'whatsapp', 'marketing', true, source => 'signup form') \gset
SELECT external_ref, user_id, phone, name, timezone FROM revenue_engine.contacts;

\echo '\n-- Templates: a WhatsApp template form with {{first_name|there}} and {{milestone_value}} (no default:'
\echo '-- required), and a fallback for when the milestone is missing.'
SELECT revenue_engine.create_template('keep_going', 'Hi {{first_name|there}}, you are on a roll!',
         whatsapp => '{"name": "keep_going", "language": "en_US", "params": ["{{first_name|there}}"]}') \gset
SELECT revenue_engine.create_template('milestone_congrats',
         'Hi {{first_name|there}}, that is {{milestone_value}} replies already!',
         cta_url  => 'https://example.com/tips?ref={{external_ref}}',
         whatsapp => '{"name": "milestone_congrats", "language": "en_US",
                       "params": ["{{first_name|there}}", "{{milestone_value}}"]}',
         fallback => 'keep_going') \gset
SELECT revenue_engine.create_template('pro_tips', 'Hi {{first_name|there}}, 3 tips to reply faster',
         whatsapp => '{"name": "pro_tips", "language": "en_US", "params": ["{{first_name|there}}"]}') \gset
SELECT t.name AS template, v.version, v.required, v.fallback
  FROM revenue_engine.templates t JOIN revenue_engine.template_versions v ON v.template_id = t.id ORDER BY t.id;
\echo '-- What Maya would get, with the milestone in the context and without it:'
SELECT ctx AS context, r->>'template' AS rendered, r->'whatsapp'->'params' AS params,
       r->'fallback_used' AS fallback_used, r->>'reason' AS reason
  FROM (VALUES ('{"event_data": {"milestone_value": 10}}'::jsonb), ('{}')) AS c(ctx),
       revenue_engine.render_template('milestone_congrats', 'maya', c.ctx, 'whatsapp_template') r;

\echo '\n-- The campaign: triggered by the milestone_reached outbox event; send, wait a day, send.'
SELECT revenue_engine.set_channel_kind('whatsapp', 'whatsapp') \gset
SELECT revenue_engine.create_campaign('milestone_nudge', 'whatsapp',
         steps    => '[{"kind": "send", "template": "milestone_congrats"},
                       {"kind": "wait", "amount": 1, "unit": "days"},
                       {"kind": "send", "template": "pro_tips"}]',
         settings => '{"purpose": "marketing", "trigger": {"kind": "event", "value": "milestone_reached"},
                       "reentry": "never"}') \gset
SELECT revenue_engine.activate_campaign('milestone_nudge') \gset
SELECT name, status, version, trigger_kind, trigger_value, purpose, reentry FROM revenue_engine.campaigns;

\echo '\n-- Her 10th reply, in a transaction the application rolls back: the enrollment was there'
\echo '-- inside it, and is gone with it.'
BEGIN;
SELECT r->'lifetime_total' AS replies, r->'milestones' AS milestones
  FROM revenue_engine.track_daily_usage(:user, 'reply') r;
SELECT e.id AS enrollment, c.name AS campaign, e.trigger_kind, e.context->'milestone_value' AS milestone,
       e.status, e.step, e.next_run_at <= now() AS due_now
  FROM revenue_engine.enrollments e JOIN revenue_engine.campaigns c ON c.id = e.campaign_id;
ROLLBACK;
SELECT count(*) AS enrollments_after_rollback FROM revenue_engine.enrollments;

\echo '\n-- The same call, committed: enrolled in the same transaction, and the worker, woken at the'
\echo '-- commit, runs step 1 at once (zero delay) and sends it to the fake provider.'
SELECT r->'lifetime_total' AS replies, r->'milestones' AS milestones
  FROM revenue_engine.track_daily_usage(:user, 'reply') r;
DO $$
BEGIN
    FOR i IN 1 .. 100 LOOP
        EXIT WHEN EXISTS (SELECT FROM revenue_engine.campaign_messages WHERE status <> 'queued');
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT m.step, m.form, t.name AS template, m.template_version AS version, m.fallback_used,
       m.status, m.message_id, round(extract(epoch FROM m.sent_at - e.enrolled_at) * 1000) AS ms_from_usage_call
  FROM revenue_engine.campaign_messages m
  JOIN revenue_engine.enrollments e ON e.id = m.enrollment_id
  JOIN revenue_engine.templates t ON t.id = m.template_id;
\echo '-- Step 2 (wait 1 day) ran too: step 3 is due tomorrow at the same local time.'
SELECT e.status, e.step AS next_step, date_trunc('second', e.next_run_at AT TIME ZONE 'Asia/Kuala_Lumpur') AS next_run_local,
       date_trunc('second', e.next_run_at - now()) AS in
  FROM revenue_engine.enrollments e;
\echo '-- The due queue: one active enrollment, nothing due now (the worker keeps up).'
SELECT active, due_now, oldest_due_at, lag FROM revenue_engine.due_queue;

\echo '\n-- What the fake provider received (outside the 24-hour window: the WhatsApp template form):'
SELECT r->>'path' AS path, jsonb_pretty((r->>'body')::jsonb) AS body
  FROM regexp_split_to_table(pg_read_file(:'provider_log'), E'\n') AS l,
       LATERAL (SELECT l::jsonb AS r) x
 WHERE l <> '' AND r->>'provider_id' IN (SELECT message_id FROM revenue_engine.campaign_messages);

\echo '\n-- The provider calls back, signed: delivered, read, and Maya replies to the message.'
CREATE TEMP TABLE cb AS
SELECT jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
         jsonb_build_object('id', '1029384756', 'changes', jsonb_build_array(jsonb_build_object(
           'field', 'messages',
           'value', jsonb_build_object(
             'messaging_product', 'whatsapp',
             'metadata', jsonb_build_object('display_phone_number', '60300000000', 'phone_number_id', '1122334455'),
             'statuses', (SELECT jsonb_agg(jsonb_build_object(
                            'id', m.message_id, 'status', s.status,
                            'timestamp', extract(epoch FROM now())::bigint::text,
                            'recipient_id', '60123456709') ORDER BY s.ord)
                            FROM revenue_engine.campaign_messages m,
                                 (VALUES (1, 'delivered'), (2, 'read')) AS s(ord, status)),
             'messages', jsonb_build_array(jsonb_build_object(
                            'from', '60123456709', 'id', 'wamid.inbound9', 'type', 'text',
                            'timestamp', extract(epoch FROM now())::bigint::text,
                            'context', jsonb_build_object('from', '60300000000',
                                         'id', (SELECT message_id FROM revenue_engine.campaign_messages)),
                            'text', jsonb_build_object('body', 'Thanks! What else can it do?')))))))))::text AS body;
SELECT item, kind, status, result, reason
  FROM cb, revenue_engine.ingest_status_webhook('whatsapp',
         jsonb_build_object('X-Hub-Signature-256', 'sha256=' || encode(hmac(cb.body, :'app_secret', 'sha256'), 'hex')),
         cb.body);

\echo '\n-- Omar gets SMS tips, enrolled by hand; the SMS provider is down (nothing listens on its port):'
\echo '-- the send failed its first attempt and is queued for a retry in 5 minutes.'
SELECT revenue_engine.create_channel('sms', :'sms_provider', retry_schedule => '{5 minutes}') \gset
SELECT revenue_engine.set_channel_kind('sms', 'sms') \gset
SELECT revenue_engine.create_campaign('sms_tips', 'sms',
         steps => '[{"kind": "send", "template": "pro_tips"}, {"kind": "wait", "amount": 2, "unit": "days"},
                    {"kind": "send", "template": "keep_going"}]') \gset
SELECT revenue_engine.activate_campaign('sms_tips') \gset
SELECT revenue_engine.upsert_contact('omar', phone => '+44 7700 900123', name => 'Omar Hakim',
         timezone => 'Europe/London') \gset
SELECT revenue_engine.set_consent('omar', 'sms', 'marketing', true, source => 'checkout') \gset
SELECT revenue_engine.enroll('sms_tips', 'omar') AS enrollment;
DO $$
BEGIN
    FOR i IN 1 .. 100 LOOP
        EXIT WHEN EXISTS (SELECT FROM revenue_engine.sends s JOIN revenue_engine.channels c ON c.id = s.channel_id
                           WHERE c.name = 'sms' AND s.attempts > 0 AND s.status <> 'sending');
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT s.id AS send, s.status, s.attempts, date_trunc('second', s.next_attempt_at - now()) AS retry_in,
       s.last_error, s.payload
  FROM revenue_engine.sends s JOIN revenue_engine.channels c ON c.id = s.channel_id WHERE c.name = 'sms';
\echo '-- Omar texts STOP: his consent is withdrawn, which stops his enrollment and cancels the queued send.'
SELECT revenue_engine.set_consent('omar', 'sms', 'marketing', false, source => 'STOP keyword') \gset
SELECT s.id AS send, s.status, s.attempts
  FROM revenue_engine.sends s JOIN revenue_engine.channels c ON c.id = s.channel_id WHERE c.name = 'sms';

\echo '\n-- The reply and the opt-out stopped the enrollments: no step will run. Every transition, with its reason:'
SELECT c.name AS campaign, k.external_ref AS contact, e.status, e.end_reason, e.step, e.next_run_at
  FROM revenue_engine.enrollments e JOIN revenue_engine.contacts k ON k.id = e.contact_id
  JOIN revenue_engine.campaigns c ON c.id = e.campaign_id ORDER BY e.id;
SELECT k.external_ref AS contact, h.step, h.event, h.reason, h.detail
  FROM revenue_engine.enrollment_history h
  JOIN revenue_engine.enrollments e ON e.id = h.enrollment_id
  JOIN revenue_engine.contacts k ON k.id = e.contact_id
 ORDER BY h.id;
SELECT k.external_ref AS contact, m.step, m.status, m.message_id, m.delivered_at IS NOT NULL AS delivered,
       m.read_at IS NOT NULL AS read, m.replied_at IS NOT NULL AS replied
  FROM revenue_engine.campaign_messages m JOIN revenue_engine.contacts k ON k.id = m.contact_id ORDER BY m.send_id;

\echo '\n-- Funnels and queue, read from counters (no scan):'
SELECT campaign, version, enrolled, active, sent, delivered, read, replied, exited, completed, cancelled
  FROM revenue_engine.campaign_funnel ORDER BY campaign;
SELECT campaign, step, kind, template, sent, delivered, read, replied, cancelled, skipped, deferred
  FROM revenue_engine.step_funnel ORDER BY campaign, step;
SELECT template, version, sent, read, replied, fallback FROM revenue_engine.template_stats ORDER BY template;
SELECT active, due_now, oldest_due_at, lag FROM revenue_engine.due_queue;
