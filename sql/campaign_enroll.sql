-- Campaign enrollment (issue 12, enroll part): enroll(), each trigger
-- (contact created, tag added, an outbox event, blast follow-ups), the
-- re-entry policies, and bad input leaving nothing behind.
--
-- Campaigns, contacts and tags are written through their functions
-- (create_campaign, upsert_contact ...); nothing is sent: the runner is not
-- part of this test.  The clock is the setup's 2026-11-20 12:00 UTC (T0), moved with
-- revenue_engine.clock_override where a test needs another instant.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';

SELECT revenue_engine.create_channel('ce_channel', 'https://hooks.example.com/ce', enabled => false) > 0 AS channel;

SELECT revenue_engine.create_template('ce_hello', 'Hello {{first_name|there}}') AS template_version;

-- A campaign through the definitions' functions: one send step, the trigger,
-- re-entry and exit rules given, left draft, active or paused.
CREATE FUNCTION ce_campaign(p_name text, p_kind text, p_value text DEFAULT NULL,
                            p_reentry text DEFAULT 'never', p_cooldown interval DEFAULT NULL,
                            p_status text DEFAULT 'active', p_exit_rules jsonb DEFAULT '[]',
                            p_after interval DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    cid bigint;
BEGIN
    cid := revenue_engine.create_campaign(p_name, 'ce_channel', '[{"kind": "send", "template": "ce_hello"}]',
        jsonb_build_object(
            'trigger', jsonb_strip_nulls(jsonb_build_object('kind', p_kind, 'value', p_value,
                                                            'after', p_after::text)),
            'reentry', CASE WHEN p_reentry = 'cooldown' THEN jsonb_build_object('cooldown', p_cooldown::text)
                            ELSE to_jsonb(p_reentry) END,
            'exit_rules', p_exit_rules));
    IF p_status IN ('active', 'paused') THEN
        PERFORM revenue_engine.activate_campaign(p_name);
    END IF;
    IF p_status = 'paused' THEN
        PERFORM revenue_engine.pause_campaign(p_name);
    END IF;
    RETURN cid;
END
$$;
CREATE FUNCTION ce_contact(p_ref text, p_user uuid DEFAULT NULL, p_phone text DEFAULT NULL,
                           p_tags text[] DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
    SELECT revenue_engine.upsert_contact(p_ref, phone => p_phone, tags => p_tags, user_id => p_user)
$$;
-- A contact's enrollments: times as offsets from the clock's instant.
CREATE FUNCTION ce_enrollments(p_ref text)
RETURNS TABLE (campaign text, entry integer, status text, step integer, due interval,
               trigger_kind text, entry_key text, end_reason text, context jsonb)
LANGUAGE sql AS $$
    SELECT c.name, e.entry, e.status, e.step, e.next_run_at - revenue_engine.clock_now(),
           e.trigger_kind, e.entry_key, e.end_reason, e.context - 'event_id'
      FROM revenue_engine.enrollments e
      JOIN revenue_engine.campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
      JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
     WHERE k.external_ref = p_ref
     ORDER BY c.name, e.entry
$$;
CREATE FUNCTION ce_history(p_ref text)
RETURNS TABLE (campaign text, entry integer, step integer, event text, reason text)
LANGUAGE sql AS $$
    SELECT c.name, e.entry, h.step, h.event, h.reason
      FROM revenue_engine.enrollment_history h
      JOIN revenue_engine.enrollments e ON e.tenant_id = h.tenant_id AND e.id = h.enrollment_id
      JOIN revenue_engine.campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
      JOIN revenue_engine.contacts k ON k.tenant_id = e.tenant_id AND k.id = e.contact_id
     WHERE k.external_ref = p_ref
     ORDER BY h.id
$$;
-- A statement's error as its SQLSTATE and message.
CREATE FUNCTION ce_try(p_sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE p_sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
CREATE VIEW ce_counts AS
    SELECT (SELECT count(*) FROM revenue_engine.enrollments e JOIN revenue_engine.campaigns c ON c.id = e.campaign_id
             WHERE c.name LIKE 'ce\_%') AS enrollments,
           (SELECT count(*) FROM revenue_engine.enrollment_history h JOIN revenue_engine.campaigns c ON c.id = h.campaign_id
             WHERE c.name LIKE 'ce\_%') AS history;

-- enroll(): a manual campaign, zero delay (due now) and a later start.
SELECT ce_campaign('ce_manual', 'manual') > 0 AS created;
SELECT ce_contact('ann') > 0 AS ann, ce_contact('bob') > 0 AS bob;
SELECT revenue_engine.enroll('ce_manual', 'ann', '{"plan": "pro"}') AS ann_enrollment \gset
SELECT :ann_enrollment > 0 AS enrolled;
-- already in: the open enrollment, no second row
SELECT revenue_engine.enroll('ce_manual', 'ann') = :ann_enrollment AS same_enrollment;
SELECT revenue_engine.enroll('ce_manual', 'bob', '{}', '2026-11-22 09:00+00') > 0 AS bob_later;
-- a start in the past is now
SELECT * FROM ce_enrollments('ann');
SELECT * FROM ce_enrollments('bob');
SELECT * FROM ce_history('ann');

-- Bad input: a clear error, nothing written.
SELECT * FROM ce_counts;
SELECT ce_campaign('ce_draft', 'manual', p_status => 'draft') > 0 AS draft;
SELECT ce_campaign('ce_paused', 'manual', p_status => 'paused') > 0 AS paused;
SELECT ce_try($$SELECT revenue_engine.enroll('ce_nope', 'ann')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_manual', 'nobody')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_draft', 'ann')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_paused', 'ann')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_manual', 'ann', '[1, 2]')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_manual', 'ann', '"text"')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_manual', 'ann', NULL)$$);
SELECT ce_try($$SELECT revenue_engine.enroll(NULL, 'ann')$$);
SELECT ce_try($$SELECT revenue_engine.enroll('ce_manual', 'bob', '{}', 'infinity')$$);
SELECT ce_try($$SELECT revenue_engine.exit_enrollment('ce_nope', 'ann')$$);
SELECT ce_try($$SELECT revenue_engine.exit_enrollment('ce_manual', 'nobody')$$);
SELECT ce_try($$SELECT revenue_engine.exit_enrollment('ce_manual', 'ann', NULL)$$);
SELECT * FROM ce_counts;

