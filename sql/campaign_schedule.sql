-- revenue_engine.next_send_time: when a campaign step is due (issue 12, point 5).
-- Results are shown as UTC instants and as the contact's local wall-clock time.
SET timezone = 'UTC';
CREATE FUNCTION nst_local(at timestamptz, zone text) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT pg_catalog.to_char(at AT TIME ZONE zone, 'Dy YYYY-MM-DD HH24:MI:SS') $$;

-- Each unit.  Minutes and hours are elapsed time: 24 hours across the spring
-- forward in New York ends an hour later on the wall clock ...
SELECT unit, n, nst_local(revenue_engine.next_send_time(
           '2026-03-07 14:30 America/New_York', n, unit, 'America/New_York'), 'America/New_York')
  FROM (VALUES ('minutes', 0), ('minutes', 90), ('hours', 24), ('days', 1), ('weeks', 1),
               ('business_days', 1), ('business_days', 6)) v(unit, n);
-- ... days and weeks keep the wall clock (09:00 stays 09:00) in both directions.
SELECT zone, unit, n, nst_local(revenue_engine.next_send_time(start_at, n, unit, zone), zone)
  FROM (VALUES ('Europe/Berlin', '2026-03-28 09:00 Europe/Berlin'::timestamptz),
               ('Europe/Berlin', '2026-10-24 09:00 Europe/Berlin'),
               ('Australia/Sydney', '2026-04-04 09:00 Australia/Sydney'),
               ('Australia/Sydney', '2026-10-03 09:00 Australia/Sydney')) z(zone, start_at),
       (VALUES ('days', 1), ('weeks', 1), ('hours', 24)) v(unit, n)
 ORDER BY 1, start_at, 2;

-- DST gap: 02:30 does not exist on the day of the spring forward; the step is
-- due at the first instant after the gap (03:00 local, the transition).
SELECT zone, start_at, r AS due_utc, nst_local(r, zone) AS due_local
  FROM (VALUES ('America/New_York', '2026-03-07 02:30 America/New_York'::timestamptz),
               ('Europe/Berlin', '2026-03-28 02:30 Europe/Berlin'),
               ('Australia/Sydney', '2026-10-03 02:30 Australia/Sydney')) z(zone, start_at),
       LATERAL revenue_engine.next_send_time(start_at, 1, 'days', zone) r;
-- DST overlap: 01:30 (New York), 02:30 (Berlin, Sydney) happen twice on the
-- day of the fall back; the first occurrence (summer time) is taken.
SELECT zone, r AS due_utc, nst_local(r, zone) AS due_local,
       (r AT TIME ZONE zone) - (r AT TIME ZONE 'UTC') AS utc_offset
  FROM (VALUES ('America/New_York', '2026-10-31 01:30 America/New_York'::timestamptz),
               ('Europe/Berlin', '2026-10-24 02:30 Europe/Berlin'),
               ('Australia/Sydney', '2026-04-04 02:30 Australia/Sydney')) z(zone, start_at),
       LATERAL revenue_engine.next_send_time(start_at, 1, 'days', zone) r;
-- a local time of day to wait until, in the gap and in the overlap
SELECT nst_local(revenue_engine.next_send_time('2026-03-07 12:00 America/New_York', 0, 'minutes',
           'America/New_York', at_local_time => '02:30'), 'America/New_York') AS gap_at,
       revenue_engine.next_send_time('2026-10-31 12:00 America/New_York', 0, 'minutes',
           'America/New_York', at_local_time => '01:30') AS overlap_at_utc,
       nst_local(revenue_engine.next_send_time('2026-12-04 10:00 Europe/Berlin', 2, 'days',
           'Europe/Berlin', at_local_time => '09:00'), 'Europe/Berlin') AS two_days_at_9;

-- Send window crossing midnight (20:00-08:00): open at 23:00 and 07:59, closed
-- at 08:00 (the end is exclusive) and 10:00 -> 20:00 the same day.
SELECT s, nst_local(revenue_engine.next_send_time(('2026-12-04 ' || s)::timestamp AT TIME ZONE 'Europe/Berlin',
           0, 'minutes', 'Europe/Berlin', '20:00', '08:00'), 'Europe/Berlin')
  FROM unnest(ARRAY['23:00', '07:59', '08:00', '10:00', '20:00']) s;
-- a window of 09:00-17:00 after a delay that ends at 18:00 moves to 09:00 the
-- next day; quiet hours 12:00-14:00 inside the window move 12:30 to 14:00
SELECT nst_local(revenue_engine.next_send_time('2026-12-03 18:00 Europe/Berlin', 1, 'days',
           'Europe/Berlin', '09:00', '17:00'), 'Europe/Berlin') AS next_morning,
       nst_local(revenue_engine.next_send_time('2026-12-04 12:30 Europe/Berlin', 0, 'hours',
           'Europe/Berlin', '09:00', '17:00', '12:00', '14:00'), 'Europe/Berlin') AS after_quiet,
       nst_local(revenue_engine.next_send_time('2026-12-04 23:30 Europe/Berlin', 0, 'hours',
           'Europe/Berlin', quiet_start => '22:00', quiet_end => '07:00'), 'Europe/Berlin') AS quiet_only;
