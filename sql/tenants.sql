-- Tenants (src/tenancy): row level security on every tenant table, roles bound
-- to a tenant, and the credentials of endpoints and channels masked.
--
-- Tenant tenant_a gets a row in every tenant table; the application roles of
-- tenant_b (bound, or unbound with the setting) then see none of them through
-- any table or view, cannot switch to tenant_a, and reach none of its rows
-- through any function.  Nothing leaves this test: the endpoint and the
-- channel are disabled, the blast is scheduled in 2030 and the worker's part
-- is played by UPDATEs of revenue_engine.sends, as in blasts.sql.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';

-- Every table with tenant_id has row level security, enabled and forced, and
-- one policy; the others are shared settings or owner-only.
SELECT c.relname,
       EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS tenant_rows,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
       (SELECT string_agg(p.polname || ' for ' || p.polcmd::text || ' to '
                          || CASE WHEN p.polroles = '{0}' THEN 'public' ELSE p.polroles::regrole[]::text END || ': '
                          || pg_get_expr(p.polqual, p.polrelid)
                          || coalesce(' CHECK ' || pg_get_expr(p.polwithcheck, p.polrelid), ''), '; ')
          FROM pg_policy p WHERE p.polrelid = c.oid) AS policy
  FROM pg_class c
 WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY 1;
-- Views over tenant rows run as the reader, or filter on current_tenant() behind a barrier.
SELECT c.relname, c.reloptions,
       EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_depend d
                   ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                WHERE r.ev_class = c.oid
                  AND d.refobjid = 'revenue_engine.current_tenant()'::regprocedure) AS filters_tenant
  FROM pg_class c
 WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind = 'v'
 ORDER BY 1;

-- No function the application may call takes a tenant as an argument, but
-- the tenant forms (tenant_forms.sql), which refuse a tenant other than the
-- bound one (tenant_forms.sql shows them).
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.prosrc <> 're_tenant_form'
   AND has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE')
   AND EXISTS (SELECT 1 FROM unnest(p.proargnames) n WHERE n ILIKE '%tenant%');

-- Roles: re_ta and re_tb bound to tenant_a and tenant_b; re_shared unbound;
-- re_tb_ops an unbound role re_tb may SET ROLE to; re_ta_group a role bound to
-- tenant_a that re_tb is (wrongly) a member of.
CREATE ROLE re_ta LOGIN IN ROLE revenue_engine_user;
CREATE ROLE re_tb LOGIN IN ROLE revenue_engine_user;
CREATE ROLE re_shared LOGIN IN ROLE revenue_engine_user;
CREATE ROLE re_tb_ops NOLOGIN IN ROLE revenue_engine_user;
CREATE ROLE re_ta_group NOLOGIN IN ROLE revenue_engine_user;
GRANT re_tb_ops, re_ta_group TO re_tb;
CREATE SCHEMA re_tb_own AUTHORIZATION re_tb;
SELECT revenue_engine.bind_role('re_ta', 'tenant_a');
SELECT revenue_engine.bind_role('re_tb', 'tenant_b');
SELECT revenue_engine.bind_role('re_ta_group', 'tenant_a');
SELECT role, tenant FROM revenue_engine.role_tenants ORDER BY role::text;
-- Bad bindings.
SELECT revenue_engine.bind_role(NULL, 'tenant_a');
SELECT revenue_engine.bind_role('re_ta', NULL);
SELECT revenue_engine.bind_role('re_ta', '');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.bind_role('re_ta', E'tab\there');
SELECT revenue_engine.bind_role('postgres', 'tenant_a');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.bind_role('no_such_role', 'tenant_a');
-- Only the owner binds.
SET ROLE re_shared;
SELECT revenue_engine.bind_role('re_shared', 'tenant_a');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM revenue_engine.role_tenants;
RESET ROLE;

