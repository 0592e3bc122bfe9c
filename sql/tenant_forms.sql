-- Tenant forms (src/tenancy/tenant_forms.sql): every function the application
-- calls on tenant rows has an overload whose first argument is the tenant.
-- Shown here: the list and its rules in the catalog; calls of the plain forms
-- resolve as before whatever their notation; each tenant form writes and reads
-- the tenant it names, for that call only; a bound role may name only its own
-- tenant.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';

-- Each tenant form, its plain form (same name, the arguments after tenant),
-- no defaults, the same grant, result and volatility.
SELECT t.oid::regprocedure AS tenant_form,
       p.oid IS NOT NULL AS has_plain_form,
       t.pronargdefaults AS defaults,
       has_function_privilege('revenue_engine_user', t.oid, 'EXECUTE') AS app,
       has_function_privilege('revenue_engine_user', t.oid, 'EXECUTE')
         = has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE') AS same_grant,
       t.provolatile = p.provolatile AND t.proparallel = p.proparallel
         AND pg_get_function_result(t.oid) = pg_get_function_result(p.oid)
         AND pg_get_function_arguments(t.oid)
             = 'tenant text, ' || regexp_replace(pg_get_function_arguments(p.oid), ' DEFAULT [^,]*', '', 'g')
             AS same_result
  FROM pg_proc t
  LEFT JOIN pg_proc p
         ON p.pronamespace = t.pronamespace AND p.proname = t.proname
        AND 'text' || coalesce(', ' || nullif(oidvectortypes(p.proargtypes), ''), '') = oidvectortypes(t.proargtypes)
 WHERE t.pronamespace = 'revenue_engine'::regnamespace AND t.prosrc = 're_tenant_form'
 ORDER BY t.oid::regprocedure::text;
-- Functions the application may call without a tenant form: none reads or writes tenant rows.
SELECT p.oid::regprocedure AS no_tenant_form FROM pg_proc p
 WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.prosrc <> 're_tenant_form'
   AND has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE')
   AND NOT EXISTS (SELECT 1 FROM pg_proc t WHERE t.pronamespace = p.pronamespace AND t.proname = p.proname
                                              AND t.prosrc = 're_tenant_form')
 ORDER BY p.oid::regprocedure::text;