-- Re-entry never: after the first entry ended, refused (NULL), with a
-- 'refused' history row on the entry that blocks.
SELECT revenue_engine.exit_enrollment('ce_manual', 'ann', 'test over') AS exited;
SELECT revenue_engine.enroll('ce_manual', 'ann') IS NULL AS refused;
SELECT * FROM ce_enrollments('ann');
SELECT * FROM ce_history('ann');

-- Re-entry always: a new entry as soon as the last one ended.
SELECT ce_campaign('ce_always', 'manual', p_reentry => 'always') > 0 AS created;
SELECT revenue_engine.enroll('ce_always', 'ann') AS first \gset
SELECT revenue_engine.enroll('ce_always', 'ann') = :first AS still_open;
SELECT revenue_engine.exit_enrollment('ce_always', 'ann');
SELECT revenue_engine.enroll('ce_always', 'ann') <> :first AS second_entry;
SELECT campaign, entry, status, end_reason FROM ce_enrollments('ann') WHERE campaign = 'ce_always';

-- The application's role: its own tenant's campaigns only; the tenant form.
SET ROLE revenue_engine_user;
SET revenue_engine.tenant = 'ce_elsewhere';
SELECT ce_try($$SELECT revenue_engine.enroll('ce_always', 'bob')$$);
SELECT ce_try($$SELECT revenue_engine.exit_enrollment('ce_always', 'ann')$$);
SELECT ce_try($$SELECT count(*) FROM revenue_engine.enrollments$$);
SELECT revenue_engine.enroll('default', 'ce_always', 'bob', '{}', NULL) > 0 AS tenant_form;
RESET revenue_engine.tenant;
SELECT revenue_engine.exit_enrollment('ce_always', 'bob', 'app') AS app_exit;
RESET ROLE;
SELECT campaign, entry, status, end_reason FROM ce_enrollments('bob') WHERE campaign = 'ce_always';

