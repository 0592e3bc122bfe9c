-- The campaign step runner (issue 12): each step kind run through
-- revenue_engine.run_campaign_steps(max, now) with fixed times.  Campaigns,
-- contacts and enrollments are written directly (this tests the runner, not
-- the functions that write them); every time is in 2030 or later, so the
-- delivery worker of the test server (which runs at the real time) never
-- finds these enrollments due.
SET client_min_messages = warning;
SET timezone = 'UTC';

CREATE FUNCTION rt_contact(t text, ref text, tz text, phone text DEFAULT '+4915112345678')
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO revenue_engine.contacts (tenant_id, external_ref, timezone, phone, email, name)
    VALUES (t, ref, tz, phone, ref || '@example.com', 'Ann ' || ref) RETURNING id
$$;

CREATE FUNCTION rt_template(t text, tname text, body text, version integer DEFAULT 1)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE tid bigint;
BEGIN
    INSERT INTO revenue_engine.templates (tenant_id, name, latest_version) VALUES (t, tname, version)
    ON CONFLICT (tenant_id, name) DO UPDATE SET latest_version = EXCLUDED.latest_version
    RETURNING id INTO tid;
    INSERT INTO revenue_engine.template_versions (tenant_id, template_id, version, body, whatsapp)
    VALUES (t, tid, version, body, '{"name": "tpl", "language": "en_US", "params": []}');
END
$$;

