/*
 * campaigns: definitions (see schema.sql for the module's files).  Campaigns,
 * their versions and steps, the tenant's holidays; create, update, activate,
 * pause, archive, clone, and campaign_definition() to read one back.
 *
 * A definition is given as JSON (steps, settings) and parsed here, fully,
 * before anything is written: an unknown key, a bad value, a missing
 * template or endpoint is an error naming it, and nothing is half-written.
 * The parser returns the definition in a canonical form (every setting, each
 * step's keys), which is what gets written; campaign_definition() rebuilds
 * the same form from the rows, so what a user reads back is valid input.
 *
 * Versions: campaigns holds what does not change with versions (name,
 * channel, purpose, trigger, re-entry, status) and the version new
 * enrollments get; campaign_versions and campaign_steps hold a version's send
 * rules and steps.  A draft is edited in place; any change to an active or
 * paused campaign adds a version (campaigns.version = it) and running
 * enrollments keep theirs; an archived one cannot be changed.  Updates lock
 * the campaign row, so concurrent updates number their versions one after
 * the other.
 *
 * Archive: no new enrollments (enroll requires an active campaign), and the
 * running ones exit with the reason 'archived', their queued sends
 * cancelled, by the enrollment part's stop code (campaign_stop_enrollments).
 * The runner runs no step of a paused or archived campaign.
 *
 * Every function here runs as the extension owner (the application role has
 * no rights on the tables), with search_path pinned; it evaluates no object
 * of the caller and reads and writes the current tenant's rows only.
 */