-- A binding takes effect at once and goes with a rollback or an unbind.
SET ROLE re_shared;
SELECT revenue_engine.current_tenant();
RESET ROLE;
BEGIN;
SELECT revenue_engine.bind_role('re_shared', 'tenant_b');
SET LOCAL ROLE re_shared;
SELECT revenue_engine.current_tenant();
ROLLBACK;
SET ROLE re_shared;
SELECT revenue_engine.current_tenant();
RESET ROLE;
SELECT revenue_engine.bind_role('re_shared', 'tenant_b');
SET ROLE re_shared;
SELECT revenue_engine.current_tenant();
RESET ROLE;
SELECT revenue_engine.unbind_role('re_shared'), revenue_engine.unbind_role('re_shared');
SET ROLE re_shared;
SELECT revenue_engine.current_tenant();
RESET ROLE;

-- Tenant tenant_a: an endpoint and a channel holding credentials (disabled).
SET revenue_engine.tenant = 'tenant_a';
SELECT revenue_engine.create_endpoint('a_hook',
         'https://hook-user:SECRET-pw@hooks.example.com/services/T0SECRET/B0SECRET/SECRETxxxxxxxx?token=SECRET-q&team=acme#SECRET-f',
         signing_secret => 'whsec_SECRETSECRETSECRETSECRETSECRETSE',
         headers => '{"Authorization": "Bearer SECRET-h"}', enabled => false) > 0 AS endpoint;
SELECT revenue_engine.create_channel('a_wa', 'https://graph.example.com/v17.0/123456/messages?access_token=SECRET-c',
         headers => '{"Authorization": "Bearer SECRET-ch"}',
         body_template => '{"messaging_product": "whatsapp", "auth": {"token": "SECRET-b", "ttl": 30}}',
         message_id_path => '{messages,0,id}', enabled => false) > 0 AS channel;
SELECT revenue_engine.set_channel_status_source('a_wa',
         webhook_kind => 'standard_webhooks', webhook_secret => 'whsec_SECRETSECRETSECRETSECRETSECRETSE',
         status_url => 'https://graph.example.com/{message_id}?fields=status&access_token=SECRET-s',
         status_path => '{status}', poll_interval => '1 day');
RESET revenue_engine.tenant;

-- ... and through its bound role: usage, a profile, events, a send, a blast.
\c - re_ta
SELECT revenue_engine.current_tenant();
SELECT revenue_engine.track_daily_usage(u(900), 'reply', 5, '2026-11-19')->'lifetime_total' AS total;
SELECT timezone FROM revenue_engine.set_user_profile(u(900), timezone => 'Europe/Paris');
SELECT revenue_engine.enqueue_event(u(900), 'plan_changed', '{"plan": "pro"}') IS NOT NULL AS event;
SELECT revenue_engine.enqueue_send('a_wa', '{"to": "+15559990009"}', 'a-1') > 0 AS send;
SELECT recipient_count, rejected FROM revenue_engine.create_blast('a_wa', 'a_promo',
         recipients => '["+15559990001", "+15559990002", "not a phone"]',
         message => 'hello', scheduled_for => '2030-01-01', on_invalid => 'skip');
\c - postgres
SET TimeZone = 'UTC';
-- The worker's part: both recipients' sends sent, their message ids known.
UPDATE revenue_engine.sends SET status = 'sending' WHERE tenant_id = 'tenant_a' AND blast_id IS NOT NULL;
UPDATE revenue_engine.sends s SET status = 'sent', sent_at = now(),
       provider_message_id = 'wamid.TA' || right(r.phone, 1)
  FROM revenue_engine.blast_recipients r
 WHERE s.tenant_id = 'tenant_a' AND r.tenant_id = s.tenant_id AND r.id = s.recipient_id;
