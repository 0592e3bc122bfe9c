-- Campaign definitions: every bad input is an error with its SQLSTATE and
-- the bad value named, and writes nothing (row counts before and after).
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';

SET revenue_engine.tenant = 'defs_bad';
SELECT revenue_engine.create_channel('bad_wa', 'https://graph.example.com/v17.0/2/messages', enabled => false) > 0 AS channel;
SELECT revenue_engine.create_endpoint('bad_crm', 'https://hooks.example.com/bad', enabled => false) > 0 AS endpoint;
SELECT revenue_engine.create_template('hello', 'Hello') AS hello, revenue_engine.create_template('doomed', 'Bye') AS doomed;
SELECT revenue_engine.register_event_type('bad.paid');
RESET revenue_engine.tenant;

SET client_min_messages = warning;
DROP ROLE IF EXISTS re_bad_app;
RESET client_min_messages;
CREATE ROLE re_bad_app LOGIN IN ROLE revenue_engine_user;
-- The tenant's definition rows (the owner's count), and a call's outcome:
-- 'ok' or its SQLSTATE and message.
CREATE FUNCTION bad_rows() RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT format('campaigns %s, versions %s, steps %s, holidays %s',
        (SELECT count(*) FROM revenue_engine.campaigns WHERE tenant_id = 'defs_bad'),
        (SELECT count(*) FROM revenue_engine.campaign_versions WHERE tenant_id = 'defs_bad'),
        (SELECT count(*) FROM revenue_engine.campaign_steps WHERE tenant_id = 'defs_bad'),
        (SELECT count(*) FROM revenue_engine.holidays WHERE tenant_id = 'defs_bad'))