-- The function a call resolves to (from the dependencies of a view of it),
-- or its error.
CREATE FUNCTION resolves_to(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    f regprocedure;
BEGIN
    EXECUTE 'CREATE TEMP VIEW resolution AS SELECT * FROM ' || call;
    SELECT d.refobjid::regprocedure INTO STRICT f
      FROM pg_depend d JOIN pg_rewrite w ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
      JOIN pg_proc p ON p.oid = d.refobjid AND d.refclassid = 'pg_proc'::regclass
     WHERE w.ev_class = 'resolution'::regclass AND p.pronamespace = 'revenue_engine'::regnamespace;
    DROP VIEW resolution;
    RETURN CASE WHEN (SELECT prosrc FROM pg_proc WHERE oid = f) = 're_tenant_form'
                THEN 'tenant form' ELSE 'plain form' END;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
-- Every call shape of every plain form that has a tenant form: positional
-- and named, every number of arguments its defaults allow, with untyped
-- NULLs (an untyped literal would prefer a text argument, the tenant, if a
-- tenant form could take that many arguments) and with typed arguments.
WITH f AS (
    SELECT p.proname, p.pronargs, p.pronargdefaults, p.proargtypes, p.proargnames
      FROM pg_proc p
     WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.prosrc <> 're_tenant_form'
       AND EXISTS (SELECT 1 FROM pg_proc t WHERE t.pronamespace = p.pronamespace AND t.proname = p.proname
                                            AND t.prosrc = 're_tenant_form')
), calls AS (
    SELECT f.proname, n, notation,
           format('revenue_engine.%I(%s)', f.proname,
                  (SELECT coalesce(string_agg(CASE notation
                                         WHEN 'positional' THEN 'NULL'
                                         WHEN 'typed' THEN 'NULL::' || format_type(f.proargtypes[i - 1], NULL)
                                         ELSE quote_ident(f.proargnames[i]) || ' => NULL' END, ', ' ORDER BY i), '')
                     FROM generate_series(1, n) i)) AS call
      FROM f, generate_series(f.pronargs - f.pronargdefaults::int, f.pronargs) n,
           unnest(ARRAY['positional', 'typed', 'named']) notation
)
SELECT proname, notation, string_agg(n || ': ' || resolves_to(call), '; ' ORDER BY n) AS resolves
  FROM calls GROUP BY 1, 2 ORDER BY 1, 2;
-- With the tenant first and every argument, the tenant form.
SELECT resolves_to($$revenue_engine.track_daily_usage('t', NULL, NULL, NULL, NULL)$$) AS untyped,
       resolves_to($$revenue_engine.track_daily_usage(tenant => 't', user_id => NULL, usage_type => 'reply', count => 1, usage_date => NULL)$$) AS named,
       resolves_to($$revenue_engine.track_daily_usage(tenant => 't', user_id => NULL, usage_type => 'reply')$$) AS named_missing;
-- A call of the plain form with untyped literals acts for the setting's tenant, as before.
SELECT revenue_engine.track_daily_usage('00000000-0000-0000-0000-000000000777', 'reply', '2')->'lifetime_total' AS total;
SELECT tenant_id, total FROM revenue_engine.lifetime_usage WHERE user_id = '00000000-0000-0000-0000-000000000777';

-- Roles: re_fa unbound (shared), re_fb bound to forms_b.
CREATE ROLE re_fa LOGIN IN ROLE revenue_engine_user;
CREATE ROLE re_fb LOGIN IN ROLE revenue_engine_user;
SELECT revenue_engine.bind_role('re_fb', 'forms_b');
-- Tenant forms_a's channel and endpoint (admin functions: the setting), disabled.
SET revenue_engine.tenant = 'forms_a';
SELECT revenue_engine.create_endpoint('fa_hook', 'https://hooks.example.com/fa', enabled => false) > 0 AS endpoint;
SELECT revenue_engine.create_channel('fa_wa', 'https://graph.example.com/v17.0/1/messages',
         message_id_path => '{messages,0,id}', enabled => false) > 0 AS channel;
SELECT revenue_engine.set_channel_status_source('fa_wa', webhook_kind => 'standard_webhooks',
         webhook_secret => 'whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=') IS NOT NULL AS status_source;
RESET revenue_engine.tenant;
SELECT revenue_engine.register_event_type('plan_changed') IS NOT NULL AS event_type;

-- The unbound role, with the setting naming forms_x: every tenant form acts
-- for the tenant it names, and the setting is the same after each call.
\c - re_fa
SET revenue_engine.tenant = 'forms_x';
SELECT revenue_engine.track_daily_usage('forms_a', u(1901), 'reply', 3, '2026-11-19')->'lifetime_total' AS total;
SELECT tenant_id, timezone FROM revenue_engine.set_user_profile('forms_a', u(1901), 'Asia/Tokyo', '{"reply": 4}');
SELECT revenue_engine.track_daily_usage('forms_a', u(1901), 'reply', 1, NULL)->>'timezone' AS profile_read;
SELECT revenue_engine.enqueue_event('forms_a', u(1901), 'plan_changed', '{"plan": "pro"}') IS NOT NULL AS event;
SELECT revenue_engine.enqueue_send('forms_a', 'fa_wa', '{"to": "+15559991001"}', 'fa-1', NULL, NULL, '{}') > 0 AS send;
SELECT recipient_count, rejected FROM revenue_engine.create_blast('forms_a', 'fa_wa', 'fa_promo',
         '["+15559991002", "+15559991003"]', NULL, 'hello', NULL, '{}', '2030-01-01', 0, 'error');
SELECT revenue_engine.current_tenant();
-- Without the tenant argument, the setting's tenant: forms_a's rows are not found.
SELECT revenue_engine.enqueue_send('fa_wa', '{"to": "+15559991001"}');
\c - postgres
SET TimeZone = 'UTC';
-- The worker's part: the blast's sends sent, their message ids known.
UPDATE revenue_engine.sends SET status = 'sending' WHERE tenant_id = 'forms_a' AND blast_id IS NOT NULL;
UPDATE revenue_engine.sends s SET status = 'sent', sent_at = now(),
       provider_message_id = 'wamid.FA' || right(r.phone, 1)
  FROM revenue_engine.blast_recipients r
 WHERE s.tenant_id = 'forms_a' AND r.tenant_id = s.tenant_id AND r.id = s.recipient_id;
UPDATE revenue_engine.sends SET status = 'failed' WHERE tenant_id = 'forms_a' AND idempotency_key = 'fa-1';
UPDATE revenue_engine.deliveries SET status = 'dead' WHERE tenant_id = 'forms_a';
SELECT id AS fa_blast FROM revenue_engine.blasts WHERE tenant_id = 'forms_a' \gset
\c - re_fa
SET revenue_engine.tenant = 'forms_x';
SELECT revenue_engine.record_message_status('forms_a', 'wamid.FA2', 'delivered', NULL, 'manual', NULL);
SELECT revenue_engine.record_message_status('forms_a', 'wamid.FA3', 'read', '2026-11-20 11:00+00', 'manual', NULL);
SELECT revenue_engine.record_inbound_message('forms_a', '+15559991003', '2026-11-20 11:10+00', 'manual', NULL) IS NOT NULL AS replied;
SELECT revenue_engine.mark_closed('forms_a', '+15559991003', 100, '2026-11-20 11:20+00', NULL, NULL) IS NOT NULL AS closed;
SELECT * FROM revenue_engine.ingest_status_webhook('forms_a', 'fa_wa', '{}', '{}');
SELECT tag, total, delivered, read, replied, closed FROM revenue_engine.funnel_by_tag('forms_a', NULL, NULL, NULL);
SELECT from_stage, to_stage, recipients FROM revenue_engine.blast_stage_times('forms_a', :fa_blast) ORDER BY 1, 2;
-- The same without the tenant: the setting's tenant has none of it.
SELECT count(*) FROM revenue_engine.funnel_by_tag();
SELECT count(*) FROM revenue_engine.blast_stage_times(:fa_blast);
-- Owner-only forms are refused to the application like their plain forms.
SELECT revenue_engine.redrive('forms_a', NULL, '-infinity', 'infinity');
SELECT revenue_engine.backfill_usage('forms_a', 'SELECT 1', false);
-- The setting's tenant sees nothing of it; nothing was left behind.
SELECT revenue_engine.current_tenant(), current_setting('revenue_engine.tenant');
SELECT (SELECT count(*) FROM revenue_engine.lifetime_usage) AS usage,
       (SELECT count(*) FROM revenue_engine.webhook_events) AS events,
       (SELECT count(*) FROM revenue_engine.sends) AS sends,
       (SELECT count(*) FROM revenue_engine.blast_recipients) AS recipients;
-- An error inside a savepoint leaves nothing either.
BEGIN;
SAVEPOINT s;
SELECT revenue_engine.track_daily_usage('forms_a', NULL, 'reply', 1, NULL);
ROLLBACK TO s;
SELECT revenue_engine.current_tenant();
SELECT count(*) FROM revenue_engine.lifetime_usage;
COMMIT;
-- Bad tenants: 22004, 22023, as the setting.
SELECT revenue_engine.track_daily_usage(NULL, u(1901), 'reply', 1, NULL);
SELECT revenue_engine.track_daily_usage('', u(1901), 'reply', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(repeat('t', 64), u(1901), 'reply', 1, NULL);
SELECT revenue_engine.funnel_by_tag(E'a\nb', NULL, NULL, NULL);
-- In a query over many rows, each call acts for its row's tenant.
SELECT t, revenue_engine.track_daily_usage(t, u(1902), 'reply', 1, NULL)->'lifetime_total' AS total
  FROM unnest(ARRAY['forms_a', 'forms_c', 'forms_a']) t;
RESET revenue_engine.tenant;

-- The owner: forms_a has the rows; the owner-only forms act for it.
\c - postgres
SET TimeZone = 'UTC';
SELECT revenue_engine.redrive('forms_a', 'fa_hook', '-infinity', 'infinity') AS redriven;
SELECT revenue_engine.redrive_sends('forms_a', 'fa_wa', '-infinity', 'infinity') AS redriven_sends;
SELECT revenue_engine.backfill_usage('forms_a',
         $$SELECT u(1903), 'reply', date '2026-11-10', 7$$, false)->'rows' AS backfilled;
SELECT tenant_id, user_id = u(1901) AS u1901, usage_type, total FROM revenue_engine.lifetime_usage
 WHERE tenant_id LIKE 'forms_%' ORDER BY 1, 2 DESC, 3;
SELECT tenant_id, timezone, daily_goals FROM revenue_engine.user_profiles WHERE tenant_id LIKE 'forms_%';
SELECT tenant_id, event_type, status FROM revenue_engine.webhook_events
 WHERE tenant_id LIKE 'forms_%' AND event_type = 'plan_changed';
SELECT tenant_id, status, idempotency_key FROM revenue_engine.sends WHERE tenant_id LIKE 'forms_%' ORDER BY 3, 2;
SELECT tenant_id, phone, status FROM revenue_engine.blast_recipients WHERE tenant_id LIKE 'forms_%' ORDER BY 2;
SELECT count(*) AS other_tenants FROM revenue_engine.lifetime_usage WHERE tenant_id IN ('forms_x', 'default')
   AND user_id IN (u(1901), u(1902), u(1903));

-- The bound role: its own tenant by argument works; another is 42501 naming both.
\c - re_fb
SELECT revenue_engine.track_daily_usage('forms_b', u(1904), 'reply', 2, NULL)->'lifetime_total' AS total;
SELECT tenant_id FROM revenue_engine.lifetime_usage;
SELECT revenue_engine.track_daily_usage('forms_a', u(1904), 'reply', 2, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM revenue_engine.funnel_by_tag('forms_a', NULL, NULL, NULL);
SELECT revenue_engine.set_user_profile('forms_a', u(1901), 'UTC', NULL);
SELECT revenue_engine.enqueue_event('forms_a', u(1901), 'plan_changed', '{}');
SELECT revenue_engine.create_blast('forms_a', 'fa_wa', 'x', '["+15559991009"]', NULL, 'x', NULL, '{}', NULL, 0, 'error');
-- ... even with the setting naming its own tenant.  A tenant form does not
-- read the setting: one naming another tenant changes nothing when the
-- argument is the role's own tenant.
SET revenue_engine.tenant = 'forms_b';
SELECT revenue_engine.mark_closed('forms_a', '+15559991003', 1, NULL, NULL, NULL);
SET revenue_engine.tenant = 'forms_a';
SELECT revenue_engine.track_daily_usage('forms_b', u(1904), 'reply', 1, NULL)->'lifetime_total' AS total;
RESET revenue_engine.tenant;
\c - postgres
SELECT tenant_id, total FROM revenue_engine.lifetime_usage WHERE user_id = u(1904);

-- A bound login acting as an unbound role (SET ROLE, or a SECURITY DEFINER
-- function of one) stays bound; on Citus the coordinator checks the tenant
-- before planning (src/citus/citus.c), here the call does.  The function's
-- statement is called with a variable eight times: its plan becomes generic.
GRANT re_fa TO re_fb;
CREATE FUNCTION fa_tags(t text) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
    AS $$ BEGIN RETURN (SELECT count(*) FROM revenue_engine.funnel_by_tag(t, NULL, NULL, NULL)); END $$;
ALTER FUNCTION fa_tags(text) OWNER TO re_fa;
\c - re_fb
SELECT sum(fa_tags('forms_b' || repeat('', g))) AS tags FROM generate_series(1, 8) g;
SELECT sum(fa_tags('forms_a' || repeat('', g))) AS tags FROM generate_series(1, 8) g;
SET ROLE re_fa;
PREPARE fa_funnel(text) AS SELECT count(*) FROM revenue_engine.funnel_by_tag($1, NULL, NULL, NULL);
EXECUTE fa_funnel('forms_b');
EXECUTE fa_funnel('forms_a');
RESET ROLE;
PREPARE fa_funnel_const AS SELECT count(*) FROM revenue_engine.funnel_by_tag('forms_a', NULL, NULL, NULL);
SET ROLE re_fa;
EXECUTE fa_funnel_const;
\c - postgres
DROP FUNCTION fa_tags(text);
REVOKE re_fa FROM re_fb;

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
        EXECUTE format('DELETE FROM %s WHERE tenant_id LIKE ''forms\_%%''', t);
    END LOOP;
END
$$;
RESET session_replication_role;
DELETE FROM revenue_engine.lifetime_usage WHERE user_id = '00000000-0000-0000-0000-000000000777';
DELETE FROM revenue_engine.daily_usage WHERE user_id = '00000000-0000-0000-0000-000000000777';
DELETE FROM revenue_engine.milestones_reached WHERE user_id = '00000000-0000-0000-0000-000000000777';
DELETE FROM revenue_engine.webhook_events WHERE user_id = '00000000-0000-0000-0000-000000000777';
SELECT revenue_engine.unbind_role('re_fb');
DROP ROLE re_fa, re_fb;
DROP FUNCTION resolves_to(text);