CREATE FUNCTION rt_channel(t text, cname text, kind text DEFAULT 'sms', rate integer DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO revenue_engine.channels (tenant_id, name, url, enabled, kind, rate_limit, rate_period)
    VALUES (t, cname, 'http://127.0.0.1:9/', false, kind, rate, 'minute') RETURNING id
$$;

-- A campaign (active) and its version 1 from steps as create_campaign takes them.
CREATE FUNCTION rt_campaign(t text, cname text, ch bigint, steps jsonb, v jsonb DEFAULT '{}',
                            purpose text DEFAULT 'marketing', version integer DEFAULT 1)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE cid bigint;
BEGIN
    SELECT id INTO cid FROM revenue_engine.campaigns WHERE tenant_id = t AND name = cname;
    IF cid IS NULL THEN
        INSERT INTO revenue_engine.campaigns (tenant_id, name, channel_id, purpose, status, version)
        VALUES (t, cname, ch, purpose, 'active', version) RETURNING id INTO cid;
    ELSE
        UPDATE revenue_engine.campaigns SET version = rt_campaign.version WHERE tenant_id = t AND id = cid;
    END IF;
    INSERT INTO revenue_engine.campaign_versions
           (tenant_id, campaign_id, version, window_start, window_end, quiet_start, quiet_end,
            fallback_timezone, cap_count, cap_period, cap_window, cap_action, stale_after, whatsapp_margin)
    VALUES (t, cid, version, (v->>'window_start')::time, (v->>'window_end')::time,
            (v->>'quiet_start')::time, (v->>'quiet_end')::time, coalesce(v->>'fallback_timezone', 'UTC'),
            (v->>'cap')::int, v->>'cap_period', (v->>'cap_window')::interval, coalesce(v->>'cap_action', 'defer'),
            (v->>'stale_after')::interval, coalesce((v->>'whatsapp_margin')::interval, '30 minutes'));
    INSERT INTO revenue_engine.campaign_steps
           (tenant_id, campaign_id, version, position, kind, template, outside_window, delay_amount,
            delay_unit, at_local_time, event_type, match_key, timeout, timeout_action, tag, endpoint, data, reason)
    SELECT t, cid, version, s.o, s.x->>'kind', s.x->>'template', s.x->>'outside_window',
           (s.x->>'amount')::int, s.x->>'unit', (s.x->>'at')::time, s.x->>'event_type', s.x->>'match_key',
           (s.x->>'timeout')::interval, s.x->>'timeout_action', s.x->>'tag', s.x->>'endpoint', s.x->'data',
           s.x->>'reason'
      FROM jsonb_array_elements(steps) WITH ORDINALITY s(x, o);
    RETURN cid;
END
$$;

CREATE FUNCTION rt_enroll(t text, cid bigint, contact bigint, at timestamptz, version integer DEFAULT 1)
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO revenue_engine.enrollments
           (tenant_id, campaign_id, contact_id, version, next_run_at, step_started_at, enrolled_at)
    VALUES (t, cid, contact, version, at, at, at) RETURNING id
$$;

-- An enrollment's state and its history since the last look.
CREATE FUNCTION rt_state(t text, e bigint)
RETURNS TABLE (status text, step integer, next_run_at timestamptz, end_reason text)
LANGUAGE sql AS $$
    SELECT status, step, next_run_at, end_reason FROM revenue_engine.enrollments
     WHERE tenant_id = t AND id = e
$$;
CREATE FUNCTION rt_history(t text, e bigint)
RETURNS TABLE (step integer, event text, reason text, detail jsonb)
LANGUAGE sql AS $$
    SELECT step, event, reason, detail - 'template' - 'version' - 'fallback_used'
      FROM revenue_engine.enrollment_history WHERE tenant_id = t AND enrollment_id = e ORDER BY id
$$;
CREATE FUNCTION rt_sends(t text, e bigint)
RETURNS TABLE (key_ok boolean, payload jsonb, step integer, form text, status text)
LANGUAGE sql AS $$
    SELECT s.idempotency_key = 'campaign:' || e || ':' || m.step, s.payload, m.step, m.form, m.status
      FROM revenue_engine.campaign_messages m
      JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id
     WHERE m.tenant_id = t AND m.enrollment_id = e ORDER BY m.step
$$;

SELECT rt_template('runner_a', 'welcome', 'Welcome!') IS NOT NULL AS ok,
       rt_template('runner_a', 'followup', 'How is it going?') IS NOT NULL AS ok,
       rt_template('runner_a', 'v1', 'version one') IS NOT NULL AS ok,
       rt_template('runner_a', 'v2', 'version two') IS NOT NULL AS ok;
SELECT rt_channel('runner_a', 'sms') AS sms \gset
SELECT rt_channel('runner_a', 'wa', 'whatsapp') AS wa \gset
SELECT rt_channel('runner_a', 'slow', 'email', 2) AS slow \gset
INSERT INTO revenue_engine.endpoints (tenant_id, name, url, enabled)
VALUES ('runner_a', 'crm', 'http://127.0.0.1:9/crm', false),
       ('runner_a', 'other', 'http://127.0.0.1:9/other', false);

-- Berlin and New York contacts, marketing consent for sms, email, whatsapp.
SELECT rt_contact('runner_a', 'berlin', 'Europe/Berlin') AS berlin \gset
SELECT rt_contact('runner_a', 'ny', 'America/New_York', '+12125550100') AS ny \gset
SELECT rt_contact('runner_a', 'nozone', NULL) AS nozone \gset
INSERT INTO revenue_engine.contact_consents (tenant_id, contact_id, channel_kind, purpose, granted)
SELECT 'runner_a', c, k, 'marketing', true
  FROM unnest(ARRAY[:berlin, :ny, :nozone]::bigint[]) c, unnest(ARRAY['sms', 'email', 'whatsapp']) k;

-- 1. send, wait 2 days, send, tag, notify, then completed; the send window applies.
SELECT rt_campaign('runner_a', 'onboarding', :sms,
    '[{"kind":"send","template":"welcome"}, {"kind":"wait","amount":2,"unit":"days"},
      {"kind":"send","template":"followup"}, {"kind":"tag","tag":"nurtured"},
      {"kind":"notify","endpoint":"crm","event_type":"crm.update","data":{"stage":"warm"}}]',
    '{"window_start":"09:00","window_end":"18:00"}') AS onboarding \gset
SELECT rt_enroll('runner_a', :onboarding, :berlin, '2030-03-04 10:00+01') AS e1 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-03-04 10:00+01');
SELECT * FROM rt_state('runner_a', :e1);
SELECT * FROM rt_history('runner_a', :e1);
SELECT * FROM rt_sends('runner_a', :e1);
-- not due yet: nothing runs
SELECT revenue_engine.run_campaign_steps(100, '2030-03-06 08:59+01');
-- two days later at 10:00 local: the follow-up, the tag, the notify, completed
SELECT revenue_engine.run_campaign_steps(100, '2030-03-06 10:00+01');
SELECT * FROM rt_state('runner_a', :e1);
SELECT * FROM rt_history('runner_a', :e1);
SELECT key_ok, step, status FROM rt_sends('runner_a', :e1);
SELECT tags FROM revenue_engine.contacts WHERE tenant_id = 'runner_a' AND id = :berlin;
-- the notify event goes to the named endpoint only
SELECT ep.name, e.event_type, e.event_data - 'enrollment_id' - 'campaign_id' AS data
  FROM revenue_engine.deliveries d
  JOIN revenue_engine.endpoints ep ON ep.tenant_id = d.tenant_id AND ep.id = d.endpoint_id
  JOIN revenue_engine.webhook_events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
 WHERE d.tenant_id = 'runner_a';

