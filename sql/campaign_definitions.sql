-- Campaign definitions (issue 12, point 3): create, read back, update
-- (versions), activate, pause, resume, archive, clone; holidays; tenant
-- isolation.  Bad input is in campaign_bad_input.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = ISO;

-- Tenant defs_a: channels, an endpoint, templates (welcome in two
-- versions), event types (the owner's functions).
SET revenue_engine.tenant = 'defs_a';
SELECT revenue_engine.create_channel('defs_wa', 'https://graph.example.com/v17.0/1/messages', enabled => false) > 0 AS channel;
SELECT revenue_engine.create_channel('defs_sms', 'https://sms.example.com/send', enabled => false) > 0 AS channel;
SELECT revenue_engine.create_endpoint('defs_crm', 'https://hooks.example.com/crm', enabled => false) > 0 AS endpoint;
SELECT revenue_engine.create_template('welcome', 'Hi {{first_name|there}}') AS welcome,
       revenue_engine.create_template('welcome', 'Hello {{first_name|there}}') AS welcome,
       revenue_engine.create_template('reminder', 'Still there, {{first_name|friend}}?') AS reminder,
       revenue_engine.create_template('last_call', 'Last call') AS last_call;
SELECT revenue_engine.register_event_type('defs.conversion'), revenue_engine.register_event_type('defs.paid'),
       revenue_engine.register_event_type('defs.crm_update');
RESET revenue_engine.tenant;

-- The application's role, unbound: it acts for the tenant of the setting.
SET client_min_messages = warning;
DROP ROLE IF EXISTS re_defs_app;
RESET client_min_messages;
CREATE ROLE re_defs_app LOGIN IN ROLE revenue_engine_user;
ALTER ROLE re_defs_app SET DateStyle = ISO;
-- Row counts of a tenant's definition tables (read by the owner).
CREATE FUNCTION defs_rows(tenant text) RETURNS text LANGUAGE sql AS $$
    SELECT format('campaigns %s, versions %s, steps %s',
        (SELECT count(*) FROM revenue_engine.campaigns WHERE tenant_id = tenant),
        (SELECT count(*) FROM revenue_engine.campaign_versions WHERE tenant_id = tenant),
        (SELECT count(*) FROM revenue_engine.campaign_steps WHERE tenant_id = tenant))
$$;

\c - re_defs_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_a';

-- Every step kind and every setting.
SELECT revenue_engine.create_campaign('onboarding', 'defs_wa',
  '[{"kind": "send", "template": "welcome"},
    {"kind": "wait", "amount": 2, "unit": "days"},
    {"kind": "wait", "amount": 3, "unit": "business_days"},
    {"kind": "wait_until", "at": "9:30"},
    {"kind": "send", "template": "reminder", "template_version": 1, "outside_window": "template"},
    {"kind": "wait_event", "event_type": "defs.paid", "match_key": "membership_id",
     "timeout": "72 hours", "timeout_action": "exit"},
    {"kind": "wait_event", "event_type": "defs.paid", "timeout": "none"},
    {"kind": "tag", "tag": "onboarded"},
    {"kind": "untag", "tag": "trial"},
    {"kind": "notify", "endpoint": "defs_crm", "event_type": "defs.crm_update", "data": {"stage": "onboarded"}},
    {"kind": "wait", "amount": 90, "unit": "minutes"},
    {"kind": "wait", "amount": 1, "unit": "weeks"},
    {"kind": "wait", "amount": 12, "unit": "hours"},
    {"kind": "send", "template": "last_call", "outside_window": "skip"},
    {"kind": "exit", "reason": "done"}]',
  '{"purpose": "marketing",
    "trigger": {"kind": "event", "value": "milestone_reached"},
    "reentry": {"cooldown": "30 days"},
    "send_window": {"start": "09:00", "end": "18:00"},
    "quiet_hours": {"start": "22:00", "end": "07:00"},
    "fallback_timezone": "europe/berlin",
    "frequency": {"max": 2, "per": "rolling", "window": "1 day", "action": "skip"},
    "stale_after": "6 hours",
    "whatsapp_margin": "45 minutes",
    "exit_rules": [{"event_type": "defs.conversion", "match_key": "membership_id"},
                   {"event_type": "daily_goal_achieved"}]}') > 0 AS created;
-- Read back: the canonical form (times "HH:MM", intervals spelled out, the
-- zone as PostgreSQL names it, defaults filled in).
SELECT d - 'created_at' - 'steps' - 'settings' AS campaign,
       jsonb_typeof(d -> 'created_at') AS created_at
  FROM revenue_engine.campaign_definition('onboarding') d;
SELECT n, step FROM jsonb_array_elements(revenue_engine.campaign_definition('onboarding') -> 'steps')
                    WITH ORDINALITY AS s(step, n);