-- Re-entry after a cool-down of 30 days, measured from the end of the last
-- entry (T0): refused until T0 + 30 days, allowed from then on.
SELECT ce_campaign('ce_cooldown', 'manual', p_reentry => 'cooldown', p_cooldown => '30 days') > 0 AS created;
SELECT revenue_engine.enroll('ce_cooldown', 'bob') > 0 AS enrolled;
SELECT revenue_engine.exit_enrollment('ce_cooldown', 'bob', 'converted');
SET revenue_engine.clock_override = '2026-12-20 11:59:59+00';
SELECT revenue_engine.enroll('ce_cooldown', 'bob') IS NULL AS refused_one_second_early;
SET revenue_engine.clock_override = '2026-12-20 12:00:00+00';
SELECT revenue_engine.enroll('ce_cooldown', 'bob') > 0 AS allowed_at_the_end;
SELECT campaign, entry, status, due, end_reason FROM ce_enrollments('bob') WHERE campaign = 'ce_cooldown';
SELECT step, event, reason FROM ce_history('bob') WHERE campaign = 'ce_cooldown';
RESET revenue_engine.clock_override;

-- Trigger: contact created.  Tag added: at creation, and later (new tags
-- minus old; re-adding or keeping a tag enrolls nothing).
SELECT ce_campaign('ce_welcome', 'contact_created') > 0 AS created;
SELECT ce_campaign('ce_trial', 'tag_added', 'trial') > 0 AS created;
SELECT ce_campaign('ce_vip', 'tag_added', 'vip', p_reentry => 'always') > 0 AS created;
SELECT ce_contact('cat', p_tags => '{trial}') > 0 AS cat;
SELECT campaign, entry, status, due, trigger_kind, context FROM ce_enrollments('cat');
SELECT revenue_engine.tag_contact('cat', 'vip') AS added;
SELECT revenue_engine.upsert_contact('cat', tags => '{vip,trial}') > 0 AS same_tags;
SELECT revenue_engine.upsert_contact('cat', name => 'Cat') > 0 AS renamed;
SELECT campaign, entry, status, trigger_kind, context FROM ce_enrollments('cat');
-- vip removed and added again after its enrollment ended: re-entry always
SELECT revenue_engine.exit_enrollment('ce_vip', 'cat');
SELECT revenue_engine.untag_contact('cat', 'vip') AS removed;
SELECT revenue_engine.tag_contact('cat', 'vip') AS added_again;
SELECT campaign, entry, status, trigger_kind FROM ce_enrollments('cat') WHERE campaign = 'ce_vip';
-- a draft campaign's trigger does nothing
SELECT ce_campaign('ce_draft_tag', 'tag_added', 'later', p_status => 'draft') > 0 AS created;
SELECT revenue_engine.tag_contact('cat', 'later') AS added;
SELECT count(*) AS draft_enrollments FROM ce_enrollments('cat') WHERE campaign = 'ce_draft_tag';
-- (the welcome campaign is paused: contacts below are not enrolled in it)
SELECT revenue_engine.pause_campaign('ce_welcome');

-- Trigger: an outbox event type, in the transaction that wrote the event.
-- The first event comes before any campaign names its type (the backend
-- caches "no campaign"); creating the campaign must be seen by the next one.
SELECT revenue_engine.register_event_type('ce_signup'), revenue_engine.register_event_type('ce_cancel');
SELECT ce_contact('dan', p_user => u(9101)) > 0 AS dan;
SELECT revenue_engine.enqueue_event(u(9101), 'ce_signup', '{"plan": "basic"}') IS NOT NULL AS event;
SELECT count(*) AS before_campaign FROM ce_enrollments('dan') WHERE campaign = 'ce_signup_flow';
SELECT ce_campaign('ce_signup_flow', 'event', 'ce_signup', p_reentry => 'always',
                   p_exit_rules => '[{"event_type": "ce_cancel", "match_key": "plan"}]') > 0 AS created;