-- A JSON value that must be a string: its text, or 22023 naming what it is.
CREATE FUNCTION revenue_engine.campaign_json_text(v jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'string' THEN
        RAISE EXCEPTION '% must be a string, not %', what, coalesce(left(v::text, 100), 'missing')
            USING ERRCODE = '22023';
    END IF;
    IF v #>> '{}' = '' THEN
        RAISE EXCEPTION '% must not be empty', what USING ERRCODE = '22023';
    END IF;
    RETURN v #>> '{}';
END
$fn$;

-- A JSON object's keys must be among allowed: else 22023 naming the first other one.
CREATE FUNCTION revenue_engine.campaign_json_keys(obj jsonb, allowed text[], what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bad text;
BEGIN
    IF obj IS NULL OR jsonb_typeof(obj) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, coalesce(left(obj::text, 100), 'missing')
            USING ERRCODE = '22023';
    END IF;
    SELECT k INTO bad FROM jsonb_object_keys(obj) k WHERE k <> ALL (allowed) ORDER BY k LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown key "%" in %', bad, what
            USING ERRCODE = '22023',
                  HINT = format('The keys of %s are: %s.', what, array_to_string(allowed, ', '));
    END IF;
END
$fn$;

-- A positive interval given as a string ("3 days", "30 minutes"): 22007 if
-- it does not parse, 22023 if it is not positive.
CREATE FUNCTION revenue_engine.campaign_json_interval(v jsonb, what text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s text := revenue_engine.campaign_json_text(v, what);
    i interval;
BEGIN
    BEGIN
        i := s::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        RAISE EXCEPTION '% "%" is not an interval', what, s
            USING ERRCODE = '22007', HINT = 'Write an interval such as "30 minutes", "24 hours" or "3 days".';
    END;
    IF i <= interval '0' THEN
        RAISE EXCEPTION '% must be positive, not "%"', what, s USING ERRCODE = '22023';
    END IF;
    -- PostgreSQL 17 reads "infinity" as an interval: nothing waits forever
    IF i::text = 'infinity' THEN
        RAISE EXCEPTION '% must be finite, not "%"', what, s USING ERRCODE = '22023';
    END IF;
    RETURN i;
END
$fn$;

-- An interval as the parser writes it back: "3 days", "24 hours", "1 day 30 minutes".
CREATE FUNCTION revenue_engine.campaign_interval_text(i interval)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT nullif(concat_ws(' ',
        CASE WHEN m.months / 12 <> 0 THEN (m.months / 12) || CASE WHEN abs(m.months / 12) = 1 THEN ' year' ELSE ' years' END END,
        CASE WHEN m.months % 12 <> 0 THEN (m.months % 12) || CASE WHEN abs(m.months % 12) = 1 THEN ' month' ELSE ' months' END END,
        CASE WHEN m.days <> 0 THEN m.days || CASE WHEN abs(m.days) = 1 THEN ' day' ELSE ' days' END END,
        CASE WHEN trunc(m.secs / 3600) <> 0 THEN trunc(m.secs / 3600) || CASE WHEN abs(trunc(m.secs / 3600)) = 1 THEN ' hour' ELSE ' hours' END END,
        CASE WHEN trunc(m.secs % 3600 / 60) <> 0 THEN trunc(m.secs % 3600 / 60) || CASE WHEN abs(trunc(m.secs % 3600 / 60)) = 1 THEN ' minute' ELSE ' minutes' END END,
        CASE WHEN m.secs % 60 <> 0 THEN trim_scale(m.secs % 60) || CASE WHEN abs(m.secs % 60) = 1 THEN ' second' ELSE ' seconds' END END), '')
      FROM (SELECT (extract(year FROM i) * 12 + extract(month FROM i))::integer AS months,
                   extract(day FROM i)::integer AS days,
                   extract(epoch FROM i - date_trunc('day', i)) AS secs) m
     WHERE i IS NOT NULL
$fn$;

-- A local time of day "HH:MM" or "HH:MM:SS" (00:00 to 23:59:59; "9:30" too), or 22007.
CREATE FUNCTION revenue_engine.campaign_json_time(v jsonb, what text)
RETURNS time
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s text := revenue_engine.campaign_json_text(v, what);
BEGIN
    IF s !~ '^([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$' THEN
        RAISE EXCEPTION '% "%" is not a time of day', what, s
            USING ERRCODE = '22007', HINT = 'Write a local time such as "09:00" or "17:30" (00:00 to 23:59).';
    END IF;
    RETURN s::time;
END
$fn$;

CREATE FUNCTION revenue_engine.campaign_time_text(t time)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN extract(second FROM t) = 0 THEN to_char(t, 'HH24:MI') ELSE to_char(t, 'HH24:MI:SS') END
$fn$;

-- An event type the outbox knows (built in or registered): else 22023, as enqueue_event says.
CREATE FUNCTION revenue_engine.campaign_json_event_type(v jsonb, what text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    et text := revenue_engine.campaign_json_text(v, what);
BEGIN
    PERFORM revenue_engine.check_name(what, et);
    IF et NOT IN (SELECT revenue_engine.builtin_event_types())
       AND NOT EXISTS (SELECT 1 FROM revenue_engine.event_types t WHERE t.event_type = et) THEN
        RAISE EXCEPTION 'unknown event type "%" in %', et, what
            USING ERRCODE = '22023',
                  HINT = format('Register it first with revenue_engine.register_event_type(%L).', et);
    END IF;
    RETURN et;
END
$fn$;

-- A tag as contacts take it (tag_problem, contacts.sql): else 22023 naming it.
CREATE FUNCTION revenue_engine.campaign_json_tag(v jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tag     text := revenue_engine.campaign_json_text(v, what);
    problem text := revenue_engine.tag_problem(tag);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '% "%" %', what, tag, problem
            USING ERRCODE = '22023',
                  HINT = 'A tag has 1 to 63 characters, no control characters and no surrounding white space.';
    END IF;
    RETURN tag;
END
$fn$;

/*
 * The steps, checked, in canonical form: a JSON array of objects, each with
 * "kind" and that kind's keys (see README, Campaigns and steps).  Templates
 * (and a pinned template version) and endpoints must exist in the tenant:
 * else 42704.
 */
CREATE FUNCTION revenue_engine.campaign_parse_steps(tenant text, steps jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    step    jsonb;
    pos     integer := 0;
    what    text;
    kind    text;
    result     jsonb := '[]';
    norm    jsonb;
    tname   text;
    tver    integer;
    num     numeric;
    ended   integer;
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' THEN
        RAISE EXCEPTION 'steps must be a JSON array, not %', coalesce(left(steps::text, 100), 'null')
            USING ERRCODE = '22023';
    END IF;
    FOR step IN SELECT s FROM jsonb_array_elements(steps) s LOOP
        pos := pos + 1;
        what := format('step %s', pos);
        IF jsonb_typeof(step) <> 'object' THEN
            RAISE EXCEPTION '% must be a JSON object, not %', what, left(step::text, 100)
                USING ERRCODE = '22023';
        END IF;
        IF ended IS NOT NULL THEN
            RAISE EXCEPTION '% follows the exit step % and would never run', what, ended
                USING ERRCODE = '22023';
        END IF;
        kind := revenue_engine.campaign_json_text(step -> 'kind', what || ' kind');
        what := format('step %s (%s)', pos, kind);
        CASE kind
        WHEN 'send' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,template,template_version,outside_window}', what);
            tname := revenue_engine.campaign_json_text(step -> 'template', what || ' template');
            norm := jsonb_build_object('kind', kind, 'template', tname);
            IF NOT EXISTS (SELECT 1 FROM revenue_engine.templates t
                            WHERE t.tenant_id = tenant AND t.name = tname) THEN
                RAISE EXCEPTION '%: template "%" does not exist', what, tname
                    USING ERRCODE = '42704', HINT = 'Create it with revenue_engine.create_template().';
            END IF;
            IF step ? 'template_version' AND step -> 'template_version' <> 'null' THEN
                IF jsonb_typeof(step -> 'template_version') <> 'number'
                   OR (step ->> 'template_version')::numeric NOT BETWEEN 1 AND 2147483647
                   OR (step ->> 'template_version')::numeric % 1 <> 0 THEN
                    RAISE EXCEPTION '% template_version must be a positive integer, not %', what,
                        left((step -> 'template_version')::text, 100) USING ERRCODE = '22023';
                END IF;
                tver := (step ->> 'template_version')::integer;
                IF NOT EXISTS (SELECT 1 FROM revenue_engine.templates t
                                 JOIN revenue_engine.template_versions v
                                   ON v.tenant_id = t.tenant_id AND v.template_id = t.id
                                WHERE t.tenant_id = tenant AND t.name = tname AND v.version = tver) THEN
                    RAISE EXCEPTION '%: template "%" has no version %', what, tname, tver
                        USING ERRCODE = '42704';
                END IF;
                norm := norm || jsonb_build_object('template_version', tver);
            END IF;
            IF step ? 'outside_window' AND step -> 'outside_window' <> 'null' THEN
                IF revenue_engine.campaign_json_text(step -> 'outside_window', what || ' outside_window')
                   NOT IN ('template', 'defer', 'skip') THEN
                    RAISE EXCEPTION '% outside_window must be "template", "defer" or "skip", not "%"', what,
                        step ->> 'outside_window' USING ERRCODE = '22023';
                END IF;
                norm := norm || jsonb_build_object('outside_window', step -> 'outside_window');
            END IF;
        WHEN 'wait' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,amount,unit}', what);
            IF jsonb_typeof(step -> 'amount') IS DISTINCT FROM 'number' THEN
                RAISE EXCEPTION '% amount must be a number, not %', what,
                    coalesce(left((step -> 'amount')::text, 100), 'missing') USING ERRCODE = '22023';
            END IF;
            num := (step ->> 'amount')::numeric;
            IF num <= 0 OR num % 1 <> 0 OR num > 2147483647 THEN
                RAISE EXCEPTION '% amount must be a positive whole number, not %', what, num
                    USING ERRCODE = '22023', HINT = 'A delay is at least 1 of its unit.';
            END IF;
            IF revenue_engine.campaign_json_text(step -> 'unit', what || ' unit')
               NOT IN ('minutes', 'hours', 'days', 'weeks', 'business_days') THEN
                RAISE EXCEPTION '% unit "%" is not a delay unit', what, step ->> 'unit'
                    USING ERRCODE = '22023', HINT = 'Use minutes, hours, days, weeks or business_days.';
            END IF;
            norm := jsonb_build_object('kind', kind, 'amount', num::integer, 'unit', step -> 'unit');
        WHEN 'wait_until' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,at}', what);
            norm := jsonb_build_object('kind', kind, 'at', revenue_engine.campaign_time_text(
                                           revenue_engine.campaign_json_time(step -> 'at', what || ' at')));
        WHEN 'wait_event' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,event_type,match_key,timeout,timeout_action}', what);
            norm := jsonb_build_object('kind', kind, 'event_type',
                        revenue_engine.campaign_json_event_type(step -> 'event_type', what || ' event_type'));
            IF step ? 'match_key' AND step -> 'match_key' <> 'null' THEN
                norm := norm || jsonb_build_object('match_key',
                            revenue_engine.campaign_json_text(step -> 'match_key', what || ' match_key'));
            END IF;
            IF NOT step ? 'timeout' THEN
                RAISE EXCEPTION '% needs a timeout', what
                    USING ERRCODE = '22023',
                          HINT = 'Give "timeout": "3 days" (then "timeout_action": "continue" or "exit"), or "timeout": "none" to wait without one.';
            END IF;
            IF step -> 'timeout' IN ('null', '"none"') THEN
                IF step ? 'timeout_action' AND step -> 'timeout_action' <> 'null' THEN
                    RAISE EXCEPTION '% has no timeout, so no timeout_action', what USING ERRCODE = '22023';
                END IF;
                norm := norm || '{"timeout": "none"}';
            ELSE
                norm := norm || jsonb_build_object('timeout', revenue_engine.campaign_interval_text(
                            revenue_engine.campaign_json_interval(step -> 'timeout', what || ' timeout')),
                            'timeout_action', coalesce(nullif(step -> 'timeout_action', 'null'), '"continue"'));
                IF revenue_engine.campaign_json_text(norm -> 'timeout_action', what || ' timeout_action')
                   NOT IN ('continue', 'exit') THEN
                    RAISE EXCEPTION '% timeout_action must be "continue" or "exit", not "%"', what,
                        norm ->> 'timeout_action' USING ERRCODE = '22023';
                END IF;
            END IF;
        WHEN 'tag', 'untag' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,tag}', what);
            norm := jsonb_build_object('kind', kind, 'tag',
                                       revenue_engine.campaign_json_tag(step -> 'tag', what || ' tag'));
        WHEN 'notify' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,endpoint,event_type,data}', what);
            tname := revenue_engine.campaign_json_text(step -> 'endpoint', what || ' endpoint');
            IF NOT EXISTS (SELECT 1 FROM revenue_engine.endpoints e
                            WHERE e.tenant_id = tenant AND e.name = tname) THEN
                RAISE EXCEPTION '%: endpoint "%" does not exist', what, tname
                    USING ERRCODE = '42704', HINT = 'Create it with revenue_engine.create_endpoint().';
            END IF;
            IF coalesce(jsonb_typeof(step -> 'data'), 'object') NOT IN ('object', 'null') THEN
                RAISE EXCEPTION '% data must be a JSON object, not %', what, left((step -> 'data')::text, 100)
                    USING ERRCODE = '22023';
            END IF;
            norm := jsonb_build_object('kind', kind, 'endpoint', tname,
                        'event_type', revenue_engine.campaign_json_event_type(step -> 'event_type', what || ' event_type'),
                        'data', coalesce(nullif(step -> 'data', 'null'), '{}'));
        WHEN 'exit' THEN
            PERFORM revenue_engine.campaign_json_keys(step, '{kind,reason}', what);
            norm := jsonb_build_object('kind', kind, 'reason',
                        CASE WHEN step ? 'reason' AND step -> 'reason' <> 'null'
                             THEN revenue_engine.campaign_json_text(step -> 'reason', what || ' reason')
                             ELSE 'exit step' END);
            ended := pos;
        ELSE
            RAISE EXCEPTION 'step %: unknown kind "%"', pos, kind
                USING ERRCODE = '22023',
                      HINT = 'The kinds are send, wait, wait_until, wait_event, tag, untag, notify and exit.';
        END CASE;
        result := result || jsonb_build_array(norm);
    END LOOP;
    RETURN result;