-- A logged attempt (the worker's, when it sends).
INSERT INTO revenue_engine.delivery_attempts
       (tenant_id, kind, send_id, channel_id, attempt, started_at, latency_ms, status_code, outcome)
SELECT tenant_id, 'send', id, channel_id, 1, now(), 12.5, 200, 'sent'
  FROM revenue_engine.sends WHERE tenant_id = 'tenant_a' AND idempotency_key = 'a-1';
-- An error the provider reported for the channel (as a callback records it).
INSERT INTO revenue_engine.channel_events (tenant_id, channel_id, kind, detail, occurred_at, data)
SELECT tenant_id, id, 'error', '130429 Rate limit hit', now(), '{"code": 130429}'
  FROM revenue_engine.channels WHERE tenant_id = 'tenant_a';
\c - re_ta
SELECT revenue_engine.record_message_status('wamid.TA1', 'delivered');
SELECT revenue_engine.record_message_status('wamid.TA9', 'read');   -- parked: no such id yet
\c - postgres
SET TimeZone = 'UTC';

-- A table of every relation of the schema with tenant rows: how many rows of
-- a tenant the current role sees in it, and how many of other tenants, or
-- NULL when the role may not read it at all.
CREATE FUNCTION tenant_rows(tenant text)
RETURNS TABLE (relation name, kind "char", rows bigint, other_tenants bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid, c.relname, c.relkind FROM pg_class c
              WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
                AND EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
              ORDER BY c.relname
    LOOP
        relation := r.relname;
        kind := r.relkind;
        rows := NULL;
        other_tenants := NULL;
        IF has_table_privilege(r.oid, 'SELECT') THEN
            EXECUTE format('SELECT count(*) FILTER (WHERE tenant_id = $1),'
                           ' count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1) FROM %s', r.oid::regclass)
               INTO rows, other_tenants USING tenant;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
-- How many rows of each relation the current role may read contain the text.
CREATE FUNCTION rows_containing(needle text)
RETURNS TABLE (relation name, rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid, c.relname FROM pg_class c
              WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
                AND has_table_privilege(c.oid, 'SELECT')
              ORDER BY c.relname
    LOOP
        relation := r.relname;
        EXECUTE format('SELECT count(*) FROM %s t WHERE strpos(t::text, $1) > 0', r.oid::regclass)
           INTO rows USING needle;
        RETURN NEXT;
    END LOOP;
END
$$;
-- A statement's error, or ok.
CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
-- A digest of tenant_a's rows in every tenant table, to show later that nothing changed.
CREATE FUNCTION tenant_digest(tenant text)
RETURNS TABLE (relation name, rows bigint, digest text)
LANGUAGE plpgsql SET TimeZone = 'UTC' SET DateStyle = 'ISO' AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid, c.relname FROM pg_class c
              WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind = 'r'
                AND EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
              ORDER BY c.relname
    LOOP
        relation := r.relname;
        EXECUTE format('SELECT count(*), md5(string_agg(t::text, '','' ORDER BY t::text)) FROM %s t'
                       ' WHERE t.tenant_id = $1', r.oid::regclass)
           INTO rows, digest USING tenant;
        RETURN NEXT;
    END LOOP;
END
$$;

-- tenant_a has rows in every tenant table (a table added later without rows
-- here shows up with 0), and its own role sees all of them and nothing else.
SELECT relation, rows > 0 AS has_rows FROM tenant_rows('tenant_a') WHERE kind = 'r';
CREATE TABLE tenant_a_before AS SELECT * FROM tenant_digest('tenant_a');
\c - re_ta
SELECT relation, kind, rows > 0 AS sees_its_rows, other_tenants FROM tenant_rows('tenant_a');

-- The bound role of tenant_b sees nothing of tenant_a, nor of 'default'
-- (the rows of the earlier tests), in any table or view it may read.
\c - re_tb
SELECT revenue_engine.current_tenant();
SELECT relation, kind, rows, other_tenants FROM tenant_rows('tenant_b');
-- The policy is planned as an index condition on the tenant, computed once per
-- statement; is_delivery_worker() is folded away (it is true in the workers only).
SELECT revenue_engine.is_delivery_worker();
SET enable_seqscan = off;
-- (an initplan's output is $0 before PostgreSQL 17, (InitPlan 1).col1 from
-- 17 on: both are shown as (InitPlan 1))
CREATE FUNCTION pg_temp.plan(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        RETURN NEXT replace(replace(replace(line, ' (returns $0)', ''), '$0', '(InitPlan 1)'),
                            '(InitPlan 1).col1', '(InitPlan 1)');
    END LOOP;
END $$;
SELECT * FROM pg_temp.plan('SELECT * FROM revenue_engine.blast_recipients WHERE blast_id = 1');
RESET enable_seqscan;
-- What it reads besides is shared by every tenant: settings and the workers.
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'revenue_engine'::regnamespace AND has_table_privilege(c.oid, 'SELECT')
   AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
 ORDER BY 1;
-- A function of its own in a query cannot see the rows filtered out (security
-- barriers, policies), even when the tables are scanned, not looked up by tenant.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
CREATE FUNCTION re_tb_own.peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN
    RAISE NOTICE 'peeked at %', $1;
    RETURN true;
END
$$;
SELECT count(*) FROM revenue_engine.endpoints_public WHERE re_tb_own.peek(name);
SELECT count(*) FROM revenue_engine.endpoint_stats WHERE re_tb_own.peek(name);
SELECT count(*) FROM revenue_engine.channels_public WHERE re_tb_own.peek(name);
SELECT count(*) FROM revenue_engine.channel_stats WHERE re_tb_own.peek(name);
SELECT count(*) FROM revenue_engine.blast_funnel WHERE re_tb_own.peek(tag);
SELECT count(*) FROM revenue_engine.blast_stuck WHERE re_tb_own.peek(tag);
SELECT count(*) FROM revenue_engine.blasts WHERE re_tb_own.peek(tag);
SELECT count(*) FROM revenue_engine.blast_recipients WHERE re_tb_own.peek(phone);
SELECT count(*) FROM revenue_engine.user_lifetime_stats WHERE re_tb_own.peek(usage_type);
RESET enable_indexscan;
RESET enable_bitmapscan;

-- A bound role cannot switch tenants: SET ...
SET revenue_engine.tenant = 'tenant_a';
SELECT revenue_engine.current_tenant();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM revenue_engine.webhook_events;
RESET revenue_engine.tenant;
SELECT revenue_engine.current_tenant();
-- ... (its own tenant may be set) ...
SET revenue_engine.tenant = 'tenant_b';
SELECT revenue_engine.current_tenant();
-- ... SET LOCAL ...
BEGIN;
SET LOCAL revenue_engine.tenant = 'tenant_a';
SELECT revenue_engine.current_tenant();
ROLLBACK;
SELECT revenue_engine.current_tenant();
-- ... set_config ...
SELECT set_config('revenue_engine.tenant', 'tenant_a', false);
SELECT revenue_engine.current_tenant();
RESET revenue_engine.tenant;
-- ... SET ROLE to an unbound role it is a member of (the login is bound) ...
SET ROLE re_tb_ops;
SELECT revenue_engine.current_tenant();
SET revenue_engine.tenant = 'tenant_a';
SELECT revenue_engine.current_tenant();
RESET revenue_engine.tenant;
-- ... SET ROLE to a role bound to another tenant ...
SET ROLE re_ta_group;
SELECT revenue_engine.current_tenant();
SELECT count(*) FROM revenue_engine.webhook_events;
RESET ROLE;
-- ... its own session default.
ALTER ROLE re_tb SET revenue_engine.tenant = 'tenant_a';
\c - re_tb
SELECT revenue_engine.current_tenant();
ALTER ROLE re_tb RESET revenue_engine.tenant;
\c - re_tb
SELECT revenue_engine.current_tenant();
-- An unbound login that sets ROLE to a bound role is bound.
\c - re_shared
SET revenue_engine.tenant = 'tenant_a';
SELECT revenue_engine.current_tenant();
RESET revenue_engine.tenant;
\c - postgres
GRANT re_tb TO re_shared;
\c - re_shared
SET ROLE re_tb;
SELECT revenue_engine.current_tenant();
SET revenue_engine.tenant = 'tenant_a';
SELECT revenue_engine.current_tenant();
\c - postgres
REVOKE re_tb FROM re_shared;

-- Every function the application calls, with tenant_a's names and ids, as
-- the bound role of tenant_b with the setting naming tenant_a: refused.
SELECT id AS a_blast FROM revenue_engine.blasts WHERE tenant_id = 'tenant_a' \gset
\c - re_tb
SET revenue_engine.tenant = 'tenant_a';
SELECT substring(s FROM 'revenue_engine\.(\w+)') AS function, try(s) AS result FROM (VALUES
  ($$SELECT revenue_engine.track_daily_usage(u(900), 'reply')$$),
  ($$SELECT revenue_engine.set_user_profile(u(900), timezone => 'Asia/Tokyo')$$),
  ($$SELECT revenue_engine.enqueue_event(u(900), 'plan_changed', '{"forged": true}')$$),
  ($$SELECT revenue_engine.enqueue_send('a_wa', '{"to": "+15559990001"}')$$),
  ($$SELECT revenue_engine.record_message_status('wamid.TA1', 'read')$$),
  ($$SELECT revenue_engine.record_inbound_message('+15559990001')$$),
  ($$SELECT revenue_engine.mark_closed('+15559990001', 100)$$),
  ($$SELECT * FROM revenue_engine.ingest_status_webhook('a_wa', '{}', '{}')$$),
  ($$SELECT * FROM revenue_engine.create_blast('a_wa', 'forged', recipients => '["+15559990003"]', message => 'x')$$),
  ($$SELECT * FROM revenue_engine.funnel_by_tag('a_promo')$$),
  ($$SELECT * FROM revenue_engine.blast_stage_times($$ || :a_blast || $$)$$)
) AS t(s);
RESET revenue_engine.tenant;
-- The same calls without the setting act for tenant_b and reach nothing of tenant_a.
SELECT revenue_engine.track_daily_usage(u(900), 'reply')->'lifetime_total' AS total;
SELECT timezone FROM revenue_engine.set_user_profile(u(900), timezone => 'Asia/Tokyo');
SELECT revenue_engine.enqueue_event(u(900), 'plan_changed', '{"forged": true}') IS NOT NULL AS event;
SELECT revenue_engine.enqueue_send('a_wa', '{"to": "+15559990001"}');
SELECT revenue_engine.record_message_status('wamid.TA1', 'read');
SELECT revenue_engine.record_inbound_message('+15559990001');
SELECT revenue_engine.mark_closed('+15559990001', 100);
SELECT revenue_engine.mark_closed('+15559990001', 100, blast_id => :a_blast);
SELECT * FROM revenue_engine.ingest_status_webhook('a_wa', '{}', '{}');
SELECT * FROM revenue_engine.create_blast('a_wa', 'forged', recipients => '["+15559990003"]', message => 'x');
SELECT * FROM revenue_engine.funnel_by_tag('a_promo');
SELECT * FROM revenue_engine.blast_stage_times(:a_blast);
-- ... and cannot write tenant_a's rows directly either.
UPDATE revenue_engine.blast_recipients SET status = 'closed' WHERE tenant_id = 'tenant_a';
\c - postgres
-- tenant_a's rows are exactly as they were; tenant_b has its own.
SELECT b.relation, b.rows, a.digest IS NOT DISTINCT FROM b.digest AS unchanged
  FROM tenant_a_before b JOIN tenant_digest('tenant_a') a USING (relation) ORDER BY 1;
SELECT tenant_id, user_id = u(900) AS same_user, usage_type, total FROM revenue_engine.lifetime_usage
 WHERE user_id = u(900) ORDER BY 1;
SELECT tenant_id, event_type, event_data FROM revenue_engine.webhook_events
 WHERE user_id = u(900) AND event_type = 'plan_changed' ORDER BY 1;
SELECT tenant_id, message_id, status FROM revenue_engine.status_parked
 WHERE tenant_id IN ('tenant_a', 'tenant_b') ORDER BY 1, 2;

-- An unbound role shared by tenants switches with the setting: row level
-- security keeps each query to the tenant set (a forgotten WHERE), but
-- nothing stops the application from setting another tenant.
\c - re_shared
SET revenue_engine.tenant = 'tenant_b';
SELECT relation, rows > 0 AS sees_rows, other_tenants FROM tenant_rows('tenant_b')
 WHERE relation IN ('lifetime_usage', 'webhook_events', 'blasts');
SET revenue_engine.tenant = 'tenant_a';
SELECT count(*) AS tenant_a_events FROM revenue_engine.webhook_events;
RESET revenue_engine.tenant;

-- Credentials: readable by no application role; endpoints_public and
-- channels_public show them masked.
\c - re_ta
SELECT name, url, header_names, signing_secrets FROM revenue_engine.endpoints_public;
SELECT name, url, header_names, body_template, status_url FROM revenue_engine.channels_public;
SELECT * FROM rows_containing('SECRET') WHERE rows > 0;
SELECT count(*) FROM revenue_engine.endpoints;
SELECT count(*) FROM revenue_engine.channels;
\c - postgres
-- (the owner sees them: the check above can fail)
SET revenue_engine.tenant = 'tenant_a';
SELECT * FROM rows_containing('SECRET') WHERE rows > 0;
RESET revenue_engine.tenant;

-- The masking rules.
SELECT u AS url, revenue_engine.mask_url(u) AS shown FROM (VALUES
  ('https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX'),
  ('https://discord.com/api/webhooks/1234567890/abcdEFGH-ijkl'),
  ('https://api.telegram.org/bot123456:ABC-DEF1234ghIkl/sendMessage'),
  ('https://user:pass@example.com:8443/hook'),
  ('https://token@example.com/hook'),
  ('https://example.com/hook?token=abc&x=1&flag&=v&'),
  ('https://example.com/v2/hook.json#section'),
  ('https://graph.facebook.com/v17.0/{message_id}?fields=status'),
  ('http://[::1]:8080/a-b_c/%41bc'),
  ('HTTPS://Example.COM'),
  ('not a url'),
  (NULL)) AS t(u);
SELECT j AS doc, revenue_engine.mask_json(j) AS shown FROM (VALUES
  ('{"messaging_product": "whatsapp", "auth": {"token": "t", "ttl": 30, "on": true, "none": null}}'::jsonb),
  ('["a", 1, ["b"], {}]'),
  ('"scalar"'),
  ('12'),
  (NULL)) AS t(j);

DROP FUNCTION tenant_rows(text), rows_containing(text), try(text), tenant_digest(text);
DROP TABLE tenant_a_before;
-- Clean up (status_history is append-only: its trigger is off for this).
SET session_replication_role = replica;
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_class c
              WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind = 'r'
                AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
    LOOP
        EXECUTE format('DELETE FROM %s WHERE tenant_id IN (''tenant_a'', ''tenant_b'')', t);
    END LOOP;
END
$$;
RESET session_replication_role;
SELECT revenue_engine.unbind_role(r) FROM unnest(ARRAY['re_ta', 're_tb', 're_ta_group']::regrole[]) r;
DROP SCHEMA re_tb_own CASCADE;
DROP ROLE re_ta, re_tb, re_shared, re_tb_ops, re_ta_group;