SELECT revenue_engine.enqueue_event(u(9101), 'ce_signup', '{"plan": "pro"}') IS NOT NULL AS event;
SELECT campaign, entry, status, due, trigger_kind, entry_key, context FROM ce_enrollments('dan');
-- an event of a user without contacts, and of an event type no campaign names
SELECT revenue_engine.enqueue_event(u(9102), 'ce_signup', '{}') IS NOT NULL AS other_user;
SELECT revenue_engine.register_event_type('ce_other');
SELECT revenue_engine.enqueue_event(u(9101), 'ce_other', '{}') IS NOT NULL AS other_type;
SELECT count(*) AS dan_enrollments FROM ce_enrollments('dan');
-- paused: the next event does not enroll (the cache sees the status change)
SELECT revenue_engine.pause_campaign('ce_signup_flow');
SELECT revenue_engine.exit_enrollment('ce_signup_flow', 'dan');
SELECT revenue_engine.enqueue_event(u(9101), 'ce_signup', '{"plan": "pro"}') IS NOT NULL AS event;
SELECT count(*) FILTER (WHERE status = 'active') AS open FROM ce_enrollments('dan');
SELECT revenue_engine.activate_campaign('ce_signup_flow');

-- track_daily_usage reaching a milestone enrolls in the same transaction,
-- and a rollback leaves neither the event nor the enrollment.
SELECT ce_campaign('ce_milestone', 'event', 'milestone_reached') > 0 AS created;
SELECT ce_contact('eve', p_user => u(9103)) > 0 AS eve;
SELECT usage_type FROM revenue_engine.set_usage_type('ce_usage', milestones => '{1,2}');
BEGIN;
SELECT (revenue_engine.track_daily_usage(u(9103), 'ce_usage', 1))->'milestone_reached' AS milestone;
SELECT campaign, status, trigger_kind, context FROM ce_enrollments('eve');
ROLLBACK;
SELECT count(*) AS after_rollback FROM ce_enrollments('eve');
SELECT count(*) AS events_after_rollback FROM revenue_engine.webhook_events WHERE user_id = u(9103);
SELECT (revenue_engine.track_daily_usage(u(9103), 'ce_usage', 1))->'milestone_reached' AS milestone;
SELECT campaign, status, trigger_kind, context FROM ce_enrollments('eve');
-- the next milestone while in: the open enrollment stays the only one
SELECT (revenue_engine.track_daily_usage(u(9103), 'ce_usage', 1))->'milestone_reached' AS milestone;
SELECT campaign, entry, status FROM ce_enrollments('eve');

-- Blast follow-ups: recipients of a blast of the campaign's tag with no
-- reply 24 hours after their send, that are contacts, are enrolled once.
SELECT ce_campaign('ce_followup', 'blast_no_reply', 'ce_promo', p_after => '24 hours',
                   p_reentry => 'always') AS followup \gset
UPDATE revenue_engine.campaigns SET followups_until = '2026-11-01' WHERE id = :followup;
SELECT ce_contact('fay', p_phone => '+15550000001') > 0 AS fay,
       ce_contact('gus', p_phone => '+15550000002') > 0 AS gus,
       ce_contact('hal', p_phone => '+15550000003') > 0 AS hal;