-- 2. Send windows: closed at 20:00 Berlin -> deferred to 09:00 the next day;
-- a window crossing midnight (22:00-06:00) in New York; quiet hours.
SELECT rt_campaign('runner_a', 'night', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"window_start":"22:00","window_end":"06:00"}') AS night \gset
SELECT rt_campaign('runner_a', 'quiet', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"quiet_start":"21:00","quiet_end":"08:00"}') AS quiet \gset
SELECT rt_enroll('runner_a', :onboarding, :ny, '2030-03-04 20:00-05') AS e_closed \gset
SELECT rt_enroll('runner_a', :night, :ny, '2030-03-04 12:00-05') AS e_night \gset
SELECT rt_enroll('runner_a', :night, :berlin, '2030-03-05 03:00+01') AS e_night_open \gset
SELECT rt_enroll('runner_a', :quiet, :berlin, '2030-03-05 02:30+01') AS e_quiet \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-03-05 02:00+00');
SELECT 'closed' AS t, * FROM rt_history('runner_a', :e_closed)
UNION ALL SELECT 'night', * FROM rt_history('runner_a', :e_night)
UNION ALL SELECT 'night_open', * FROM rt_history('runner_a', :e_night_open)
UNION ALL SELECT 'quiet', * FROM rt_history('runner_a', :e_quiet);
-- the deferred ones are sent at their opening
SELECT revenue_engine.run_campaign_steps(100, '2030-03-05 03:00+00');
SELECT revenue_engine.run_campaign_steps(100, '2030-03-05 07:00+00');
SELECT revenue_engine.run_campaign_steps(100, '2030-03-05 14:00+00');
SELECT 'closed' AS t, * FROM rt_state('runner_a', :e_closed)
UNION ALL SELECT 'night', * FROM rt_state('runner_a', :e_night)
UNION ALL SELECT 'quiet', * FROM rt_state('runner_a', :e_quiet);
SELECT 'quiet' AS t, * FROM rt_history('runner_a', :e_quiet);

-- 3. DST in two zones: a day's wait keeps 09:00 local across the spring
-- change; a local time in the gap moves to the first valid instant; one in
-- the overlap takes the first occurrence.
SELECT rt_campaign('runner_a', 'daily', :sms,
                   '[{"kind":"wait","amount":1,"unit":"days"}, {"kind":"exit","reason":"done"}]') AS daily \gset
SELECT rt_campaign('runner_a', 'at0230', :sms,
                   '[{"kind":"wait_until","at":"02:30"}, {"kind":"exit","reason":"done"}]') AS at0230 \gset
SELECT rt_campaign('runner_a', 'at0230b', :sms,
                   '[{"kind":"wait_until","at":"02:30"}, {"kind":"exit","reason":"done"}]') AS at0230b \gset
SELECT rt_campaign('runner_a', 'at0130', :sms,
                   '[{"kind":"wait_until","at":"01:30"}, {"kind":"exit","reason":"done"}]') AS at0130 \gset
SELECT rt_enroll('runner_a', :daily, :berlin, '2030-03-30 09:00+01') AS dst_day_berlin \gset
SELECT rt_enroll('runner_a', :daily, :ny, '2030-03-09 09:00-05') AS dst_day_ny \gset
SELECT rt_enroll('runner_a', :at0230, :berlin, '2030-03-30 22:00+01') AS gap_berlin \gset
SELECT rt_enroll('runner_a', :at0230, :ny, '2030-03-09 22:00-05') AS gap_ny \gset
SELECT rt_enroll('runner_a', :at0230b, :berlin, '2030-10-26 22:00+02') AS overlap_berlin \gset
SELECT rt_enroll('runner_a', :at0130, :ny, '2030-11-02 22:00-04') AS overlap_ny \gset
-- each run at the enrollment's due time
SELECT revenue_engine.run_campaign_steps(100, '2030-03-09 09:00-05');
SELECT revenue_engine.run_campaign_steps(100, '2030-03-09 22:00-05');
SELECT revenue_engine.run_campaign_steps(100, '2030-03-30 09:00+01');
SELECT revenue_engine.run_campaign_steps(100, '2030-03-30 22:00+01');
SELECT revenue_engine.run_campaign_steps(100, '2030-10-26 22:00+02');
SELECT revenue_engine.run_campaign_steps(100, '2030-11-02 22:00-04');
SELECT v.t, (h.detail->>'until')::timestamptz AS until,
       (h.detail->>'until')::timestamptz AT TIME ZONE v.zone AS local
  FROM (VALUES ('day_berlin', :dst_day_berlin, 'Europe/Berlin'), ('day_ny', :dst_day_ny, 'America/New_York'),
               ('gap_berlin', :gap_berlin, 'Europe/Berlin'), ('gap_ny', :gap_ny, 'America/New_York'),
               ('overlap_berlin', :overlap_berlin, 'Europe/Berlin'),
               ('overlap_ny', :overlap_ny, 'America/New_York')) v(t, e, zone)
  JOIN revenue_engine.enrollment_history h
    ON h.tenant_id = 'runner_a' AND h.enrollment_id = v.e AND h.event = 'waiting'
 ORDER BY v.t;