SELECT key, value FROM jsonb_each(revenue_engine.campaign_definition('onboarding') -> 'settings') ORDER BY key;
-- What is read back is valid input and reads back the same.
SELECT revenue_engine.create_campaign('onboarding_copy', d ->> 'channel', d -> 'steps', d -> 'settings') > 0 AS created
  FROM revenue_engine.campaign_definition('onboarding') d;
SELECT (e - 'name' - 'created_at') = (d - 'name' - 'created_at') AS same
  FROM revenue_engine.campaign_definition('onboarding_copy') e, revenue_engine.campaign_definition('onboarding') d;

-- The rows the runner reads.
\c - postgres
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = ISO;
SELECT c.name, ch.name AS channel, c.purpose, c.status, c.version, c.trigger_kind, c.trigger_value,
       c.trigger_after, c.reentry, c.reentry_cooldown, c.paused_at
  FROM revenue_engine.campaigns c JOIN revenue_engine.channels ch ON ch.tenant_id = c.tenant_id AND ch.id = c.channel_id
 WHERE c.tenant_id = 'defs_a' AND c.name = 'onboarding';
SELECT v.version, v.window_start, v.window_end, v.quiet_start, v.quiet_end, v.fallback_timezone, v.cap_count,
       v.cap_period, v.cap_window, v.cap_action, v.stale_after, v.whatsapp_margin, v.exit_rules
  FROM revenue_engine.campaign_versions v JOIN revenue_engine.campaigns c ON c.tenant_id = v.tenant_id AND c.id = v.campaign_id
 WHERE c.tenant_id = 'defs_a' AND c.name = 'onboarding';
SELECT s.position, s.kind, s.template, s.template_version, s.outside_window, s.delay_amount, s.delay_unit,
       s.at_local_time, s.event_type, s.match_key, s.timeout, s.timeout_action, s.tag, s.endpoint, s.data, s.reason
  FROM revenue_engine.campaign_steps s JOIN revenue_engine.campaigns c ON c.tenant_id = s.tenant_id AND c.id = s.campaign_id
 WHERE c.tenant_id = 'defs_a' AND c.name = 'onboarding' ORDER BY s.position;

\c - re_defs_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_a';
-- Defaults: a manual, marketing campaign, enter once, no window, no cap.
SELECT revenue_engine.create_campaign('plain', 'defs_sms') > 0 AS created;
SELECT jsonb_pretty(revenue_engine.campaign_definition('plain') - 'created_at');
-- Each trigger kind and re-entry policy; frequency per local day (action defer by default).
SELECT n, revenue_engine.create_campaign('t_' || n, NULL, '[]', settings) > 0 AS created
  FROM (VALUES (1, '{"trigger": {"kind": "manual"}, "reentry": "always"}'::jsonb),
               (2, '{"trigger": {"kind": "contact_created"}, "reentry": "never"}'),
               (3, '{"trigger": {"kind": "tag_added", "value": "trial"}, "frequency": {"max": 1, "per": "local_day"}}'),
               (4, '{"trigger": {"kind": "blast_no_reply", "value": "black_friday", "after": "24 hours"}}'),
               (5, '{"trigger": {"kind": "event", "value": "defs.paid"}, "purpose": "transactional",
                     "send_window": {"start": "20:00", "end": "08:00"}}')) v(n, settings)
 ORDER BY n;
SELECT n, revenue_engine.campaign_definition('t_' || n) -> 'settings' -> 'trigger' AS trigger,
       revenue_engine.campaign_definition('t_' || n) -> 'settings' -> 'reentry' AS reentry,
       revenue_engine.campaign_definition('t_' || n) -> 'settings' -> 'frequency' AS frequency,
       revenue_engine.campaign_definition('t_' || n) -> 'settings' -> 'purpose' AS purpose
  FROM generate_series(1, 5) n;
SELECT revenue_engine.campaign_definition('t_5') -> 'settings' -> 'send_window' AS window_crossing_midnight;

-- A draft is edited in place: version 1, its steps replaced.
SELECT revenue_engine.update_campaign('plain', steps => '[{"kind": "send", "template": "welcome"}]') AS version;
SELECT revenue_engine.update_campaign('plain', settings => '{"stale_after": "2 hours", "quiet_hours": {"start": "21:00", "end": "08:00"}}') AS version;
-- settings are merged key by key; a key given as null returns to its default
SELECT revenue_engine.update_campaign('plain', settings => '{"quiet_hours": null, "purpose": "transactional"}') AS version;
SELECT d -> 'version' AS version, d -> 'steps' AS steps, d -> 'settings' -> 'stale_after' AS stale_after,
       d -> 'settings' -> 'quiet_hours' AS quiet_hours, d -> 'settings' -> 'purpose' AS purpose
  FROM revenue_engine.campaign_definition('plain') d;
-- the channel is changed by name
SELECT revenue_engine.update_campaign('plain', channel => 'defs_wa') AS version;
SELECT revenue_engine.campaign_definition('plain') ->> 'channel' AS channel;

-- Activate; pause; resume; an active campaign edited gets a new version.
SELECT revenue_engine.activate_campaign('plain') AS version;
SELECT revenue_engine.campaign_definition('plain') ->> 'status' AS status;
SELECT revenue_engine.activate_campaign('plain') AS again;
SELECT revenue_engine.pause_campaign('plain') AS paused, revenue_engine.pause_campaign('plain') AS again;
SELECT revenue_engine.campaign_definition('plain') ->> 'status' AS status;
\c - postgres
SELECT status, paused_at IS NOT NULL AS paused_at FROM revenue_engine.campaigns WHERE tenant_id = 'defs_a' AND name = 'plain';
\c - re_defs_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_a';
SELECT revenue_engine.activate_campaign('plain') AS resumed;
-- A contact enrolled on version 1 (its first step due in 2030: nothing runs here).
SELECT revenue_engine.upsert_contact('defs-contact-1') > 0 AS contact,
       revenue_engine.enroll('plain', 'defs-contact-1', '{}', '2030-01-01 09:00+00') > 0 AS enrolled;
SELECT revenue_engine.campaign_definition('plain') ->> 'status' AS status;
SELECT revenue_engine.update_campaign('plain', steps => '[{"kind": "wait", "amount": 1, "unit": "hours"},
                                                        {"kind": "send", "template": "reminder"}]') AS version;
SELECT revenue_engine.update_campaign('plain', settings => '{"stale_after": "3 hours"}') AS version;
-- nothing changed: no new version
SELECT revenue_engine.update_campaign('plain', settings => '{"stale_after": "180 minutes"}') AS unchanged,
       revenue_engine.update_campaign('plain') AS unchanged_too;
-- every version is kept and readable; the campaign's own settings (channel,
-- purpose, trigger, re-entry) show their current values in each
SELECT v, d -> 'version' AS version, d -> 'current_version' AS current, d -> 'steps' AS steps,
       d -> 'settings' -> 'stale_after' AS stale_after
  FROM generate_series(1, 3) v, revenue_engine.campaign_definition('plain', v) d;