INSERT INTO revenue_engine.blasts (tag, channel_id, message)
SELECT 'ce_promo', id, 'hello' FROM revenue_engine.channels WHERE name = 'ce_channel'
RETURNING id AS blast \gset
INSERT INTO revenue_engine.blast_recipients (blast_id, phone, status, sent_at, replied_at) VALUES
    (:blast, '+15550000001', 'delivered', '2026-11-19 10:00+00', NULL),   -- no reply: follow up
    (:blast, '+15550000002', 'replied',   '2026-11-19 10:00+00', '2026-11-19 11:00+00'),
    (:blast, '+15550000003', 'read',      '2026-11-19 13:00+00', NULL),   -- not 24 h yet at T0
    (:blast, '+15550000009', 'sent',      '2026-11-19 10:00+00', NULL);   -- no contact
SELECT revenue_engine.campaign_blast_followups('2026-11-20 09:59+00') AS too_early;
SELECT revenue_engine.campaign_blast_followups('2026-11-20 12:00+00') AS at_t0;
SELECT revenue_engine.campaign_blast_followups('2026-11-20 12:00:05+00') AS again;
SELECT campaign, status, trigger_kind, context - 'blast_id' - 'recipient_id' AS context
  FROM ce_enrollments('fay');
SELECT count(*) AS gus FROM ce_enrollments('gus');
SELECT count(*) AS hal FROM ce_enrollments('hal');
SELECT revenue_engine.campaign_blast_followups('2026-11-20 13:00+00') AS hal_now;
SELECT campaign, status, trigger_kind FROM ce_enrollments('hal');

-- Internal functions are not the application's.
SELECT has_function_privilege('revenue_engine_user', 'revenue_engine.enroll(text, text, jsonb, timestamptz)', 'EXECUTE') AS enroll,
       has_function_privilege('revenue_engine_user', 'revenue_engine.exit_enrollment(text, text, text)', 'EXECUTE') AS exit_enrollment,
       has_function_privilege('revenue_engine_user', 'revenue_engine.enroll_internal(text, bigint, bigint, jsonb, timestamptz, text, text)', 'EXECUTE') AS enroll_internal,
       has_function_privilege('revenue_engine_user', 'revenue_engine.campaign_stop_contact(text, bigint, text, text)', 'EXECUTE') AS stop_contact,
       has_function_privilege('revenue_engine_user', 'revenue_engine.campaign_blast_followups(timestamptz)', 'EXECUTE') AS followups;

-- Rows loaded by COPY (pg_restore, a plain dump) enroll nothing: a restore
-- brings their enrollments along.  A statement that only starts with a
-- comment is no COPY.
COPY revenue_engine.contacts (external_ref, tags) FROM stdin;
ce_restored	{trial}
\.
SELECT count(*) AS restored_contact FROM ce_enrollments('ce_restored');
SELECT count(*) AS dan_before FROM ce_enrollments('dan');
COPY revenue_engine.webhook_events (user_id, event_type, event_data) FROM stdin;
00000000-0000-0000-0000-00000000238d	ce_signup	{"plan": "restored"}
\.
SELECT count(*) AS dan_after_copy FROM ce_enrollments('dan');
-- the same event inserted: dan enters again (re-entry always)
INSERT INTO revenue_engine.webhook_events (user_id, event_type, event_data)
VALUES (u(9101), 'ce_signup', '{"plan": "inserted"}');
SELECT entry, status, context->>'plan' AS plan FROM ce_enrollments('dan');
/* a comment */ INSERT INTO revenue_engine.contacts (external_ref, tags) VALUES ('ce_inserted', '{trial}');
SELECT campaign, status, trigger_kind FROM ce_enrollments('ce_inserted');

-- Nothing of this file stays running for the files after it, and no
-- campaign of it remains (history rows are append-only and stay).
SELECT revenue_engine.campaign_stop_enrollments('default', array_agg(e.id), 'test over') >= 0 AS stopped
  FROM revenue_engine.enrollments e JOIN revenue_engine.campaigns c ON c.id = e.campaign_id
 WHERE c.name LIKE 'ce\_%' AND e.status = 'active';
DELETE FROM revenue_engine.campaigns WHERE name LIKE 'ce\_%';