-- a contact without a zone: the version's fallback zone
SELECT rt_campaign('runner_a', 'fallback', :sms, '[{"kind":"wait_until","at":"09:00"}]',
                   '{"fallback_timezone":"Asia/Tokyo"}') AS fallback \gset
SELECT rt_enroll('runner_a', :fallback, :nozone, '2030-06-01 12:00+00') AS e_fallback \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-06-01 12:00+00');
SELECT next_run_at FROM rt_state('runner_a', :e_fallback);

-- 4. Business days skip the weekend and the tenant's holidays:
-- Friday 2030-03-08 + 2 business days, Monday 11th a holiday -> Wednesday 13th.
INSERT INTO revenue_engine.holidays (tenant_id, day, name) VALUES ('runner_a', '2030-03-11', 'test holiday');
SELECT rt_campaign('runner_a', 'business', :sms,
                   '[{"kind":"wait","amount":2,"unit":"business_days"}, {"kind":"exit"}]') AS business \gset
SELECT rt_enroll('runner_a', :business, :berlin, '2030-03-08 10:00+01') AS e_business \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-03-08 10:00+01');
SELECT next_run_at AT TIME ZONE 'Europe/Berlin' AS local FROM rt_state('runner_a', :e_business);
-- minutes and hours are elapsed time
SELECT rt_campaign('runner_a', 'hours', :sms,
                   '[{"kind":"wait","amount":3,"unit":"hours"}, {"kind":"exit"}]') AS hours \gset
SELECT rt_enroll('runner_a', :hours, :berlin, '2030-03-31 00:30+01') AS e_hours \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-03-31 00:30+01');
SELECT next_run_at FROM rt_state('runner_a', :e_hours);

