-- Permissions: the application role, no PUBLIC access, owner-run statements with a pinned path.
\c
SELECT revenue_engine.register_event_type('plan_changed');
CREATE ROLE re_app LOGIN;
CREATE ROLE re_stranger LOGIN;
GRANT revenue_engine_user TO re_app;
CREATE SCHEMA evil AUTHORIZATION re_app;

-- Nothing in the schema is executable or readable by PUBLIC.
SELECT p.oid::regprocedure AS function
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'revenue_engine'::regnamespace AND a.grantee = 0;
SELECT c.relname
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'revenue_engine'::regnamespace AND a.grantee = 0;
-- No function is STRICT (a NULL is an error, never a silent no-op) ...
SELECT proname FROM pg_proc WHERE pronamespace = 'revenue_engine'::regnamespace AND proisstrict;
-- ... and every SECURITY DEFINER function pins search_path.
SELECT proname FROM pg_proc
 WHERE pronamespace = 'revenue_engine'::regnamespace AND prosecdef
   AND NOT coalesce(array_to_string(proconfig, ',') LIKE '%search_path=%', false);

SET ROLE re_stranger;
SELECT revenue_engine.track_daily_usage(u(60), 'reply');
RESET ROLE;

SET ROLE re_app;
SELECT r->'lifetime_total' FROM revenue_engine.track_daily_usage(u(60), 'reply', 3, '2026-11-01') r;
SELECT usage_type, lifetime_total FROM revenue_engine.user_lifetime_stats WHERE user_id = u(60);
SELECT timezone FROM revenue_engine.set_user_profile(u(60), timezone => 'Europe/Berlin');
-- The tables are written only through the functions.
INSERT INTO revenue_engine.lifetime_usage VALUES ('default', u(61), 'reply', 1000, 0, now(), now());
UPDATE revenue_engine.daily_usage SET count = 0;
DELETE FROM revenue_engine.webhook_events;
SELECT revenue_engine.backfill_usage($$SELECT u(61), 'reply', date '2026-11-01', 5$$);
-- Superuser-only settings.
SET revenue_engine.user_payload_function = 'evil.payload';
SET revenue_engine.clock_override = '2030-01-01';

-- A hostile search_path cannot hijack a call: an operator, a function and a
-- table named like the ones the extension uses, in a schema searched first.
CREATE TABLE evil.hijacked (what text);
CREATE FUNCTION evil.int8pl(bigint, bigint) RETURNS bigint LANGUAGE sql
AS $$ INSERT INTO evil.hijacked VALUES ('operator +'); SELECT 0::bigint $$;
CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.int8pl);
CREATE FUNCTION evil.coalesce_tz(text) RETURNS text LANGUAGE sql AS $$ SELECT 'Asia/Tokyo' $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
AS $$ INSERT INTO evil.hijacked VALUES ('now()'); SELECT timestamptz '2000-01-01' $$;
CREATE FUNCTION evil.jsonb_strip_nulls(jsonb) RETURNS jsonb LANGUAGE sql
AS $$ INSERT INTO evil.hijacked VALUES ('jsonb_strip_nulls'); SELECT '{"reply": 1}'::jsonb $$;
CREATE TABLE evil.lifetime_usage (LIKE revenue_engine.lifetime_usage);
-- A new session whose first call (the one that prepares the plans) is hostile.
\c - re_app
CREATE TEMP TABLE daily_usage (LIKE revenue_engine.daily_usage);
SET search_path = evil, pg_temp, pg_catalog;
SELECT 2::bigint + 2::bigint AS "hijacked here";
SELECT r->'lifetime_total' AS total, r->'current_count' AS day_count
  FROM revenue_engine.track_daily_usage(public.u(60), 'reply', 4, '2026-11-01') r;