-- a paused campaign edited gets a new version too, and stays paused
SELECT revenue_engine.pause_campaign('plain') AS paused;
SELECT revenue_engine.update_campaign('plain', settings => '{"frequency": {"max": 3, "per": "local_day", "action": "skip"}}') AS version;
SELECT revenue_engine.campaign_definition('plain') ->> 'status' AS status,
       revenue_engine.campaign_definition('plain') -> 'settings' -> 'frequency' AS frequency;
SELECT revenue_engine.activate_campaign('plain') AS resumed;
\c - postgres
\set SHOW_CONTEXT never
-- The running enrollment keeps version 1; new enrollments get the campaign's version.
SELECT e.version AS enrollment_version, c.version AS campaign_version,
       (SELECT array_agg(v.version ORDER BY v.version) FROM revenue_engine.campaign_versions v
         WHERE v.tenant_id = c.tenant_id AND v.campaign_id = c.id) AS versions,
       (SELECT array_agg(s.version || ':' || s.position || ':' || s.kind ORDER BY s.version, s.position)
          FROM revenue_engine.campaign_steps s WHERE s.tenant_id = c.tenant_id AND s.campaign_id = c.id) AS steps
  FROM revenue_engine.enrollments e JOIN revenue_engine.campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
 WHERE e.tenant_id = 'defs_a' AND c.name = 'plain';

\c - re_defs_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_a';
-- Clone: a draft copy of the current version, whatever the original's status.
SELECT revenue_engine.clone_campaign('plain', 'plain_v2') > 0 AS cloned;
SELECT d ->> 'status' AS status, d -> 'version' AS version, d ->> 'channel' AS channel,
       (d - 'name' - 'status' - 'version' - 'current_version' - 'created_at')
         = (o - 'name' - 'status' - 'version' - 'current_version' - 'created_at') AS same_definition
  FROM revenue_engine.campaign_definition('plain_v2') d, revenue_engine.campaign_definition('plain') o;
-- Archive: from any status; then no change, no activation, no pause; a clone still works.
SELECT revenue_engine.archive_campaign('plain') AS archived, revenue_engine.archive_campaign('plain') AS again,
       revenue_engine.archive_campaign('t_1') AS draft_archived;
SELECT revenue_engine.campaign_definition('plain') ->> 'status' AS status;
-- its running enrollment exited with the reason
\c - postgres
SELECT e.version, e.status, e.end_reason, e.next_run_at,
       (SELECT array_agg(h.event || ':' || coalesce(h.reason, '') ORDER BY h.id) FROM revenue_engine.enrollment_history h
         WHERE h.tenant_id = e.tenant_id AND h.enrollment_id = e.id) AS history
  FROM revenue_engine.enrollments e WHERE e.tenant_id = 'defs_a';
