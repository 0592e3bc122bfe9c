-- One database for every pg_regress file: the extension and a few helpers.
CREATE EXTENSION revenue_engine;
SELECT extname, extversion, nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'revenue_engine';

-- Test user ids: u(1) = 00000000-0000-0000-0000-000000000001, ...
CREATE FUNCTION u(n integer) RETURNS uuid LANGUAGE sql IMMUTABLE
AS $$ SELECT lpad(to_hex(n), 32, '0')::uuid $$;

-- Events of a user, without ids and timestamps.
CREATE FUNCTION events_of(uid uuid)
RETURNS TABLE (event_type text, event_data jsonb)
LANGUAGE sql
AS $$
  SELECT event_type, event_data - 'first_used_at'
    FROM revenue_engine.webhook_events
   WHERE user_id = uid
   ORDER BY created_at, event_type, event_data->>'milestone_value', event_data::text
$$;

-- The instant taken as now is pinned so that "today" is known.
-- (in the database the tests run in: regression, or contrib_regression under
-- make installcheck)
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET revenue_engine.clock_override = %L',
                   current_database(), '2026-11-20 12:00:00+00');
END $$;