END
$fn$;

-- A daily span {"start": "09:00", "end": "18:00"}, or NULL for JSON null / missing.
CREATE FUNCTION revenue_engine.campaign_json_span(v jsonb, what text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF v IS NULL OR v = 'null' THEN
        RETURN NULL;
    END IF;
    PERFORM revenue_engine.campaign_json_keys(v, '{start,end}', what);
    RETURN jsonb_build_object(
        'start', revenue_engine.campaign_time_text(revenue_engine.campaign_json_time(v -> 'start', what || '.start')),
        'end', revenue_engine.campaign_time_text(revenue_engine.campaign_json_time(v -> 'end', what || '.end')));
END
$fn$;

/*
 * The settings, checked, in canonical form: every setting present, null
 * where it is not set.  A key given as null takes its default.
 */
CREATE FUNCTION revenue_engine.campaign_parse_settings(settings jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s       jsonb;
    result     jsonb;
    trig    jsonb;
    tkind   text;
    freq    jsonb;
    rule    jsonb;
    rules   jsonb := '[]';
    n       integer := 0;
    num     numeric;
    margin  interval;
BEGIN
    PERFORM revenue_engine.campaign_json_keys(settings,
        '{purpose,trigger,reentry,send_window,quiet_hours,fallback_timezone,frequency,stale_after,whatsapp_margin,exit_rules}',
        'settings');
    -- null values are defaults: drop them (top level)
    SELECT coalesce(jsonb_object_agg(key, value), '{}') INTO s
      FROM jsonb_each(settings) WHERE value <> 'null';

    result := jsonb_build_object('purpose', coalesce(s -> 'purpose', '"marketing"'));
    IF revenue_engine.campaign_json_text(result -> 'purpose', 'purpose') NOT IN ('marketing', 'transactional') THEN
        RAISE EXCEPTION 'purpose must be "marketing" or "transactional", not "%"', result ->> 'purpose'
            USING ERRCODE = '22023';
    END IF;

    -- trigger: what enrolls a contact
    trig := coalesce(s -> 'trigger', '{"kind": "manual"}');
    PERFORM revenue_engine.campaign_json_keys(trig, '{kind,value,after}', 'trigger');
    tkind := revenue_engine.campaign_json_text(trig -> 'kind', 'trigger.kind');
    IF tkind NOT IN ('manual', 'contact_created', 'tag_added', 'event', 'blast_no_reply') THEN
        RAISE EXCEPTION 'unknown trigger kind "%"', tkind
            USING ERRCODE = '22023', HINT = 'The kinds are manual, contact_created, tag_added, event and blast_no_reply.';
    END IF;
    IF tkind IN ('manual', 'contact_created') AND (trig ? 'value' OR trig ? 'after') THEN
        RAISE EXCEPTION 'trigger % takes no value and no after', tkind USING ERRCODE = '22023';
    END IF;
    IF tkind IN ('tag_added', 'event') AND trig ? 'after' THEN
        RAISE EXCEPTION 'trigger % takes no after', tkind USING ERRCODE = '22023';
    END IF;
    trig := jsonb_build_object('kind', tkind) || CASE tkind
        WHEN 'tag_added' THEN jsonb_build_object('value', revenue_engine.campaign_json_tag(trig -> 'value', 'trigger.value (the tag)'))
        WHEN 'event' THEN jsonb_build_object('value', revenue_engine.campaign_json_event_type(trig -> 'value', 'trigger.value (the event type)'))
        WHEN 'blast_no_reply' THEN jsonb_build_object(
            'value', revenue_engine.campaign_json_text(trig -> 'value', 'trigger.value (the blast tag)'),
            'after', revenue_engine.campaign_interval_text(revenue_engine.campaign_json_interval(trig -> 'after', 'trigger.after')))
        ELSE '{}' END;
    result := result || jsonb_build_object('trigger', trig);

    -- reentry: never, always or {"cooldown": "30 days"}
    IF jsonb_typeof(s -> 'reentry') = 'object' THEN
        PERFORM revenue_engine.campaign_json_keys(s -> 'reentry', '{cooldown}', 'reentry');
        result := result || jsonb_build_object('reentry', jsonb_build_object('cooldown',
                   revenue_engine.campaign_interval_text(
                       revenue_engine.campaign_json_interval(s #> '{reentry,cooldown}', 'reentry.cooldown'))));
    ELSE
        result := result || jsonb_build_object('reentry', coalesce(s -> 'reentry', '"never"'));
        IF revenue_engine.campaign_json_text(result -> 'reentry', 'reentry') NOT IN ('never', 'always') THEN
            RAISE EXCEPTION 'reentry must be "never", "always" or {"cooldown": "<interval>"}, not "%"', result ->> 'reentry'
                USING ERRCODE = '22023';
        END IF;
    END IF;

    result := result || jsonb_build_object(
        'send_window', revenue_engine.campaign_json_span(s -> 'send_window', 'send_window'),
        'quiet_hours', revenue_engine.campaign_json_span(s -> 'quiet_hours', 'quiet_hours'),
        'fallback_timezone', revenue_engine.canonical_timezone(
            revenue_engine.campaign_json_text(coalesce(s -> 'fallback_timezone', '"UTC"'), 'fallback_timezone')));
    -- the send schedule's own check (22023: an empty window or quiet hours,
    -- a window entirely within quiet hours), the code the runner runs
    PERFORM revenue_engine.next_send_time('2000-01-01 00:00+00', 0, 'minutes', NULL,
        (result #>> '{send_window,start}')::time, (result #>> '{send_window,end}')::time,
        (result #>> '{quiet_hours,start}')::time, (result #>> '{quiet_hours,end}')::time,
        NULL, NULL, result ->> 'fallback_timezone');

    -- frequency: {"max": 2, "per": "local_day" | "rolling", "window": "24 hours", "action": "skip" | "defer"}
    freq := s -> 'frequency';
    IF freq IS NOT NULL THEN
        PERFORM revenue_engine.campaign_json_keys(freq, '{max,per,window,action}', 'frequency');
        IF jsonb_typeof(freq -> 'max') IS DISTINCT FROM 'number' THEN
            RAISE EXCEPTION 'frequency.max must be a number, not %', coalesce(left((freq -> 'max')::text, 100), 'missing')
                USING ERRCODE = '22023';
        END IF;
        num := (freq ->> 'max')::numeric;
        IF num <= 0 OR num % 1 <> 0 OR num > 2147483647 THEN
            RAISE EXCEPTION 'frequency.max must be a positive whole number, not %', num USING ERRCODE = '22023';
        END IF;
        IF revenue_engine.campaign_json_text(freq -> 'per', 'frequency.per') NOT IN ('local_day', 'rolling') THEN
            RAISE EXCEPTION 'frequency.per must be "local_day" or "rolling", not "%"', freq ->> 'per'
                USING ERRCODE = '22023';
        END IF;
        IF (freq ->> 'per' = 'rolling') <> (freq ? 'window' AND freq -> 'window' <> 'null') THEN
            RAISE EXCEPTION 'frequency.window is needed with per "rolling" and only with it'
                USING ERRCODE = '22023', HINT = 'A rolling cap counts the sends of the last window, such as "24 hours".';
        END IF;
        IF coalesce(nullif(freq ->> 'action', 'null'), 'defer') NOT IN ('skip', 'defer')
           OR (freq ? 'action' AND jsonb_typeof(freq -> 'action') NOT IN ('string', 'null')) THEN
            RAISE EXCEPTION 'frequency.action must be "skip" or "defer", not %', left((freq -> 'action')::text, 100)
                USING ERRCODE = '22023';
        END IF;
        freq := jsonb_build_object('max', num::integer, 'per', freq -> 'per',
                                   'action', coalesce(nullif(freq ->> 'action', 'null'), 'defer'))
                || CASE WHEN freq ->> 'per' = 'rolling'
                        THEN jsonb_build_object('window', revenue_engine.campaign_interval_text(
                                 revenue_engine.campaign_json_interval(freq -> 'window', 'frequency.window')))
                        ELSE '{}' END;
    END IF;
    result := result || jsonb_build_object('frequency', freq);

    result := result || jsonb_build_object('stale_after',
        CASE WHEN s ? 'stale_after' THEN revenue_engine.campaign_interval_text(
                  revenue_engine.campaign_json_interval(s -> 'stale_after', 'stale_after')) END);
    margin := CASE WHEN s ? 'whatsapp_margin'
                   THEN revenue_engine.campaign_json_interval(s -> 'whatsapp_margin', 'whatsapp_margin')
                   ELSE interval '30 minutes' END;
    IF margin >= interval '24 hours' THEN
        RAISE EXCEPTION 'whatsapp_margin must be less than the 24-hour window, not "%"', s ->> 'whatsapp_margin'
            USING ERRCODE = '22023';
    END IF;
    result := result || jsonb_build_object('whatsapp_margin', revenue_engine.campaign_interval_text(margin));

    -- exit_rules: [{"event_type": "conversion", "match_key": "membership_id"}, ...]
    IF s ? 'exit_rules' THEN
        IF jsonb_typeof(s -> 'exit_rules') <> 'array' THEN
            RAISE EXCEPTION 'exit_rules must be a JSON array, not %', left((s -> 'exit_rules')::text, 100)
                USING ERRCODE = '22023';
        END IF;
        FOR rule IN SELECT r FROM jsonb_array_elements(s -> 'exit_rules') r LOOP
            n := n + 1;
            PERFORM revenue_engine.campaign_json_keys(rule, '{event_type,match_key}', format('exit rule %s', n));
            rules := rules || jsonb_build_array(
                jsonb_build_object('event_type', revenue_engine.campaign_json_event_type(
                                       rule -> 'event_type', format('exit rule %s event_type', n)))
                || CASE WHEN rule ? 'match_key' AND rule -> 'match_key' <> 'null'
                        THEN jsonb_build_object('match_key', revenue_engine.campaign_json_text(
                                 rule -> 'match_key', format('exit rule %s match_key', n)))
                        ELSE '{}' END);
        END LOOP;
    END IF;
    RETURN result || jsonb_build_object('exit_rules', rules);
END
$fn$;

/*
 * Write a version: its campaign_versions row and its steps, from canonical
 * steps and settings (campaign_parse_steps, campaign_parse_settings).
 */
CREATE FUNCTION revenue_engine.campaign_write_version(tenant text, campaign bigint, ver integer,
                                                      steps jsonb, settings jsonb, ts timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO revenue_engine.campaign_versions
           (tenant_id, campaign_id, version, window_start, window_end, quiet_start, quiet_end,
            fallback_timezone, cap_count, cap_period, cap_window, cap_action, stale_after,
            whatsapp_margin, exit_rules, created_at)
    VALUES (tenant, campaign, ver,
            (settings #>> '{send_window,start}')::time, (settings #>> '{send_window,end}')::time,
            (settings #>> '{quiet_hours,start}')::time, (settings #>> '{quiet_hours,end}')::time,
            settings ->> 'fallback_timezone',
            (settings #>> '{frequency,max}')::integer, settings #>> '{frequency,per}',
            (settings #>> '{frequency,window}')::interval,
            coalesce(settings #>> '{frequency,action}', 'defer'),
            (settings ->> 'stale_after')::interval, (settings ->> 'whatsapp_margin')::interval,
            settings -> 'exit_rules', ts);
    INSERT INTO revenue_engine.campaign_steps
           (tenant_id, campaign_id, version, position, kind, template, template_version, outside_window,
            delay_amount, delay_unit, at_local_time, event_type, match_key, timeout, timeout_action,
            tag, endpoint, data, reason)
    SELECT tenant, campaign, ver, s.pos::integer, s.step ->> 'kind', s.step ->> 'template',
           (s.step ->> 'template_version')::integer, s.step ->> 'outside_window',
           (s.step ->> 'amount')::integer, s.step ->> 'unit', (s.step ->> 'at')::time,
           s.step ->> 'event_type', s.step ->> 'match_key',
           (nullif(s.step ->> 'timeout', 'none'))::interval, s.step ->> 'timeout_action',
           s.step ->> 'tag', s.step ->> 'endpoint', s.step -> 'data', s.step ->> 'reason'
      FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(step, pos);
END
$fn$;

/*
 * A version as JSON, rebuilt from the rows: {"name", "status", "channel",
 * "version", "current_version", "created_at", "steps", "settings"}, steps and
 * settings in the parser's canonical form (valid input to create_campaign).
 * Channel, purpose, trigger and re-entry belong to the campaign, not the
 * version: an old version shows their current values.
 */
-- plpgsql, not sql: Citus plans no statement of an SQL function whose tenant
-- is a parameter (on the node of a distributed call or of a shard's trigger).
CREATE FUNCTION revenue_engine.campaign_version_json(tenant text, campaign bigint, ver integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (SELECT jsonb_build_object(
            'name', c.name, 'status', c.status,
            'channel', (SELECT ch.name FROM revenue_engine.channels ch
                         WHERE ch.tenant_id = c.tenant_id AND ch.id = c.channel_id),
            'version', v.version, 'current_version', c.version, 'created_at', v.created_at,
            'steps', coalesce((
                SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                           'kind', st.kind, 'template', st.template, 'template_version', st.template_version,
                           'outside_window', st.outside_window, 'amount', st.delay_amount, 'unit', st.delay_unit,
                           'at', revenue_engine.campaign_time_text(st.at_local_time), 'event_type', st.event_type,
                           'match_key', st.match_key,
                           'timeout', CASE WHEN st.kind = 'wait_event'
                                           THEN coalesce(revenue_engine.campaign_interval_text(st.timeout), 'none') END,
                           'timeout_action', st.timeout_action, 'tag', st.tag, 'endpoint', st.endpoint,
                           'data', st.data, 'reason', st.reason)) ORDER BY st.position)
                  FROM revenue_engine.campaign_steps st
                 WHERE st.tenant_id = v.tenant_id AND st.campaign_id = v.campaign_id AND st.version = v.version), '[]'),
            'settings', jsonb_build_object(
                'purpose', c.purpose,
                'trigger', jsonb_strip_nulls(jsonb_build_object(
                    'kind', c.trigger_kind, 'value', c.trigger_value,
                    'after', revenue_engine.campaign_interval_text(c.trigger_after))),
                'reentry', CASE c.reentry WHEN 'cooldown'
                                THEN jsonb_build_object('cooldown', revenue_engine.campaign_interval_text(c.reentry_cooldown))
                                ELSE to_jsonb(c.reentry) END,
                'send_window', CASE WHEN v.window_start IS NOT NULL THEN jsonb_build_object(
                    'start', revenue_engine.campaign_time_text(v.window_start),
                    'end', revenue_engine.campaign_time_text(v.window_end)) END,
                'quiet_hours', CASE WHEN v.quiet_start IS NOT NULL THEN jsonb_build_object(
                    'start', revenue_engine.campaign_time_text(v.quiet_start),
                    'end', revenue_engine.campaign_time_text(v.quiet_end)) END,
                'fallback_timezone', v.fallback_timezone,
                'frequency', CASE WHEN v.cap_count IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
                    'max', v.cap_count, 'per', v.cap_period,
                    'window', revenue_engine.campaign_interval_text(v.cap_window), 'action', v.cap_action)) END,
                'stale_after', revenue_engine.campaign_interval_text(v.stale_after),
                'whatsapp_margin', revenue_engine.campaign_interval_text(v.whatsapp_margin),
                'exit_rules', v.exit_rules))
          FROM revenue_engine.campaigns c
          JOIN revenue_engine.campaign_versions v ON v.tenant_id = c.tenant_id AND v.campaign_id = c.id
         WHERE c.tenant_id = tenant AND c.id = campaign AND v.version = ver);
END
$fn$;

-- The tenant's campaign named name, locked for update: else 42704.
CREATE FUNCTION revenue_engine.campaign_for_update(tenant text, campaign_name text)
RETURNS revenue_engine.campaigns
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c revenue_engine.campaigns;
BEGIN
    IF campaign_name IS NULL THEN
        RAISE EXCEPTION 'campaign name must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO c FROM revenue_engine.campaigns x
     WHERE x.tenant_id = tenant AND x.name = campaign_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign "%" does not exist', campaign_name USING ERRCODE = '42704';
    END IF;
    RETURN c;
END
$fn$;

-- A channel's id by name in the tenant, or 42704.
CREATE FUNCTION revenue_engine.campaign_channel_id(tenant text, channel_name text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ch bigint;
BEGIN
    SELECT c.id INTO ch FROM revenue_engine.channels c WHERE c.tenant_id = tenant AND c.name = channel_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel_name
            USING ERRCODE = '42704', HINT = 'Create it with revenue_engine.create_channel().';
    END IF;
    RETURN ch;
END
$fn$;

/*
 * Insert a campaign (draft, version 1) from a checked definition: the one
 * piece of code create_campaign and clone_campaign share.
 */
CREATE FUNCTION revenue_engine.campaign_insert(tenant text, campaign_name text, channel bigint,
                                               steps jsonb, settings jsonb, ts timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO revenue_engine.campaigns AS c
           (tenant_id, name, channel_id, purpose, status, version, trigger_kind, trigger_value,
            trigger_after, reentry, reentry_cooldown, created_at, updated_at)
    VALUES (tenant, campaign_name, channel, settings ->> 'purpose', 'draft', 1,
            settings #>> '{trigger,kind}', settings #>> '{trigger,value}',
            (settings #>> '{trigger,after}')::interval,
            CASE WHEN jsonb_typeof(settings -> 'reentry') = 'object' THEN 'cooldown' ELSE settings ->> 'reentry' END,
            (settings #>> '{reentry,cooldown}')::interval, ts, ts)
    ON CONFLICT (tenant_id, name) DO NOTHING
    RETURNING c.id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'campaign "%" already exists', campaign_name USING ERRCODE = '42710';
    END IF;
    PERFORM revenue_engine.campaign_write_version(tenant, new_id, 1, steps, settings, ts);
    RETURN new_id;
END
$fn$;

CREATE FUNCTION revenue_engine.create_campaign(
    name     text,
    channel  text,
    steps    jsonb DEFAULT '[]',
    settings jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    ch     bigint;
    st     jsonb;
    se     jsonb;
BEGIN
    IF create_campaign.name IS NULL OR create_campaign.steps IS NULL OR create_campaign.settings IS NULL THEN
        RAISE EXCEPTION 'name, steps and settings must not be null' USING ERRCODE = '22004',
            HINT = 'A campaign without steps yet has steps ''[]''; default settings are ''{}''.';
    END IF;
    PERFORM revenue_engine.check_name('campaign name', create_campaign.name);
    IF create_campaign.channel IS NOT NULL THEN
        ch := revenue_engine.campaign_channel_id(tenant, create_campaign.channel);
    END IF;
    st := revenue_engine.campaign_parse_steps(tenant, create_campaign.steps);
    se := revenue_engine.campaign_parse_settings(create_campaign.settings);
    RETURN revenue_engine.campaign_insert(tenant, create_campaign.name, ch, st, se, ts);
END
$fn$;
COMMENT ON FUNCTION revenue_engine.create_campaign(text, text, jsonb, jsonb) IS
    'create a draft campaign (version 1) on a channel, with steps and settings as JSON (README, Campaigns and steps); returns its id';

/*
 * Change a campaign's steps (given: replaced), settings (given: merged over
 * the current ones key by key; a key given as null takes its default) or
 * channel (given: replaced).  A draft changes in place; an active or paused
 * campaign gets a new version, unless nothing changes.  Returns the version
 * new enrollments get.
 */
CREATE FUNCTION revenue_engine.update_campaign(
    name     text,
    steps    jsonb DEFAULT NULL,
    settings jsonb DEFAULT NULL,
    channel  text  DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    c      revenue_engine.campaigns;
    cur    jsonb;
    ch     bigint;
    st     jsonb;
    se     jsonb;
    ver    integer;
BEGIN
    c := revenue_engine.campaign_for_update(tenant, update_campaign.name);
    IF c.status = 'archived' THEN
        RAISE EXCEPTION 'campaign "%" is archived and cannot be changed', c.name
            USING ERRCODE = '55000', HINT = 'Clone it with revenue_engine.clone_campaign() and change the copy.';
    END IF;
    IF update_campaign.settings IS NOT NULL AND jsonb_typeof(update_campaign.settings) <> 'object' THEN
        RAISE EXCEPTION 'settings must be a JSON object, not %', left(update_campaign.settings::text, 100)
            USING ERRCODE = '22023';
    END IF;
    cur := revenue_engine.campaign_version_json(tenant, c.id, c.version);
    ch := CASE WHEN update_campaign.channel IS NULL THEN c.channel_id
               ELSE revenue_engine.campaign_channel_id(tenant, update_campaign.channel) END;
    st := revenue_engine.campaign_parse_steps(tenant, coalesce(update_campaign.steps, cur -> 'steps'));
    se := revenue_engine.campaign_parse_settings(cur -> 'settings' || coalesce(update_campaign.settings, '{}'));
    IF st = cur -> 'steps' AND se = cur -> 'settings' AND ch IS NOT DISTINCT FROM c.channel_id THEN
        RETURN c.version;
    END IF;
    ver := CASE WHEN c.status = 'draft' THEN c.version ELSE c.version + 1 END;
    UPDATE revenue_engine.campaigns x
       SET channel_id = ch, purpose = se ->> 'purpose', version = ver,
           trigger_kind = se #>> '{trigger,kind}', trigger_value = se #>> '{trigger,value}',
           trigger_after = (se #>> '{trigger,after}')::interval,
           reentry = CASE WHEN jsonb_typeof(se -> 'reentry') = 'object' THEN 'cooldown' ELSE se ->> 'reentry' END,
           reentry_cooldown = (se #>> '{reentry,cooldown}')::interval,
           updated_at = ts
     WHERE x.tenant_id = tenant AND x.id = c.id;
    IF c.status = 'draft' THEN
        -- no enrollment refers to a draft's version: rewrite it (its steps cascade)
        DELETE FROM revenue_engine.campaign_versions v
         WHERE v.tenant_id = tenant AND v.campaign_id = c.id AND v.version = ver;
    END IF;
    PERFORM revenue_engine.campaign_write_version(tenant, c.id, ver, st, se, ts);
    RETURN ver;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.update_campaign(text, jsonb, jsonb, text) IS
    'change a campaign''s steps (replaced), settings (merged) or channel: a draft in place, an active or paused one as a new version (running enrollments keep theirs); returns the version new enrollments get';

/*
 * Why the current version cannot run, checked again at each activation (a
 * template or endpoint may have gone since the steps were written): no
 * channel or no steps 55000, a missing template or endpoint 42704.
 */
CREATE FUNCTION revenue_engine.campaign_check_runnable(tenant text, c revenue_engine.campaigns)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bad record;
BEGIN
    IF c.channel_id IS NULL OR NOT EXISTS (SELECT 1 FROM revenue_engine.channels ch
                                            WHERE ch.tenant_id = tenant AND ch.id = c.channel_id) THEN
        RAISE EXCEPTION 'campaign "%" has no channel', c.name
            USING ERRCODE = '55000', HINT = 'Set one with revenue_engine.update_campaign(name, channel => ...).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM revenue_engine.campaign_steps s
                    WHERE s.tenant_id = tenant AND s.campaign_id = c.id AND s.version = c.version) THEN
        RAISE EXCEPTION 'campaign "%" has no steps', c.name
            USING ERRCODE = '55000', HINT = 'Give it steps with revenue_engine.update_campaign(name, steps => ...).';
    END IF;
    SELECT s.position, s.template, s.template_version INTO bad
      FROM revenue_engine.campaign_steps s
     WHERE s.tenant_id = tenant AND s.campaign_id = c.id AND s.version = c.version AND s.kind = 'send'
       AND NOT EXISTS (SELECT 1 FROM revenue_engine.templates t
                        WHERE t.tenant_id = tenant AND t.name = s.template
                          AND (s.template_version IS NULL
                               OR EXISTS (SELECT 1 FROM revenue_engine.template_versions tv
                                           WHERE tv.tenant_id = tenant AND tv.template_id = t.id
                                             AND tv.version = s.template_version)))
     ORDER BY s.position LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'campaign "%" step % sends template "%"%, which does not exist', c.name, bad.position,
            bad.template, coalesce(' version ' || bad.template_version, '') USING ERRCODE = '42704';
    END IF;
    SELECT s.position, s.endpoint INTO bad
      FROM revenue_engine.campaign_steps s
     WHERE s.tenant_id = tenant AND s.campaign_id = c.id AND s.version = c.version AND s.kind = 'notify'
       AND NOT EXISTS (SELECT 1 FROM revenue_engine.endpoints e WHERE e.tenant_id = tenant AND e.name = s.endpoint)
     ORDER BY s.position LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'campaign "%" step % notifies endpoint "%", which does not exist', c.name, bad.position,
            bad.endpoint USING ERRCODE = '42704';
    END IF;
END
$fn$;

-- Activate a draft, or resume a paused campaign; returns the version new enrollments get.
CREATE FUNCTION revenue_engine.activate_campaign(name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    c      revenue_engine.campaigns;
BEGIN
    c := revenue_engine.campaign_for_update(tenant, activate_campaign.name);
    IF c.status = 'archived' THEN
        RAISE EXCEPTION 'campaign "%" is archived and cannot be activated', c.name
            USING ERRCODE = '55000', HINT = 'Clone it with revenue_engine.clone_campaign() and activate the copy.';
    END IF;
    PERFORM revenue_engine.campaign_check_runnable(tenant, c);
    IF c.status <> 'active' THEN
        UPDATE revenue_engine.campaigns x SET status = 'active', paused_at = NULL, updated_at = ts
         WHERE x.tenant_id = tenant AND x.id = c.id;
        -- a resumed campaign's due steps run now (the worker passed them over)
        PERFORM revenue_engine.wake_worker();
    END IF;
    RETURN c.version;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.activate_campaign(text) IS
    'activate a draft campaign or resume a paused one (it needs a channel, steps, and its templates and endpoints); returns its version';

-- Pause an active campaign: true if it was active, false if already paused.
CREATE FUNCTION revenue_engine.pause_campaign(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    c      revenue_engine.campaigns;
BEGIN
    c := revenue_engine.campaign_for_update(tenant, pause_campaign.name);
    IF c.status IN ('draft', 'archived') THEN
        RAISE EXCEPTION 'campaign "%" is %, not active: it cannot be paused', c.name, c.status
            USING ERRCODE = '55000';
    END IF;
    IF c.status = 'paused' THEN
        RETURN false;
    END IF;
    UPDATE revenue_engine.campaigns x SET status = 'paused', paused_at = ts, updated_at = ts
     WHERE x.tenant_id = tenant AND x.id = c.id;
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.pause_campaign(text) IS
    'pause an active campaign: nothing is sent and no one enrolls until activate_campaign resumes it; false if it was paused already';

/*
 * Archive a campaign (from any status): no one enrolls and no step runs any
 * more; it cannot be changed or activated again (clone it).  Its running
 * enrollments exit with the reason 'archived' and their queued sends are
 * cancelled (campaign_stop_enrollments, enroll.sql: the one stop code).  The
 * campaign row is locked first, so an enrollment inserted before (its
 * foreign key check holds the row) has committed and is stopped here, and
 * one that comes later sees the campaign archived (enroll_internal reads
 * the row FOR SHARE) and enrolls nobody.  True if it was not archived
 * already.
 */
CREATE FUNCTION revenue_engine.archive_campaign(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    c      revenue_engine.campaigns;
BEGIN
    c := revenue_engine.campaign_for_update(tenant, archive_campaign.name);
    IF c.status = 'archived' THEN
        RETURN false;
    END IF;
    UPDATE revenue_engine.campaigns x SET status = 'archived', updated_at = ts
     WHERE x.tenant_id = tenant AND x.id = c.id;
    PERFORM revenue_engine.campaign_stop_enrollments(tenant,
        ARRAY(SELECT e.id FROM revenue_engine.enrollments e
               WHERE e.tenant_id = tenant AND e.campaign_id = c.id AND e.status = 'active'),
        'archived');
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.archive_campaign(text) IS
    'archive a campaign: its running enrollments exit (reason archived, queued sends cancelled), no new ones, no more changes; clone_campaign copies it';

-- A draft copy of a campaign's current version (any status), named new_name; returns its id.
CREATE FUNCTION revenue_engine.clone_campaign(name text, new_name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    c      revenue_engine.campaigns;
    cur    jsonb;
BEGIN
    IF clone_campaign.new_name IS NULL THEN
        RAISE EXCEPTION 'new_name must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_name('campaign name', clone_campaign.new_name);
    -- FOR UPDATE: the version copied is the current one until this commits
    c := revenue_engine.campaign_for_update(tenant, clone_campaign.name);
    cur := revenue_engine.campaign_version_json(tenant, c.id, c.version);
    RETURN revenue_engine.campaign_insert(tenant, clone_campaign.new_name, c.channel_id,
        revenue_engine.campaign_parse_steps(tenant, cur -> 'steps'),
        revenue_engine.campaign_parse_settings(cur -> 'settings'), ts);
END
$fn$;
COMMENT ON FUNCTION revenue_engine.clone_campaign(text, text) IS
    'copy a campaign''s current version (channel, steps, settings) into a new draft campaign; returns its id';

-- A campaign's definition: its current version, or the version given.
CREATE FUNCTION revenue_engine.campaign_definition(name text, version integer DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    cid    bigint;
    cver   integer;
    def    jsonb;
BEGIN
    IF campaign_definition.name IS NULL THEN
        RAISE EXCEPTION 'campaign name must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT c.id, c.version INTO cid, cver FROM revenue_engine.campaigns c
     WHERE c.tenant_id = tenant AND c.name = campaign_definition.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign "%" does not exist', campaign_definition.name USING ERRCODE = '42704';
    END IF;
    def := revenue_engine.campaign_version_json(tenant, cid, coalesce(campaign_definition.version, cver));
    IF def IS NULL THEN
        RAISE EXCEPTION 'campaign "%" has no version %', campaign_definition.name, campaign_definition.version
            USING ERRCODE = '42704', HINT = format('Its versions are 1 to %s.', cver);
    END IF;
    RETURN def;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.campaign_definition(text, integer) IS
    'a campaign''s name, status, channel, version, steps and settings as JSON (the current version, or the one given); valid input to create_campaign';

/*
 * Holidays: the tenant's days off, skipped by delays in business days.
 * set_holidays replaces the whole set (the usual way: once a year, from a
 * calendar); add_holiday and remove_holiday change one day.
 */
CREATE FUNCTION revenue_engine.set_holidays(days date[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    n      integer;
BEGIN
    IF set_holidays.days IS NULL THEN
        RAISE EXCEPTION 'days must not be null' USING ERRCODE = '22004', HINT = 'Pass ''{}'' to remove every holiday.';
    END IF;
    IF array_position(set_holidays.days, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'days must not contain null (element %)', array_position(set_holidays.days, NULL)
            USING ERRCODE = '22004';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(set_holidays.days) d WHERE NOT isfinite(d)) THEN
        RAISE EXCEPTION 'days must be finite dates' USING ERRCODE = '22008';
    END IF;
    -- days kept keep their names
    DELETE FROM revenue_engine.holidays h
     WHERE h.tenant_id = tenant AND h.day <> ALL (set_holidays.days);
    INSERT INTO revenue_engine.holidays AS h (tenant_id, day)
    SELECT DISTINCT tenant, d FROM unnest(set_holidays.days) d
    ON CONFLICT ON CONSTRAINT holidays_pkey DO NOTHING;
    SELECT count(DISTINCT d) INTO n FROM unnest(set_holidays.days) d;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_holidays(date[]) IS
    'replace the tenant''s holidays (skipped by delays in business days) with these days; returns how many there are';

CREATE FUNCTION revenue_engine.add_holiday(day date, name text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    added  boolean;
BEGIN
    IF add_holiday.day IS NULL THEN
        RAISE EXCEPTION 'day must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT isfinite(add_holiday.day) THEN
        RAISE EXCEPTION 'day must be a finite date, not %', add_holiday.day USING ERRCODE = '22008';
    END IF;
    INSERT INTO revenue_engine.holidays AS h (tenant_id, day, name)
    VALUES (tenant, add_holiday.day, add_holiday.name)
    ON CONFLICT ON CONSTRAINT holidays_pkey DO UPDATE SET name = coalesce(excluded.name, h.name)
    RETURNING xmax = 0 INTO added;
    RETURN added;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.add_holiday(date, text) IS
    'add a holiday of the tenant (true), or rename one (false)';

CREATE FUNCTION revenue_engine.remove_holiday(day date)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
BEGIN
    IF remove_holiday.day IS NULL THEN
        RAISE EXCEPTION 'day must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM revenue_engine.holidays h WHERE h.tenant_id = tenant AND h.day = remove_holiday.day;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.remove_holiday(date) IS 'remove a holiday of the tenant: true if it was one';

-- The tenant's holidays from a day on (default: all).
CREATE FUNCTION revenue_engine.list_holidays(from_day date DEFAULT NULL)
RETURNS TABLE (day date, name text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
BEGIN
    RETURN QUERY
    SELECT h.day, h.name FROM revenue_engine.holidays h
     WHERE h.tenant_id = tenant AND h.day >= coalesce(list_holidays.from_day, '-infinity')
     ORDER BY h.day;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.list_holidays(date) IS 'the tenant''s holidays from from_day on (all if null), in date order';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    revenue_engine.create_campaign(text, text, jsonb, jsonb),
    revenue_engine.update_campaign(text, jsonb, jsonb, text),
    revenue_engine.activate_campaign(text),
    revenue_engine.pause_campaign(text),
    revenue_engine.archive_campaign(text),
    revenue_engine.clone_campaign(text, text),
    revenue_engine.campaign_definition(text, integer),
    revenue_engine.set_holidays(date[]),
    revenue_engine.add_holiday(date, text),
    revenue_engine.remove_holiday(date),
    revenue_engine.list_holidays(date)
  TO revenue_engine_user;