SELECT r->'lifetime_total' AS total FROM revenue_engine.track_daily_usage(public.u(60), 'reply', 1, '2026-11-02') r;
SELECT daily_goals FROM revenue_engine.set_user_profile(public.u(60), daily_goals => '{"reply": 7}');
SELECT revenue_engine.enqueue_event(public.u(60), 'plan_changed', '{}') IS NOT NULL AS queued;
DELETE FROM evil.hijacked WHERE what = 'operator +';   -- the one from "hijacked here"
SELECT what FROM evil.hijacked;
SELECT count(*) FROM evil.lifetime_usage;
SELECT count(*) FROM pg_temp.daily_usage;
RESET search_path;
DROP TABLE pg_temp.daily_usage;
\c - postgres
SELECT total FROM revenue_engine.lifetime_usage WHERE user_id = u(60);
SELECT usage_date, count FROM revenue_engine.daily_usage WHERE user_id = u(60) ORDER BY 1;

-- ---------------------------------------------------------------------------
-- No borrowed rights.  Each attack as the application role (granted
-- revenue_engine_user) would run it; each attacker function records who ran
-- it and tries to make re_app a superuser.  Afterwards: re_app is no
-- superuser, and nothing of the attacker's ran as anyone but re_app (the
-- notices show who ran what, even in a statement that failed).
-- ---------------------------------------------------------------------------
\c - postgres
SET revenue_engine.tenant = 'sec';
SELECT revenue_engine.create_channel('sec_wa', 'https://graph.example.com/v19.0/9/messages',
         body_template => '{"messaging_product": "whatsapp"}', enabled => false) > 0 AS created;
RESET revenue_engine.tenant;
-- The database owner (here re_dbo) may create functions in schema public.
CREATE ROLE re_dbo LOGIN;
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I OWNER TO re_dbo', current_database()); END $$;
-- A payload function of the application's, that re_app may not execute yet.
CREATE SCHEMA payfn;
GRANT USAGE ON SCHEMA payfn TO PUBLIC;
CREATE TABLE payfn.calls (who text, user_id uuid);
GRANT INSERT ON payfn.calls TO PUBLIC;
CREATE FUNCTION payfn.payload(uid uuid) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO payfn.calls VALUES (current_user, uid);
    RETURN jsonb_build_object('id', uid);
END $$;
REVOKE ALL ON FUNCTION payfn.payload(uuid) FROM PUBLIC;