\c - re_defs_app
\set SHOW_CONTEXT never
SET revenue_engine.tenant = 'defs_a';
SELECT revenue_engine.clone_campaign('plain', 'plain_v3') > 0 AS cloned_from_archived;
SELECT revenue_engine.activate_campaign('plain_v3') AS version;

-- Holidays: replaced as a set, added and removed one by one.
SELECT revenue_engine.set_holidays('{2026-12-25,2026-12-26,2027-01-01,2026-12-25}') AS holidays;
SELECT revenue_engine.add_holiday('2026-12-24', 'Christmas Eve') AS added,
       revenue_engine.add_holiday('2026-12-25', 'Christmas Day') AS renamed,
       revenue_engine.remove_holiday('2027-01-01') AS removed,
       revenue_engine.remove_holiday('2027-01-01') AS removed_again;
SELECT * FROM revenue_engine.list_holidays();
SELECT * FROM revenue_engine.list_holidays('2026-12-25');
-- a day kept by set_holidays keeps its name
SELECT revenue_engine.set_holidays('{2026-12-25,2027-12-25}') AS holidays;
SELECT * FROM revenue_engine.list_holidays();

-- Tenant isolation: defs_b sees none of defs_a's campaigns, channels,
-- templates or holidays, and may use the same names.
SET revenue_engine.tenant = 'defs_b';
SELECT revenue_engine.campaign_definition('onboarding');
SELECT revenue_engine.create_campaign('onboarding', 'defs_wa');
SELECT revenue_engine.create_campaign('onboarding', NULL, '[{"kind": "send", "template": "welcome"}]');
SELECT revenue_engine.create_campaign('onboarding', NULL, '[{"kind": "wait", "amount": 1, "unit": "days"}]') > 0 AS created;
SELECT revenue_engine.pause_campaign('plain_v3');
SELECT revenue_engine.archive_campaign('plain_v3');
SELECT * FROM revenue_engine.list_holidays();
SELECT revenue_engine.set_holidays('{2026-07-04}');
-- The tenant forms: the tenant named first, for that call only.
SELECT revenue_engine.campaign_definition('defs_a', 'plain_v3', NULL) ->> 'status' AS defs_a_status,
       revenue_engine.campaign_definition('onboarding') -> 'steps' AS defs_b_steps;
SELECT revenue_engine.pause_campaign('defs_a', 'plain_v3') AS paused_in_defs_a;
SELECT * FROM revenue_engine.list_holidays('defs_a', '2027-01-01');
SELECT revenue_engine.current_tenant();
\c - postgres
SET DateStyle = ISO;
SELECT tenant_id, name, status FROM revenue_engine.campaigns WHERE tenant_id IN ('defs_a', 'defs_b') ORDER BY 1, 2;
SELECT tenant_id, day, name FROM revenue_engine.holidays WHERE tenant_id IN ('defs_a', 'defs_b') ORDER BY 1, 2;
SELECT defs_rows('defs_a') AS defs_a, defs_rows('defs_b') AS defs_b;

-- The application role has no rights on the tables: it works through the functions.
SELECT t AS "table", has_table_privilege('revenue_engine_user', t, 'SELECT') AS can_select,
       has_table_privilege('revenue_engine_user', t, 'INSERT') AS can_insert
  FROM unnest(ARRAY['revenue_engine.campaigns', 'revenue_engine.campaign_versions',
                    'revenue_engine.campaign_steps', 'revenue_engine.holidays']) t;
-- The internal functions are not callable by it.
SELECT p.oid::regprocedure AS internal, p.prosecdef AS security_definer
  FROM pg_proc p WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.proname LIKE 'campaign\_%'
   AND p.proname <> 'campaign_definition'
   AND has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE');
-- Every app-facing definition function: security definer with a pinned search_path.
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer, p.proconfig AS config
  FROM pg_proc p
 WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.prosrc <> 're_tenant_form'
   AND p.proname IN ('create_campaign', 'update_campaign', 'activate_campaign', 'pause_campaign',
                     'archive_campaign', 'clone_campaign', 'campaign_definition', 'set_holidays',
                     'add_holiday', 'remove_holiday', 'list_holidays')
 ORDER BY 1::text;
DROP FUNCTION defs_rows(text);
DROP ROLE re_defs_app;
-- Leave no rows for the other tests: every tenant table's rows of these
-- tenants (as replica: no trigger, the append-only history's included).
SET session_replication_role = replica;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
              WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('DELETE FROM %s WHERE tenant_id IN (''defs_a'', ''defs_b'')', r.rel);
    END LOOP;
END
$$;
RESET session_replication_role;
