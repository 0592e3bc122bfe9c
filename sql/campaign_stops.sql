-- Campaign stop conditions (issue 12, enroll part): an inbound reply
-- (campaign_stop_contact, as status ingestion calls it), an opt-out (consent
-- turned false), exit rules (an event with a matching and a non-matching
-- key), a manual exit_enrollment; each exits the enrollment with its reason
-- and cancels its queued sends.  And wait_event steps resumed by their event.
--
-- Campaigns, contacts and consents go through their functions; the runner's
-- part (its sends, a step reached) is written as rows here.  The channels are
-- disabled, so the delivery worker claims nothing.  The clock is
-- the setup's 2026-11-20 12:00 UTC.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';

SELECT revenue_engine.create_channel('cs_whatsapp', 'https://hooks.example.com/wa', enabled => false) > 0 AS whatsapp,
       revenue_engine.create_channel('cs_email', 'https://hooks.example.com/mail', enabled => false) > 0 AS email;
SELECT revenue_engine.set_channel_kind('cs_whatsapp', 'whatsapp'), revenue_engine.set_channel_kind('cs_email', 'email');

SELECT revenue_engine.create_template('cs_hello', 'Hello {{first_name|there}}') AS template_version;
SELECT revenue_engine.register_event_type('cs_conversion'), revenue_engine.register_event_type('cs_churned'),
       revenue_engine.register_event_type('cs_paid'), revenue_engine.register_event_type('cs_refund');

-- An active campaign through the definitions' functions (re-entry always).
CREATE FUNCTION cs_campaign(p_name text, p_channel text DEFAULT 'cs_whatsapp',
                            p_purpose text DEFAULT 'marketing', p_exit_rules jsonb DEFAULT '[]',
                            p_steps jsonb DEFAULT '[{"kind": "send", "template": "cs_hello"}]')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    cid bigint;
BEGIN
    cid := revenue_engine.create_campaign(p_name, p_channel, p_steps,
        jsonb_build_object('purpose', p_purpose, 'reentry', 'always', 'exit_rules', p_exit_rules));
    PERFORM revenue_engine.activate_campaign(p_name);
    RETURN cid;