-- a window opening inside the DST gap opens at the end of the gap; one lying
-- wholly in the gap is skipped that day
SELECT nst_local(revenue_engine.next_send_time('2026-03-29 01:00 Europe/Berlin', 0, 'minutes',
           'Europe/Berlin', '02:15', '05:00'), 'Europe/Berlin') AS opens_after_gap,
       nst_local(revenue_engine.next_send_time('2026-03-29 01:00 Europe/Berlin', 0, 'minutes',
           'Europe/Berlin', '02:15', '02:45'), 'Europe/Berlin') AS skipped_day;
-- closed window after the fall back: 01:40 EDT is closed for 20:00-01:30, but
-- 01:00 EST (the hour repeated) is open again
SELECT revenue_engine.next_send_time('2026-11-01 05:40+00', 0, 'minutes',
           'America/New_York', '20:00', '01:30') AS reopens_in_repeated_hour;

-- Business days skip Saturdays, Sundays and holidays: Friday + 1 is Monday, or
-- Tuesday when Monday is a holiday; from a Saturday, 1 is Monday; 10 from
-- Monday 2026-12-21 over Christmas and New Year.
SELECT start_at, n, holidays, nst_local(revenue_engine.next_send_time(start_at, n, 'business_days',
           'Europe/Berlin', holidays => holidays), 'Europe/Berlin')
  FROM (VALUES ('2026-12-04 18:00 Europe/Berlin'::timestamptz, 1, NULL::date[]),
               ('2026-12-04 18:00 Europe/Berlin', 1, '{2026-12-07}'),
               ('2026-12-05 10:00 Europe/Berlin', 1, '{}'),
               ('2026-12-21 10:00 Europe/Berlin', 10, '{2026-12-25,2026-12-24,2026-12-31,2027-01-01,2026-12-26,2026-12-25}'),
               ('2026-12-21 10:00 Europe/Berlin', 50, '{2026-12-25,2026-12-24,2026-12-31,2027-01-01}')) v(start_at, n, holidays);
-- a window on a Friday evening with a business-day delay moves to Monday
SELECT nst_local(revenue_engine.next_send_time('2026-12-03 18:00 Europe/Berlin', 1, 'business_days',
           'Europe/Berlin', '09:00', '17:00'), 'Europe/Berlin') AS friday_evening_to_monday;

-- A NULL time zone uses the fallback (default UTC), not the session's TimeZone.
SET timezone = 'Asia/Tokyo';
SELECT revenue_engine.next_send_time('2026-12-04 10:00+00', 1, 'days', NULL, '09:00', '17:00')
       AT TIME ZONE 'UTC' AS utc_fallback,
       revenue_engine.next_send_time('2026-12-04 10:00+00', 1, 'days', NULL, '09:00', '17:00',
                                     fallback_timezone => 'America/New_York') AT TIME ZONE 'UTC' AS ny_fallback;
SET timezone = 'UTC';

-- Bad input: SQLSTATE and the bad value.
CREATE FUNCTION nst_error(call text) RETURNS text LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE 'SELECT revenue_engine.next_send_time(' || call || ')';
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
SELECT call, nst_error(call)
  FROM unnest(ARRAY[
    $$'2026-12-04 10:00', -1, 'days'$$,
    $$'2026-12-04 10:00', 1, 'fortnights'$$,
    $$'2026-12-04 10:00', 1, 'days', 'Mars/Olympus_Mons'$$,
    $$'2026-12-04 10:00', 1, 'days', 'EST5EDT,M3.2.0,M11.1.0'$$,
    $$'2026-12-04 10:00', 1, 'days', NULL, fallback_timezone => 'Nowhere'$$,
    $$'2026-12-04 10:00', 1, 'days', 'UTC', '10:00', '10:00'$$,
    $$'2026-12-04 10:00', 1, 'days', 'UTC', '00:00', '24:00'$$,
    $$'2026-12-04 10:00', 1, 'days', 'UTC', quiet_start => '22:00', quiet_end => '22:00'$$,
    $$'2026-12-04 10:00', 1, 'days', 'UTC', '09:00', '17:00', '08:00', '18:00'$$,
    $$'2026-12-04 10:00', 1, 'days', 'UTC', '10:00', NULL$$,
    $$'2026-12-04 10:00', 1, 'days', 'UTC', quiet_end => '07:00'$$,
    $$'2026-12-04 10:00', 1, 'business_days', 'UTC', holidays => '{2026-12-07,NULL}'$$,
    $$'infinity', 1, 'days'$$,
    $$'294270-01-01 00:00', 2147483647, 'days'$$,
    $$'294270-01-01 00:00', 2147483647, 'business_days'$$,
    $$'294270-01-01 00:00', 2147483647, 'minutes'$$,
    $$NULL, 1, 'days'$$,
    $$'2026-12-04 10:00', NULL, 'days'$$,
    $$'2026-12-04 10:00', 1, NULL$$,
    $$'2026-12-04 10:00', 1, 'days', NULL, fallback_timezone => NULL$$,
    $$'2026-12-04 10:00', 0, 'days', 'UTC', '09:00', '17:00', '12:00', '09:00'$$]) call;
DROP FUNCTION nst_error(text);

-- Callable by the application role; volatility as pg_catalog.timezone's.
SELECT has_function_privilege('revenue_engine_user',
         'revenue_engine.next_send_time(timestamptz, integer, text, text, time, time, time, time, date[], time, text)',
         'EXECUTE') AS app_may_call,
       provolatile, proisstrict
  FROM pg_proc WHERE proname = 'next_send_time';
DROP FUNCTION nst_local(timestamptz, text);
