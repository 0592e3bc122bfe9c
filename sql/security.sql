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

DROP SCHEMA evil CASCADE;
DROP ROLE re_stranger;
REVOKE revenue_engine_user FROM re_app;
DROP OWNED BY re_app;
DROP ROLE re_app;