-- 5. Frequency caps per contact and channel kind: 1 per local day, skip or
-- defer; transactional messages bypass the cap (never consent).
SELECT rt_contact('runner_a', 'capped', 'Europe/Berlin') AS capped \gset
INSERT INTO revenue_engine.contact_consents (tenant_id, contact_id, channel_kind, purpose, granted)
VALUES ('runner_a', :capped, 'sms', 'marketing', true);
SELECT rt_campaign('runner_a', 'cap_skip', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":1,"cap_period":"local_day","cap_action":"skip"}') AS cap_skip \gset
SELECT rt_campaign('runner_a', 'cap_defer', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":1,"cap_period":"local_day","cap_action":"defer","window_start":"09:00","window_end":"18:00"}') AS cap_defer \gset
SELECT rt_campaign('runner_a', 'cap_rolling', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":2,"cap_period":"rolling","cap_window":"24 hours","cap_action":"defer"}') AS cap_rolling \gset
SELECT rt_campaign('runner_a', 'receipt', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":1,"cap_period":"local_day","cap_action":"skip"}', 'transactional') AS receipt \gset
SELECT rt_enroll('runner_a', :cap_skip, :capped, '2030-04-01 10:00+02') AS c1 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-01 10:00+02');
SELECT rt_enroll('runner_a', :cap_defer, :capped, '2030-04-01 11:00+02') AS c2 \gset
SELECT rt_enroll('runner_a', :receipt, :capped, '2030-04-01 11:00+02') AS c3 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-01 11:00+02');
SELECT 'skip' AS t, * FROM rt_history('runner_a', :c1)
UNION ALL SELECT 'defer', * FROM rt_history('runner_a', :c2)
UNION ALL SELECT 'transactional', * FROM rt_history('runner_a', :c3);
-- a second skip-capped campaign the same local day: skipped, and completed
SELECT rt_campaign('runner_a', 'cap_skip2', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":1,"cap_period":"local_day","cap_action":"skip"}') AS cap_skip2 \gset
SELECT rt_enroll('runner_a', :cap_skip2, :capped, '2030-04-01 23:30+02') AS c4 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-01 23:30+02');
SELECT * FROM rt_history('runner_a', :c4);
SELECT array_length(recent, 1) FROM revenue_engine.contact_frequency
 WHERE tenant_id = 'runner_a' AND contact_id = :capped AND channel_kind = 'sms';
-- rolling: 2 in 24 hours; the third waits until the first leaves the window
SELECT rt_contact('runner_a', 'rolling', 'Europe/Berlin') AS rolling \gset
INSERT INTO revenue_engine.contact_consents (tenant_id, contact_id, channel_kind, purpose, granted)
VALUES ('runner_a', :rolling, 'sms', 'marketing', true);
SELECT rt_campaign('runner_a', 'cap_rolling2', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":2,"cap_period":"rolling","cap_window":"24 hours","cap_action":"defer"}') AS cap_rolling2 \gset
SELECT rt_campaign('runner_a', 'cap_rolling3', :sms, '[{"kind":"send","template":"welcome"}]',
                   '{"cap":2,"cap_period":"rolling","cap_window":"24 hours","cap_action":"defer"}') AS cap_rolling3 \gset
SELECT rt_enroll('runner_a', :cap_rolling, :rolling, '2030-04-01 10:00+02') AS r1 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-01 10:00+02');
SELECT rt_enroll('runner_a', :cap_rolling2, :rolling, '2030-04-01 20:00+02') AS r2 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-01 20:00+02');
SELECT rt_enroll('runner_a', :cap_rolling3, :rolling, '2030-04-02 09:00+02') AS r3 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-02 09:00+02');
SELECT 'r1' AS t, * FROM rt_history('runner_a', :r1)
UNION ALL SELECT 'r2', * FROM rt_history('runner_a', :r2)
UNION ALL SELECT 'r3', * FROM rt_history('runner_a', :r3);
-- the deferred local-day one goes the next local day at the window's opening
SELECT revenue_engine.run_campaign_steps(100, '2030-04-02 09:00+02');
SELECT * FROM rt_history('runner_a', :c2);

-- 6. Consent: marketing needs a row granting it; transactional is allowed
-- without a row, never against one that refuses.
SELECT rt_contact('runner_a', 'noconsent', 'Europe/Berlin') AS noconsent \gset
SELECT rt_contact('runner_a', 'refused', 'Europe/Berlin') AS refused \gset
INSERT INTO revenue_engine.contact_consents (tenant_id, contact_id, channel_kind, purpose, granted)
VALUES ('runner_a', :refused, 'sms', 'transactional', false);
SELECT rt_enroll('runner_a', :cap_skip, :noconsent, '2030-04-03 10:00+02') AS k1 \gset
SELECT rt_enroll('runner_a', :receipt, :noconsent, '2030-04-03 10:00+02') AS k2 \gset
SELECT rt_enroll('runner_a', :receipt, :refused, '2030-04-03 10:00+02') AS k3 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-04-03 10:00+02');
SELECT 'marketing, no row' AS t, * FROM rt_history('runner_a', :k1)
UNION ALL SELECT 'transactional, no row', * FROM rt_history('runner_a', :k2)
UNION ALL SELECT 'transactional, refused', * FROM rt_history('runner_a', :k3);

-- 7. WhatsApp: free text within 24 hours less the margin of the last inbound
-- message, else the step's outside_window: template (default), defer, skip.
SELECT rt_campaign('runner_a', 'wa_template', :wa, '[{"kind":"send","template":"welcome"}]') AS wa_template \gset
SELECT rt_campaign('runner_a', 'wa_defer', :wa, '[{"kind":"send","template":"welcome","outside_window":"defer"}]') AS wa_defer \gset
SELECT rt_campaign('runner_a', 'wa_skip', :wa, '[{"kind":"send","template":"welcome","outside_window":"skip"}]') AS wa_skip \gset
SELECT rt_contact('runner_a', 'recent', 'Europe/Berlin', '+4915100000001') AS recent \gset
SELECT rt_contact('runner_a', 'margin', 'Europe/Berlin', '+4915100000002') AS margin \gset
INSERT INTO revenue_engine.contact_consents (tenant_id, contact_id, channel_kind, purpose, granted)
VALUES ('runner_a', :recent, 'whatsapp', 'marketing', true), ('runner_a', :margin, 'whatsapp', 'marketing', true);
INSERT INTO revenue_engine.contact_inbound (tenant_id, contact_id, channel_id, last_inbound_at)
VALUES ('runner_a', :recent, :wa, '2030-05-01 08:00+00'),
       ('runner_a', :margin, :wa, '2030-04-30 10:15+00');
SELECT rt_enroll('runner_a', :wa_template, :recent, '2030-05-01 10:00+00') AS w1 \gset
SELECT rt_enroll('runner_a', :wa_template, :margin, '2030-05-01 10:00+00') AS w2 \gset
SELECT rt_enroll('runner_a', :wa_defer, :margin, '2030-05-01 10:00+00') AS w3 \gset
SELECT rt_enroll('runner_a', :wa_skip, :berlin, '2030-05-01 10:00+00') AS w4 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-05-01 10:00+00');
SELECT 'inside' AS t, form, payload FROM rt_sends('runner_a', :w1)
UNION ALL SELECT 'outside (margin)', form, payload FROM rt_sends('runner_a', :w2);
SELECT 'defer' AS t, * FROM rt_history('runner_a', :w3)
UNION ALL SELECT 'skip', * FROM rt_history('runner_a', :w4);
-- (paused from here on: it would be deferred again in every later run)
UPDATE revenue_engine.campaigns SET status = 'paused' WHERE tenant_id = 'runner_a' AND id = :wa_defer;

-- 8. Pause and resume: nothing runs while paused; on resume a step later
-- than stale_after is skipped with the reason, the rest runs.
SELECT rt_campaign('runner_a', 'pausable', :sms,
    '[{"kind":"send","template":"welcome"}, {"kind":"send","template":"followup"}]',
    '{"stale_after":"6 hours"}') AS pausable \gset
SELECT rt_enroll('runner_a', :pausable, :berlin, '2030-06-01 10:00+00') AS p1 \gset
SELECT rt_enroll('runner_a', :pausable, :ny, '2030-06-01 15:00+00') AS p2 \gset
UPDATE revenue_engine.campaigns SET status = 'paused', paused_at = '2030-06-01 09:00+00'
 WHERE tenant_id = 'runner_a' AND id = :pausable;
SELECT revenue_engine.run_campaign_steps(100, '2030-06-01 18:00+00') AS while_paused;
SELECT * FROM rt_state('runner_a', :p1);
UPDATE revenue_engine.campaigns SET status = 'active', paused_at = NULL
 WHERE tenant_id = 'runner_a' AND id = :pausable;
SELECT revenue_engine.run_campaign_steps(100, '2030-06-01 18:00+00') AS resumed;
SELECT 'stale' AS t, * FROM rt_history('runner_a', :p1)
UNION ALL SELECT 'in time', * FROM rt_history('runner_a', :p2);

-- 9. Versions: an enrollment keeps its version after the campaign gets a new one.
SELECT rt_campaign('runner_a', 'versioned', :sms, '[{"kind":"send","template":"v1"}]') AS versioned \gset
SELECT rt_enroll('runner_a', :versioned, :berlin, '2030-07-01 10:00+00', 1) AS ver1 \gset
SELECT rt_campaign('runner_a', 'versioned', :sms, '[{"kind":"send","template":"v2"}]', '{}', 'marketing', 2) IS NOT NULL AS v2;
SELECT rt_enroll('runner_a', :versioned, :ny, '2030-07-01 10:00+00', 2) AS ver2 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-07-01 10:00+00');
SELECT 'v1' AS t, payload->>'text' AS text FROM rt_sends('runner_a', :ver1)
UNION ALL SELECT 'v2', payload->>'text' FROM rt_sends('runner_a', :ver2);

-- 10. wait_event: waits until the timeout (or forever without one); at the
-- timeout it continues or exits.
SELECT rt_campaign('runner_a', 'payment', :sms,
    '[{"kind":"wait_event","event_type":"payment_succeeded","timeout":"3 days","timeout_action":"continue"},
      {"kind":"exit","reason":"paid or timed out"}]') AS payment \gset
SELECT rt_campaign('runner_a', 'payment_exit', :sms,
    '[{"kind":"wait_event","event_type":"payment_succeeded","timeout":"1 day","timeout_action":"exit"},
      {"kind":"send","template":"welcome"}]') AS payment_exit \gset
SELECT rt_campaign('runner_a', 'forever', :sms,
    '[{"kind":"wait_event","event_type":"payment_succeeded"}]') AS forever \gset
SELECT rt_enroll('runner_a', :payment, :berlin, '2030-08-01 10:00+00') AS ev1 \gset
SELECT rt_enroll('runner_a', :payment_exit, :berlin, '2030-08-01 10:00+00') AS ev2 \gset
SELECT rt_enroll('runner_a', :forever, :berlin, '2030-08-01 10:00+00') AS ev3 \gset
SELECT revenue_engine.run_campaign_steps(100, '2030-08-01 10:00+00');
SELECT 'continue' AS t, * FROM rt_state('runner_a', :ev1)
UNION ALL SELECT 'exit', * FROM rt_state('runner_a', :ev2)
UNION ALL SELECT 'forever', * FROM rt_state('runner_a', :ev3);
SELECT revenue_engine.run_campaign_steps(100, '2030-08-04 10:00+00');
SELECT 'continue' AS t, * FROM rt_state('runner_a', :ev1)
UNION ALL SELECT 'exit', * FROM rt_state('runner_a', :ev2);
SELECT 'continue' AS t, * FROM rt_history('runner_a', :ev1)
UNION ALL SELECT 'exit', * FROM rt_history('runner_a', :ev2);

-- 11. A send already queued under the step's key (a crash after the step's
-- send committed, before ...): not queued twice.
SELECT rt_campaign('runner_a', 'once', :sms, '[{"kind":"send","template":"welcome"}]') AS once \gset
SELECT rt_enroll('runner_a', :once, :berlin, '2030-09-01 10:00+00') AS o1 \gset
INSERT INTO revenue_engine.sends (tenant_id, channel_id, idempotency_key, payload)
VALUES ('runner_a', :sms, 'campaign:' || :o1 || ':1', '{"earlier": true}');
SELECT revenue_engine.run_campaign_steps(100, '2030-09-01 10:00+00');
SELECT payload FROM revenue_engine.sends WHERE tenant_id = 'runner_a' AND idempotency_key = 'campaign:' || :o1 || ':1';
SELECT * FROM rt_state('runner_a', :o1);

-- 12. The channel's rate limit (2 a minute): 2 of 5 due sends are queued,
-- the others are due again at their turns in the bucket (about 30 s apart).
SELECT rt_campaign('runner_a', 'limited', :slow, '[{"kind":"send","template":"welcome"}]') AS limited \gset
SELECT count(rt_enroll('runner_a', :limited, rt_contact('runner_a', 'rl' || i, 'UTC', NULL), '2030-10-01 10:00+00'))
  FROM generate_series(1, 5) i;
INSERT INTO revenue_engine.contact_consents (tenant_id, contact_id, channel_kind, purpose, granted)
SELECT 'runner_a', id, 'email', 'marketing', true FROM revenue_engine.contacts
 WHERE tenant_id = 'runner_a' AND external_ref LIKE 'rl%';
SELECT revenue_engine.run_campaign_steps(100, '2030-10-01 10:00+00');
SELECT status, count(*), count(DISTINCT next_run_at) AS turns,
       bool_and(next_run_at > '2030-10-01 10:00+00' AND next_run_at < '2030-10-01 10:02+00') AS within_2_min
  FROM revenue_engine.enrollments
 WHERE tenant_id = 'runner_a' AND campaign_id = :limited GROUP BY status ORDER BY status;
-- (paused from here on: its bucket refills with the wall clock)
UPDATE revenue_engine.campaigns SET status = 'paused' WHERE tenant_id = 'runner_a' AND id = :limited;

-- 13. Fairness: runner_a has 300 due, runner_b 3; a run of 60 steps gives
-- each tenant its share, so runner_b's are all run.
SELECT rt_template('runner_b', 'welcome', 'Hi') IS NOT NULL AS ok;
SELECT rt_channel('runner_a', 'bulk') AS bulk \gset
SELECT rt_channel('runner_b', 'sms') AS sms_b \gset
SELECT rt_campaign('runner_a', 'bulk', :bulk, '[{"kind":"wait","amount":1,"unit":"days"}]') AS bulk_c \gset
SELECT rt_campaign('runner_b', 'small', :sms_b, '[{"kind":"wait","amount":1,"unit":"days"}]') AS small_c \gset
SELECT count(rt_enroll('runner_a', :bulk_c, rt_contact('runner_a', 'bulk' || i, 'UTC'), '2030-12-01 10:00+00'))
  FROM generate_series(1, 300) i;
SELECT count(rt_enroll('runner_b', :small_c, rt_contact('runner_b', 'small' || i, 'UTC'), '2030-12-01 10:00+00'))
  FROM generate_series(1, 3) i;
SELECT revenue_engine.run_campaign_steps(60, '2030-12-01 10:00+00');
SELECT tenant_id, count(*) FILTER (WHERE step = 2) AS run, count(*) FILTER (WHERE step = 1) AS waiting
  FROM revenue_engine.enrollments WHERE campaign_id IN (:bulk_c, :small_c)
 GROUP BY tenant_id ORDER BY tenant_id;

-- a required variable missing: the fallback template is sent, and the
-- campaign message says so (template_stats counts it); WhatsApp text carries
-- the call-to-action URL in its body
SET revenue_engine.tenant = 'runner_a';
SELECT revenue_engine.create_template('fb_plain', 'Hello there') AS v \gset
SELECT revenue_engine.create_template('fb_main', 'Hi {{first_name}}, your plan {{attributes.plan}}',
                                      cta_url => 'https://example.com/p/{{attributes.plan|basic}}',
                                      fallback => 'fb_plain') AS v \gset
RESET revenue_engine.tenant;
SELECT rt_channel('runner_a', 'wa_fb', 'whatsapp') AS wa_fb \gset
SELECT rt_campaign('runner_a', 'fallbacks', :wa_fb, '[{"kind":"send","template":"fb_main"}]', '{}',
                   'transactional') AS fb_c \gset
SELECT rt_contact('runner_a', 'fb_with', 'UTC', '+4915100000071') AS c_with \gset
UPDATE revenue_engine.contacts SET attributes = '{"plan": "pro"}' WHERE tenant_id = 'runner_a' AND id = :c_with;
SELECT rt_enroll('runner_a', :fb_c, :c_with, '2030-12-02 10:00+00') AS e_fb_with \gset
SELECT rt_enroll('runner_a', :fb_c, rt_contact('runner_a', 'fb_without', 'UTC', '+4915100000072'),
                 '2030-12-02 10:00+00') AS e_fb_without \gset
-- both wrote an hour before: free text is allowed (WhatsApp's 24-hour window)
INSERT INTO revenue_engine.contact_inbound (tenant_id, contact_id, channel_id, last_inbound_at)
SELECT 'runner_a', id, :wa_fb, '2030-12-02 09:00+00' FROM revenue_engine.contacts
 WHERE tenant_id = 'runner_a' AND external_ref IN ('fb_with', 'fb_without');
SELECT revenue_engine.run_campaign_steps(1000, '2030-12-02 10:00+00') > 0 AS ran;
SELECT * FROM rt_history('runner_a', :e_fb_with);
SELECT * FROM rt_history('runner_a', :e_fb_without);
SELECT m.enrollment_id = :e_fb_with AS has_plan, t.name AS template, m.fallback_used, s.payload
  FROM revenue_engine.campaign_messages m
  JOIN revenue_engine.templates t ON t.tenant_id = m.tenant_id AND t.id = m.template_id
  JOIN revenue_engine.sends s ON s.tenant_id = m.tenant_id AND s.id = m.send_id
 WHERE m.tenant_id = 'runner_a' AND m.campaign_id = :fb_c ORDER BY 1 DESC;
SET revenue_engine.tenant = 'runner_a';
SELECT template, messages, fallback FROM revenue_engine.template_stats
 WHERE template IN ('fb_main', 'fb_plain') ORDER BY template;
RESET revenue_engine.tenant;

-- bad input
SELECT revenue_engine.run_campaign_steps(0);
SELECT revenue_engine.run_campaign_steps(NULL);
-- internal: not for the application
SELECT has_function_privilege('revenue_engine_user', 'revenue_engine.run_campaign_steps(integer, timestamptz)', 'EXECUTE');

-- leave the shared database as found (history is append-only and stays)
DELETE FROM revenue_engine.deliveries WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.webhook_events WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.campaign_messages WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.sends WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.enrollments WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.campaigns WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.contacts WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.templates WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.holidays WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.endpoints WHERE tenant_id IN ('runner_a', 'runner_b');
DELETE FROM revenue_engine.channels WHERE tenant_id IN ('runner_a', 'runner_b');
DROP FUNCTION rt_contact, rt_template, rt_channel, rt_campaign, rt_enroll, rt_state, rt_history, rt_sends;