$$;
CREATE FUNCTION try(call text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'SELECT ' || call;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
-- create_campaign with these steps (on channel bad_wa)
CREATE FUNCTION try_steps(steps text) RETURNS text LANGUAGE sql AS $$
    SELECT try(format('revenue_engine.create_campaign(%L, %L, %L)', 'bad', 'bad_wa', steps))
$$;
-- create_campaign with these settings (no steps)
CREATE FUNCTION try_settings(settings text) RETURNS text LANGUAGE sql AS $$
    SELECT try(format('revenue_engine.create_campaign(%L, %L, %L, %L)', 'bad', 'bad_wa', '[]', settings))
$$;

\c - re_bad_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_bad';
-- A campaign to collide with and to update: active, version 1.
SELECT revenue_engine.create_campaign('good', 'bad_wa', '[{"kind": "send", "template": "hello"}]',
                                      '{"stale_after": "1 hour"}') > 0 AS created;
SELECT revenue_engine.activate_campaign('good') AS version;
SELECT bad_rows() AS before;
SELECT revenue_engine.campaign_definition('good') AS good_before \gset

-- Arguments.
SELECT call, try(call) AS outcome FROM (VALUES
    ($c$revenue_engine.create_campaign(NULL, 'bad_wa')$c$),
    ($c$revenue_engine.create_campaign('bad', 'bad_wa', NULL)$c$),
    ($c$revenue_engine.create_campaign('bad', 'bad_wa', '[]', NULL)$c$),
    ($c$revenue_engine.create_campaign('bad name', 'bad_wa')$c$),
    ($c$revenue_engine.create_campaign('', 'bad_wa')$c$),
    ($c$revenue_engine.create_campaign('good', 'bad_wa')$c$),
    ($c$revenue_engine.create_campaign('bad', 'no_such_channel')$c$),
    ($c$revenue_engine.create_campaign('bad', 'bad_wa', '{}')$c$),
    ($c$revenue_engine.create_campaign('bad', 'bad_wa', '[]', '[]')$c$)
) v(call);

-- Steps.
SELECT steps, try_steps(steps) AS outcome FROM (VALUES
    ('[1]'),
    ('[{"template": "hello"}]'),
    ('[{"kind": "email"}]'),
    ('[{"kind": 1}]'),
    ('[{"kind": "send", "template": "hello", "subject": "Hi"}]'),
    ('[{"kind": "send"}]'),
    ('[{"kind": "send", "template": ""}]'),
    ('[{"kind": "send", "template": "nope"}]'),
    ('[{"kind": "send", "template": "hello", "template_version": 2}]'),
    ('[{"kind": "send", "template": "hello", "template_version": 0}]'),
    ('[{"kind": "send", "template": "hello", "template_version": 1.5}]'),
    ('[{"kind": "send", "template": "hello", "template_version": "1"}]'),
    ('[{"kind": "send", "template": "hello", "outside_window": "later"}]'),
    ('[{"kind": "wait", "unit": "days"}]'),
    ('[{"kind": "wait", "amount": 0, "unit": "days"}]'),
    ('[{"kind": "wait", "amount": -2, "unit": "hours"}]'),
    ('[{"kind": "wait", "amount": 1.5, "unit": "hours"}]'),
    ('[{"kind": "wait", "amount": "2", "unit": "days"}]'),
    ('[{"kind": "wait", "amount": 3000000000, "unit": "minutes"}]'),
    ('[{"kind": "wait", "amount": 2}]'),
    ('[{"kind": "wait", "amount": 2, "unit": "fortnights"}]'),
    ('[{"kind": "wait", "amount": 2, "unit": "Days"}]'),
    ('[{"kind": "wait", "amount": 2, "unit": "days", "at": "09:00"}]'),
    ('[{"kind": "wait", "amount": 2, "unit": "days", "delay": "2 days"}]'),
    ('[{"kind": "wait_until"}]'),
    ('[{"kind": "wait_until", "at": "9am"}]'),
    ('[{"kind": "wait_until", "at": "24:00"}]'),
    ('[{"kind": "wait_until", "at": "12:60"}]'),
    ('[{"kind": "wait_until", "at": "12:30:60"}]'),
    ('[{"kind": "wait_until", "at": 9}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid"}]'),
    ('[{"kind": "wait_event", "timeout": "1 day"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.unknown", "timeout": "1 day"}]'),
    ('[{"kind": "wait_event", "event_type": "bad paid", "timeout": "1 day"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": "soon"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": "0 minutes"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": "-1 day"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": 3}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": "1 day", "timeout_action": "retry"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": "none", "timeout_action": "exit"}]'),
    ('[{"kind": "wait_event", "event_type": "bad.paid", "timeout": "none", "match_key": ""}]'),
    ('[{"kind": "tag"}]'),
    ('[{"kind": "tag", "tag": ""}]'),
    ('[{"kind": "untag", "tag": ["a"]}]'),
    ('[{"kind": "tag", "tag": " vip"}]'),
    ('[{"kind": "tag", "tag": "' || repeat('x', 64) || '"}]'),
    ('[{"kind": "notify", "endpoint": "nope", "event_type": "bad.paid"}]'),
    ('[{"kind": "notify", "endpoint": "bad_crm"}]'),
    ('[{"kind": "notify", "endpoint": "bad_crm", "event_type": "bad.paid", "data": [1]}]'),
    ('[{"kind": "notify", "endpoint": "bad_crm", "event_type": "bad.paid", "url": "https://x"}]'),
    ('[{"kind": "exit", "reason": 5}]'),
    ('[{"kind": "exit"}, {"kind": "send", "template": "hello"}]'),
    -- the first bad step is the one named
    ('[{"kind": "send", "template": "hello"}, {"kind": "wait", "amount": 1, "unit": "days"}, {"kind": "wait", "amount": 0, "unit": "days"}]')
) v(steps);

-- Settings.
SELECT settings, try_settings(settings) AS outcome FROM (VALUES
    ('{"purpose": "marketing", "channel": "bad_wa"}'),
    ('{"purpose": "spam"}'),
    ('{"trigger": "manual"}'),
    ('{"trigger": {"value": "x"}}'),
    ('{"trigger": {"kind": "webhook"}}'),
    ('{"trigger": {"kind": "manual", "value": "x"}}'),
    ('{"trigger": {"kind": "contact_created", "after": "1 hour"}}'),
    ('{"trigger": {"kind": "tag_added"}}'),
    ('{"trigger": {"kind": "tag_added", "value": "vip", "after": "1 hour"}}'),
    ('{"trigger": {"kind": "tag_added", "value": "vip", "tags": ["x"]}}'),
    ('{"trigger": {"kind": "tag_added", "value": "vip "}}'),
    ('{"trigger": {"kind": "event", "value": "bad.unknown"}}'),
    ('{"trigger": {"kind": "blast_no_reply", "value": "promo"}}'),
    ('{"trigger": {"kind": "blast_no_reply", "value": "promo", "after": "0 hours"}}'),
    ('{"trigger": {"kind": "blast_no_reply", "after": "24 hours"}}'),
    ('{"reentry": "sometimes"}'),
    ('{"reentry": 1}'),
    ('{"reentry": {"cooldown": "a while"}}'),
    ('{"reentry": {"cooldown": "30 days", "max": 3}}'),
    ('{"reentry": {}}'),
    ('{"send_window": {"start": "09:00"}}'),
    ('{"send_window": {"start": "9", "end": "18:00"}}'),
    ('{"send_window": {"start": "09:00", "end": "09:00"}}'),
    ('{"send_window": "09:00-18:00"}'),
    ('{"send_window": {"start": "09:00", "end": "18:00", "days": [1,2]}}'),
    ('{"quiet_hours": {"start": "22:00", "end": "22:00"}}'),
    ('{"send_window": {"start": "23:00", "end": "06:00"}, "quiet_hours": {"start": "22:00", "end": "07:00"}}'),
    ('{"fallback_timezone": "Mars/Olympus"}'),
    ('{"fallback_timezone": "<+03>-3"}'),
    ('{"frequency": {"per": "local_day"}}'),
    ('{"frequency": {"max": 0, "per": "local_day"}}'),
    ('{"frequency": {"max": 2.5, "per": "local_day"}}'),
    ('{"frequency": {"max": 2, "per": "week"}}'),
    ('{"frequency": {"max": 2, "per": "rolling"}}'),
    ('{"frequency": {"max": 2, "per": "local_day", "window": "24 hours"}}'),
    ('{"frequency": {"max": 2, "per": "rolling", "window": "0 hours"}}'),
    ('{"frequency": {"max": 2, "per": "local_day", "action": "drop"}}'),
    ('{"frequency": {"max": 2, "per": "local_day", "action": 1}}'),
    ('{"frequency": {"max": 2, "per": "local_day", "channel": "sms"}}'),
    ('{"stale_after": "0 seconds"}'),
    ('{"stale_after": "yesterday"}'),
    ('{"whatsapp_margin": "24 hours"}'),
    ('{"whatsapp_margin": "-5 minutes"}'),
    ('{"exit_rules": {"event_type": "bad.paid"}}'),
    ('{"exit_rules": ["bad.paid"]}'),
    ('{"exit_rules": [{"match_key": "membership_id"}]}'),
    ('{"exit_rules": [{"event_type": "bad.unknown"}]}'),
    ('{"exit_rules": [{"event_type": "bad.paid", "within": "1 day"}]}')
) v(settings);

-- update_campaign, activate, pause, archive, clone, campaign_definition.
SELECT call, try(call) AS outcome FROM (VALUES
    ($c$revenue_engine.update_campaign(NULL)$c$),
    ($c$revenue_engine.update_campaign('nope')$c$),
    ($c$revenue_engine.update_campaign('good', settings => '[]')$c$),
    ($c$revenue_engine.update_campaign('good', settings => '{"purpose": "spam"}')$c$),
    ($c$revenue_engine.update_campaign('good', steps => '[{"kind": "wait", "amount": 0, "unit": "days"}]')$c$),
    ($c$revenue_engine.update_campaign('good', steps => '[{"kind": "send", "template": "nope"}]')$c$),
    ($c$revenue_engine.update_campaign('good', channel => 'nope')$c$),
    ($c$revenue_engine.activate_campaign(NULL)$c$),
    ($c$revenue_engine.activate_campaign('nope')$c$),
    ($c$revenue_engine.pause_campaign('nope')$c$),
    ($c$revenue_engine.archive_campaign('nope')$c$),
    ($c$revenue_engine.clone_campaign('nope', 'copy')$c$),
    ($c$revenue_engine.clone_campaign('good', NULL)$c$),
    ($c$revenue_engine.clone_campaign('good', 'good')$c$),
    ($c$revenue_engine.clone_campaign('good', 'bad name')$c$),
    ($c$revenue_engine.campaign_definition(NULL)$c$),
    ($c$revenue_engine.campaign_definition('nope')$c$),
    ($c$revenue_engine.campaign_definition('good', 2)$c$),
    ($c$revenue_engine.set_holidays(NULL)$c$),
    ($c$revenue_engine.set_holidays('{2026-12-25,NULL}')$c$),
    ($c$revenue_engine.set_holidays('{2026-12-25,infinity}')$c$),
    ($c$revenue_engine.add_holiday(NULL)$c$),
    ($c$revenue_engine.add_holiday('-infinity')$c$),
    ($c$revenue_engine.remove_holiday(NULL)$c$)
) v(call);

-- Nothing was written, and the active campaign is as it was (version 1).
SELECT bad_rows() AS after;
SELECT revenue_engine.campaign_definition('good') = :'good_before' AS good_unchanged;

-- A statement that fails at the top level leaves nothing either (its transaction is rolled back).
SELECT revenue_engine.create_campaign('bad', 'bad_wa', '[{"kind": "send", "template": "hello"}, {"kind": "wait", "amount": 1, "unit": "eons"}]');
BEGIN;
SELECT revenue_engine.update_campaign('good', steps => '[{"kind": "wait", "amount": 1, "unit": "days"}]') AS version;
SELECT revenue_engine.update_campaign('good', settings => '{"frequency": {"max": 1}}');
ROLLBACK;
SELECT bad_rows() AS after_rollback;

-- Status rules: 55000.
SELECT revenue_engine.create_campaign('no_channel', NULL, '[{"kind": "send", "template": "hello"}]') > 0 AS created,
       revenue_engine.create_campaign('no_steps', 'bad_wa') > 0 AS created,
       revenue_engine.create_campaign('draft', 'bad_wa', '[{"kind": "send", "template": "doomed"},
                                                        {"kind": "notify", "endpoint": "bad_crm", "event_type": "bad.paid"}]') > 0 AS created;
SELECT call, try(call) AS outcome FROM (VALUES
    ($c$revenue_engine.activate_campaign('no_channel')$c$),
    ($c$revenue_engine.activate_campaign('no_steps')$c$),
    ($c$revenue_engine.pause_campaign('draft')$c$)
) v(call);
-- A template or endpoint gone since the steps were written: activation says which (42704).
\c - postgres
DELETE FROM revenue_engine.templates WHERE tenant_id = 'defs_bad' AND name = 'doomed';
\c - re_bad_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_bad';
SELECT try($c$revenue_engine.activate_campaign('draft')$c$) AS outcome;
SELECT revenue_engine.update_campaign('draft', steps => '[{"kind": "notify", "endpoint": "bad_crm", "event_type": "bad.paid"}]') AS version;
\c - postgres
DELETE FROM revenue_engine.endpoints WHERE tenant_id = 'defs_bad' AND name = 'bad_crm';
\c - re_bad_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_bad';
SELECT try($c$revenue_engine.activate_campaign('draft')$c$) AS outcome;
SELECT revenue_engine.campaign_definition('draft') ->> 'status' AS still;
-- Archived: no change, no activation, no pause.
SELECT revenue_engine.archive_campaign('good') AS archived;
SELECT call, try(call) AS outcome FROM (VALUES
    ($c$revenue_engine.update_campaign('good', settings => '{"stale_after": "2 hours"}')$c$),
    ($c$revenue_engine.activate_campaign('good')$c$),
    ($c$revenue_engine.pause_campaign('good')$c$)
) v(call);
SELECT revenue_engine.campaign_definition('good') - 'status' = :'good_before'::jsonb - 'status' AS good_unchanged;

\c - postgres
DROP FUNCTION try_steps(text), try_settings(text), try(text), bad_rows();
DROP ROLE re_bad_app;
-- Leave no rows for the other tests (as replica: no trigger fires).
SET session_replication_role = replica;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
              WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('DELETE FROM %s WHERE tenant_id = ''defs_bad''', r.rel);
    END LOOP;
END
$$;
RESET session_replication_role;