\c - re_app
CREATE TABLE evil.ran (what text, who text);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT INSERT ON evil.ran TO PUBLIC;
CREATE FUNCTION evil.grab(what text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.ran VALUES (what, current_user);
    -- seen even when the statement fails later and takes the row with it
    RAISE NOTICE '% ran as %', what, current_user;
    BEGIN
        ALTER ROLE re_app SUPERUSER;
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN '+14155550199';
END $$;

SET revenue_engine.tenant = 'sec';
-- 1. A composite type in pg_temp whose cast to text is the attacker's function.
CREATE TYPE pg_temp.phone_box AS (p text);
CREATE FUNCTION pg_temp.box_text(b pg_temp.phone_box) RETURNS text LANGUAGE sql
AS $$ SELECT evil.grab('cast phone_box AS text') $$;
CREATE CAST (pg_temp.phone_box AS text) WITH FUNCTION pg_temp.box_text(pg_temp.phone_box);
SELECT recipient_count, duplicates, rejected FROM revenue_engine.create_blast('sec_wa', 'sec_cast',
         recipients_query => 'SELECT ROW(''+14155550101'')::pg_temp.phone_box AS phone',
         message => 'Hi', scheduled_for => '2030-01-01', on_invalid => 'skip');
-- the value crossed as its type's output text: the cast never ran
SELECT phone FROM revenue_engine.blast_recipients r JOIN revenue_engine.blasts b
    ON b.tenant_id = r.tenant_id AND b.id = r.blast_id WHERE b.tag = 'sec_cast';
-- a cast the caller's query applies itself runs as the caller
SELECT recipient_count FROM revenue_engine.create_blast('sec_wa', 'sec_cast_own',
         recipients_query => 'SELECT ROW(''x'')::pg_temp.phone_box::text AS phone',
         message => 'Hi', scheduled_for => '2030-01-01');

-- 2. The attacker's operators and functions first on the search_path.
CREATE FUNCTION evil.text_eq(a text, b text) RETURNS boolean LANGUAGE sql
AS $$ SELECT evil.grab('operator =') IS NOT NULL AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.jsonb_cat(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql
AS $$ SELECT CASE WHEN evil.grab('operator ||') IS NOT NULL THEN a OPERATOR(pg_catalog.||) b END $$;
CREATE OPERATOR evil.|| (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.jsonb_cat);
CREATE FUNCTION evil.jsonb_typeof(j jsonb) RETURNS text LANGUAGE sql
AS $$ SELECT evil.grab('jsonb_typeof') || pg_catalog.jsonb_typeof(j) $$;
CREATE FUNCTION evil.length(t text) RETURNS integer LANGUAGE sql
AS $$ SELECT pg_catalog.length(evil.grab('length')) $$;
SET search_path = evil, pg_catalog;
SELECT recipient_count FROM revenue_engine.create_blast('sec_wa', 'sec_operator',
         recipients => '["+14155550102", {"phone": "+14155550103", "name": "Bo"}]',
         message => 'Hi {{name}}', scheduled_for => '2030-01-01');
SELECT revenue_engine.enqueue_send('sec_wa', '{"text": "hi"}', scheduled_for => '2030-01-01') > 0 AS queued;
SELECT timezone FROM revenue_engine.set_user_profile(public.u(62), timezone => 'UTC');
RESET search_path;

-- 3. Temporary views and tables named like the old internal relations and
--    like the extension's tables.
CREATE TEMP VIEW re_blast_raw AS SELECT evil.grab('temp view re_blast_raw') AS phone;
-- the old attack: the owner's half called directly, reading pg_temp.re_blast_raw
SELECT * FROM revenue_engine.blast_apply('sec_wa', 'sec_view', NULL, true, 'Hi', NULL, '{}', NULL, 0, 'error');
CREATE TEMP VIEW re_blast_in AS
    SELECT 1 AS position, evil.grab('temp view re_blast_in') AS input, NULL::text AS name, NULL::text AS contact_id;
CREATE TEMP VIEW re_blast_ok AS SELECT 1 AS position, evil.grab('temp view re_blast_ok') AS phone;
CREATE TEMP VIEW re_backfill_src AS SELECT evil.grab('temp view re_backfill_src') AS user_id;
CREATE TEMP VIEW channels AS SELECT 1::bigint AS id, evil.grab('temp view channels') AS name;
CREATE TEMP VIEW usage_types AS SELECT evil.grab('temp view usage_types') AS usage_type;
CREATE TEMP TABLE blasts (LIKE revenue_engine.blasts);
CREATE TEMP TABLE blast_recipients (LIKE revenue_engine.blast_recipients);
CREATE TEMP TABLE sends (LIKE revenue_engine.sends);
CREATE TEMP TABLE daily_usage (LIKE revenue_engine.daily_usage);
-- the owner's half of today: not executable by the application role
SELECT * FROM revenue_engine.blast_apply('sec_wa', 'sec_view', '["+14155550104"]', NULL, NULL, NULL,
                                         'Hi', NULL, '{}', NULL, 0, 'error');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.backfill_apply(ARRAY[public.u(62)], '{reply}', '{2026-11-01}', '{1}', false, NULL, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.user_payload(public.u(62));
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.apply_parked_statuses();
\echo :LAST_ERROR_SQLSTATE
-- create_blast works beside them, and neither reads nor writes them
SELECT recipient_count FROM revenue_engine.create_blast('sec_wa', 'sec_view',
         recipients_query => $$SELECT '+14155550104' AS phone, 'Cy' AS name$$,
         message => 'Hi {{name}}', scheduled_for => '2030-01-01');
SELECT r.phone, r.name FROM revenue_engine.blast_recipients r JOIN revenue_engine.blasts b
    ON b.tenant_id = r.tenant_id AND b.id = r.blast_id WHERE b.tag = 'sec_view';
SELECT (SELECT count(*) FROM pg_temp.blasts) AS temp_blasts,
       (SELECT count(*) FROM pg_temp.blast_recipients) AS temp_recipients,
       (SELECT count(*) FROM pg_temp.sends) AS temp_sends;
RESET revenue_engine.tenant;
DISCARD TEMP;

-- 4. Functions the database owner plants in schema public, exact matches
--    for calls an owner path makes.
\c - re_dbo
CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE sql
AS $$ SELECT evil.grab('public.unnest(text[])') $$;
CREATE FUNCTION public.unnest(a uuid[]) RETURNS SETOF uuid LANGUAGE sql
AS $$ SELECT evil.grab('public.unnest(uuid[])')::uuid $$;
CREATE FUNCTION public.cardinality(a text[]) RETURNS integer LANGUAGE sql
AS $$ SELECT pg_catalog.length(evil.grab('public.cardinality(text[])')) $$;
CREATE FUNCTION public.cardinality(a uuid[]) RETURNS integer LANGUAGE sql
AS $$ SELECT pg_catalog.length(evil.grab('public.cardinality(uuid[])')) $$;
CREATE FUNCTION public.array_agg(a text) RETURNS text[] LANGUAGE sql
AS $$ SELECT ARRAY[evil.grab('public.array_agg(text)')] $$;
CREATE FUNCTION public.gen_random_uuid() RETURNS uuid LANGUAGE sql
AS $$ SELECT pg_catalog.md5(evil.grab('public.gen_random_uuid()'))::uuid $$;
\c - re_app
SET revenue_engine.tenant = 'sec';
SET search_path = public, pg_catalog;
SELECT recipient_count FROM revenue_engine.create_blast('sec_wa', 'sec_public',
         recipients => '["+14155550105"]', message => 'Hi', scheduled_for => '2030-01-01');
SELECT recipient_count FROM revenue_engine.create_blast('sec_wa', 'sec_public_query',
         recipients_query => $$SELECT '+14155550106'$$, message => 'Hi', scheduled_for => '2030-01-01');
SELECT r->'lifetime_total' AS total FROM revenue_engine.track_daily_usage(public.u(63), 'reply') r;
RESET search_path;
RESET revenue_engine.tenant;

-- 5. The user payload function: checked for EXECUTE, run as the calling role.
\c - postgres
SET revenue_engine.user_payload_function = 'payfn.payload';
SET SESSION AUTHORIZATION re_app;
SET revenue_engine.tenant = 'sec';
SELECT revenue_engine.track_daily_usage(u(64), 'reply');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.enqueue_event(u(64), 'plan_changed', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
GRANT EXECUTE ON FUNCTION payfn.payload(uuid) TO re_app;
SET SESSION AUTHORIZATION re_app;
SET revenue_engine.tenant = 'sec';
SELECT r->'milestones' AS crossed FROM revenue_engine.track_daily_usage(u(64), 'reply') r;
SELECT revenue_engine.enqueue_event(u(64), 'plan_changed', '{}') IS NOT NULL AS queued;
SELECT event_type, user_data FROM revenue_engine.webhook_events
 WHERE tenant_id = 'sec' AND user_id = u(64) ORDER BY event_type;
RESET SESSION AUTHORIZATION;

-- 6. backfill_usage, granted to re_app here: a hostile query (the attacker's
--    type, cast and function) runs as re_app; with emit_events the payload
--    function runs as re_app, and without EXECUTE it is refused.
GRANT EXECUTE ON FUNCTION revenue_engine.backfill_usage(text, boolean) TO re_app;
REVOKE EXECUTE ON FUNCTION payfn.payload(uuid) FROM re_app;
SET SESSION AUTHORIZATION re_app;
SET revenue_engine.tenant = 'sec';
CREATE TYPE pg_temp.day_box AS (d date);
CREATE FUNCTION pg_temp.box_date(b pg_temp.day_box) RETURNS date LANGUAGE sql
AS $$ SELECT CASE WHEN evil.grab('cast day_box AS date') IS NOT NULL THEN ($1).d END $$;
CREATE CAST (pg_temp.day_box AS date) WITH FUNCTION pg_temp.box_date(pg_temp.day_box);
SELECT revenue_engine.backfill_usage(
    $$SELECT u(65), 'reply', ROW(date '2026-11-01')::pg_temp.day_box, 2$$, emit_events => true);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS written FROM revenue_engine.lifetime_usage WHERE tenant_id = 'sec' AND user_id = u(65);
RESET SESSION AUTHORIZATION;
GRANT EXECUTE ON FUNCTION payfn.payload(uuid) TO re_app;
SET SESSION AUTHORIZATION re_app;
SET revenue_engine.tenant = 'sec';
SET search_path = public, pg_catalog;     -- the planted functions of 4. first
SELECT revenue_engine.backfill_usage(
    $$SELECT u(65), 'reply', ROW(date '2026-11-01')::pg_temp.day_box, 2
      UNION ALL SELECT CASE WHEN evil.grab('backfill query') IS NOT NULL THEN u(66) END, 'reply',
                       ROW(date '2026-11-02')::pg_temp.day_box, 1$$,
    emit_events => true);
SELECT user_id = u(65) AS u65, event_type, user_data->'id' = to_jsonb(user_id) AS user_data_ok
  FROM revenue_engine.webhook_events
 WHERE tenant_id = 'sec' AND user_id IN (u(65), u(66)) ORDER BY 1 DESC, 2;
RESET search_path;
DISCARD TEMP;
RESET SESSION AUTHORIZATION;
RESET revenue_engine.user_payload_function;

-- Nothing gained: re_app is no superuser, nothing of the attacker's ran as
-- another role, and the payload function ran as re_app only.
SELECT rolsuper FROM pg_roles WHERE rolname = 're_app';
SELECT what, who FROM evil.ran ORDER BY what, who;
SELECT count(*) AS ran_as_another_role FROM evil.ran WHERE who <> 're_app';
SELECT who, count(*) FROM payfn.calls GROUP BY who ORDER BY who;

-- Internal helpers are executable by nobody but the owner; every SECURITY
-- DEFINER function pins search_path to exactly pg_catalog, pg_temp.
SELECT p.oid::regprocedure AS executable_internal
  FROM pg_proc p
 WHERE p.pronamespace = 'revenue_engine'::regnamespace
   AND has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE')
   AND (p.prorettype = 'trigger'::regtype
        OR p.proname IN ('blast_apply', 'backfill_apply', 'user_payload', 'apply_parked_statuses',
                         'wake_worker', 'invalidate_cache'));
SELECT proname AS unpinned_definer FROM pg_proc
 WHERE pronamespace = 'revenue_engine'::regnamespace AND prosecdef
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (proconfig), false);

-- Clean up: the blasts, sends, events and usage of tenant sec, and the roles.
DELETE FROM revenue_engine.sends WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.blasts WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.channels WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.webhook_events WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.milestones_reached WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.daily_usage WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.lifetime_usage WHERE tenant_id = 'sec';
DELETE FROM revenue_engine.user_profiles WHERE user_id = u(62);
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I OWNER TO postgres', current_database()); END $$;
DROP FUNCTION public.unnest(text[]), public.unnest(uuid[]), public.cardinality(text[]),
    public.cardinality(uuid[]), public.array_agg(text), public.gen_random_uuid();
DROP ROLE re_dbo;
DROP SCHEMA payfn CASCADE;
DROP SCHEMA evil CASCADE;
DROP ROLE re_stranger;
REVOKE revenue_engine_user FROM re_app;
DROP OWNED BY re_app;
DROP ROLE re_app;