END
$$;
CREATE FUNCTION cs_contact(p_ref text, p_user uuid DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
    SELECT revenue_engine.upsert_contact(p_ref, user_id => p_user)
$$;
-- The runner's part: the enrollment's step queued as a send and a campaign message.
CREATE FUNCTION cs_queue(p_enrollment bigint, p_send_status text DEFAULT 'queued')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    e  revenue_engine.enrollments;
    ch bigint;
    sid bigint;
BEGIN
    SELECT * INTO e FROM revenue_engine.enrollments WHERE id = p_enrollment;
    SELECT channel_id INTO ch FROM revenue_engine.campaigns WHERE id = e.campaign_id;
    INSERT INTO revenue_engine.sends (channel_id, idempotency_key, payload, status)
    VALUES (ch, 'campaign:' || e.id || ':' || e.step, '{"text": "hello"}', p_send_status)
    RETURNING id INTO sid;
    INSERT INTO revenue_engine.campaign_messages (send_id, enrollment_id, campaign_id, version, step,
                                                  contact_id, channel_id)
    VALUES (sid, e.id, e.campaign_id, e.version, e.step, e.contact_id, ch);
    RETURN sid;
END
$$;
CREATE FUNCTION cs_enrollments(p_ref text)
RETURNS TABLE (campaign text, status text, step integer, due interval, end_reason text)
LANGUAGE sql AS $$
    SELECT c.name, e.status, e.step, e.next_run_at - revenue_engine.clock_now(), e.end_reason
      FROM revenue_engine.enrollments e
      JOIN revenue_engine.campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
      JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
     WHERE k.external_ref = p_ref
     ORDER BY c.name, e.entry
$$;
CREATE FUNCTION cs_history(p_ref text)
RETURNS TABLE (campaign text, step integer, event text, reason text, send_cancelled boolean)
LANGUAGE sql AS $$
    SELECT c.name, h.step, h.event, h.reason,
           CASE WHEN h.detail ? 'send_id' THEN (SELECT s.status = 'cancelled' FROM revenue_engine.sends s
                                                 WHERE s.id = (h.detail->>'send_id')::bigint) END
      FROM revenue_engine.enrollment_history h
      JOIN revenue_engine.enrollments e ON e.tenant_id = h.tenant_id AND e.id = h.enrollment_id
      JOIN revenue_engine.campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
      JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
     WHERE k.external_ref = p_ref
     ORDER BY h.id
$$;
CREATE FUNCTION cs_messages(p_ref text)
RETURNS TABLE (campaign text, step integer, message text, send text)
LANGUAGE sql AS $$
    SELECT c.name, m.step, m.status, s.status
      FROM revenue_engine.campaign_messages m
      JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id
      JOIN revenue_engine.campaigns c ON c.tenant_id = m.tenant_id AND c.id = m.campaign_id
      JOIN revenue_engine.contacts k ON k.tenant_id = m.tenant_id AND k.id = m.contact_id
     WHERE k.external_ref = p_ref
     ORDER BY c.name, m.step
$$;

SELECT cs_campaign('cs_drip') > 0 AS drip,
       cs_campaign('cs_news') > 0 AS news,
       cs_campaign('cs_receipts', p_purpose => 'transactional') > 0 AS receipts,
       cs_campaign('cs_mail', p_channel => 'cs_email') > 0 AS mail;

-- Reply: every open enrollment of the contact stops; a queued send is
-- cancelled with its message, a send the delivery worker already claimed
-- (sending) is not (it was claimed before the stop committed).
SELECT cs_contact('cs_ann') AS cs_ann \gset
SELECT cs_queue(revenue_engine.enroll('cs_drip', 'cs_ann')) > 0 AS queued;
SELECT cs_queue(revenue_engine.enroll('cs_news', 'cs_ann'), 'sending') > 0 AS claimed;
SELECT revenue_engine.enroll('cs_mail', 'cs_ann') > 0 AS enrolled;
SELECT revenue_engine.campaign_stop_contact('default', :cs_ann, 'replied') AS stopped;
SELECT * FROM cs_enrollments('cs_ann');
SELECT * FROM cs_messages('cs_ann');
SELECT * FROM cs_history('cs_ann');
-- nothing open any more
SELECT revenue_engine.campaign_stop_contact('default', :cs_ann, 'replied') AS stopped_again;
DO $$ BEGIN
    PERFORM revenue_engine.campaign_stop_contact('default', NULL, 'replied');
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%: %', SQLSTATE, SQLERRM;
END $$;

-- Reply on one channel kind only (outcomes may stop by the channel's kind).
SELECT cs_contact('cs_ben') AS cs_ben \gset
SELECT revenue_engine.enroll('cs_drip', 'cs_ben') > 0 AS drip, revenue_engine.enroll('cs_mail', 'cs_ben') > 0 AS mail;
SELECT revenue_engine.campaign_stop_contact('default', :cs_ben, 'replied', 'email') AS stopped;
SELECT * FROM cs_enrollments('cs_ben');

-- Opt-out: marketing consent for WhatsApp recorded false stops the marketing
-- campaigns on WhatsApp channels only: not the transactional one, not e-mail.
SELECT cs_contact('cs_bob') AS cs_bob \gset
SELECT cs_queue(revenue_engine.enroll('cs_drip', 'cs_bob')) > 0 AS drip,
       cs_queue(revenue_engine.enroll('cs_receipts', 'cs_bob')) > 0 AS receipts,
       revenue_engine.enroll('cs_mail', 'cs_bob') > 0 AS mail;
SELECT revenue_engine.set_consent('cs_bob', 'whatsapp', 'marketing', true) AS changed;
SELECT count(*) FILTER (WHERE status = 'active') AS open_after_grant FROM cs_enrollments('cs_bob');
SELECT revenue_engine.set_consent('cs_bob', 'whatsapp', 'marketing', false) AS changed;
SELECT * FROM cs_enrollments('cs_bob');
SELECT * FROM cs_messages('cs_bob');
-- granted again, and false again: nothing more to stop
SELECT revenue_engine.set_consent('cs_bob', 'whatsapp', 'marketing', true) AS changed;
SELECT revenue_engine.set_consent('cs_bob', 'whatsapp', 'marketing', false) AS changed;
-- a first consent row recorded as false (e-mail marketing) stops too
SELECT revenue_engine.set_consent('cs_bob', 'email', 'marketing', false) AS changed;
SELECT * FROM cs_enrollments('cs_bob');
SELECT campaign, step, event, reason FROM cs_history('cs_bob') WHERE event <> 'enrolled';

-- Exit rules: a conversion of the same membership stops the enrollment;
-- another membership's does not.  A rule without match_key: any such event.
-- They apply while the campaign is paused too.
SELECT cs_campaign('cs_trial', p_exit_rules => '[{"event_type": "cs_conversion", "match_key": "membership_id"},
                                                 {"event_type": "cs_churned"}]') > 0 AS trial;
SELECT cs_contact('cs_cat', u(9201)) > 0 AS cat, cs_contact('cs_cal', u(9202)) > 0 AS cal;
SELECT cs_queue(revenue_engine.enroll('cs_trial', 'cs_cat', '{"membership_id": "m1"}')) > 0 AS cat_in,
       revenue_engine.enroll('cs_trial', 'cs_cal', '{"membership_id": "m5"}') > 0 AS cal_in;
SELECT revenue_engine.enqueue_event(u(9201), 'cs_conversion', '{"membership_id": "m2"}') IS NOT NULL AS other_membership;
SELECT revenue_engine.enqueue_event(u(9201), 'cs_conversion', '{}') IS NOT NULL AS no_membership;
SELECT * FROM cs_enrollments('cs_cat');
SELECT revenue_engine.enqueue_event(u(9201), 'cs_conversion', '{"membership_id": "m1"}') IS NOT NULL AS same_membership;
SELECT * FROM cs_enrollments('cs_cat');
SELECT * FROM cs_messages('cs_cat');
SELECT campaign, step, event, reason FROM cs_history('cs_cat');
SELECT revenue_engine.pause_campaign('cs_trial');
SELECT revenue_engine.enqueue_event(u(9202), 'cs_churned', '{"membership_id": "m9"}') IS NOT NULL AS churned;
SELECT * FROM cs_enrollments('cs_cal');
SELECT revenue_engine.activate_campaign('cs_trial');

-- Manual: exit_enrollment stops and cancels; a second time there is nothing to stop.
SELECT cs_contact('cs_dot') > 0 AS dot;
SELECT cs_queue(revenue_engine.enroll('cs_drip', 'cs_dot')) > 0 AS queued;
SELECT revenue_engine.exit_enrollment('cs_drip', 'cs_dot') AS exited;
SELECT revenue_engine.exit_enrollment('cs_drip', 'cs_dot') AS exited_again;
SELECT * FROM cs_enrollments('cs_dot');
SELECT * FROM cs_messages('cs_dot');
-- stopping in a transaction that rolls back leaves it running and its send queued
SELECT cs_queue(revenue_engine.enroll('cs_news', 'cs_dot')) > 0 AS queued;
BEGIN;
SELECT revenue_engine.exit_enrollment('cs_news', 'cs_dot') AS exited;
ROLLBACK;
SELECT * FROM cs_enrollments('cs_dot') WHERE campaign = 'cs_news';
SELECT * FROM cs_messages('cs_dot') WHERE campaign = 'cs_news';

-- wait_event: an enrollment waiting at step 2 for cs_paid of its membership
-- (the runner set next_run_at to the timeout, 3 days) moves on to step 3,
-- due now, when the event comes; another membership's event changes nothing.
SELECT cs_campaign('cs_dunning', p_steps => '[{"kind": "send", "template": "cs_hello"},
    {"kind": "wait_event", "event_type": "cs_paid", "match_key": "membership_id",
     "timeout": "3 days", "timeout_action": "continue"},
    {"kind": "send", "template": "cs_hello"}]') > 0 AS dunning;
SELECT cs_campaign('cs_other_wait', p_steps => '[{"kind": "wait_event", "event_type": "cs_refund", "timeout": "none"}]') > 0 AS other;
SELECT cs_contact('cs_eve', u(9203)) > 0 AS eve;
SELECT revenue_engine.enroll('cs_dunning', 'cs_eve', '{"membership_id": "m7"}') AS dunning_enrollment \gset
SELECT revenue_engine.enroll('cs_other_wait', 'cs_eve') > 0 AS other_in;
-- the runner's part: step 1 sent, waiting at step 2 until the timeout
UPDATE revenue_engine.enrollments e
   SET step = 2, next_run_at = revenue_engine.clock_now() + interval '3 days'
 WHERE e.id = :dunning_enrollment;
SELECT * FROM cs_enrollments('cs_eve');
SELECT revenue_engine.enqueue_event(u(9203), 'cs_paid', '{"membership_id": "m8"}') IS NOT NULL AS other_membership;
SELECT * FROM cs_enrollments('cs_eve');
SELECT revenue_engine.enqueue_event(u(9203), 'cs_paid', '{"membership_id": "m7", "amount": 10}') IS NOT NULL AS paid;
SELECT * FROM cs_enrollments('cs_eve');
SELECT campaign, step, event, reason FROM cs_history('cs_eve');
-- paid again: step 3 is no wait, nothing changes
SELECT revenue_engine.enqueue_event(u(9203), 'cs_paid', '{"membership_id": "m7"}') IS NOT NULL AS paid_again;
SELECT * FROM cs_enrollments('cs_eve');

-- Nothing of this file stays running for the files after it, and no
-- campaign of it remains (history rows are append-only and stay).
SELECT revenue_engine.campaign_stop_enrollments('default', array_agg(e.id), 'test over') >= 0 AS stopped
  FROM revenue_engine.enrollments e JOIN revenue_engine.campaigns c ON c.id = e.campaign_id
 WHERE c.name LIKE 'cs\_%' AND e.status = 'active';
DELETE FROM revenue_engine.campaigns WHERE name LIKE 'cs\_%';
