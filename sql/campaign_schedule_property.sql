-- Property test of revenue_engine.next_send_time (issue 12): every zone of
-- pg_timezone_names, every UTC offset change from 2000 to 2037, several
-- delays, windows and quiet hours.  Each check prints its number of
-- violations (0) and, if any, the first failing case.
SET timezone = 'UTC';

-- 1. The transitions, found without the code under test: weekly samples of
--    each zone's UTC offset, then bisection to the second wherever two
--    consecutive samples differ.  (Two changes within one week would cancel
--    out; tzdata has none in 2000-2037 that this test relies on.)
CREATE TEMP TABLE tz_weeks AS
SELECT zone, lo, hi, off_before, off_after
  FROM (SELECT z.name AS zone, t AS lo, t + interval '7 days' AS hi,
               (t AT TIME ZONE z.name) - (t AT TIME ZONE 'UTC') AS off_before,
               ((t + interval '7 days') AT TIME ZONE z.name) - ((t + interval '7 days') AT TIME ZONE 'UTC') AS off_after
          FROM pg_timezone_names z,
               generate_series('2000-01-01 00:00+00'::timestamptz, '2037-12-31 00:00+00', '7 days') t) s
 WHERE off_before <> off_after;

CREATE TEMP TABLE tz_transitions AS
WITH RECURSIVE b(zone, lo, hi, off_before, off_after) AS (
    SELECT zone, lo, hi, off_before, off_after FROM tz_weeks
  UNION ALL
    SELECT zone,
           CASE WHEN (m AT TIME ZONE zone) - (m AT TIME ZONE 'UTC') = off_before THEN m ELSE lo END,
           CASE WHEN (m AT TIME ZONE zone) - (m AT TIME ZONE 'UTC') = off_before THEN hi ELSE m END,
           off_before, off_after
      FROM (SELECT b.*, lo + date_trunc('second', (hi - lo) / 2) AS m FROM b
             WHERE hi - lo > interval '1 second') x
)
-- hi: the first second with the new offset, i.e. the transition instant
SELECT zone, at, off_before, off_after,
       -- no other transition of the zone within 10 days
       coalesce(at - lag(at) OVER w > interval '10 days', true)
         AND coalesce(lead(at) OVER w - at > interval '10 days', true) AS isolated
  FROM (SELECT zone, hi AS at, off_before, off_after FROM b WHERE hi - lo = interval '1 second') x
WINDOW w AS (PARTITION BY zone ORDER BY at);

SELECT count(*) > 30000 AS many_transitions, count(DISTINCT zone) > 300 AS many_zones,
       count(*) FILTER (WHERE isolated) > 30000 AS most_isolated,
       count(*) FILTER (WHERE off_after > off_before) > 0 AS has_gaps,
       count(*) FILTER (WHERE off_after < off_before) > 0 AS has_overlaps
  FROM tz_transitions;

-- 2. Calendar delays across each transition: the wanted wall-clock time is
--    the local time just before the transition plus k minutes (inside the
--    gap, inside the repeated hour, around them), started 1 day, 2 days or
--    1 week earlier.  The expected instant is computed here from the two
--    offsets: the first occurrence when the time exists, the transition when
--    it falls in the gap.
CREATE TEMP TABLE day_cases AS
SELECT c.*, revenue_engine.next_send_time(c.start_at, c.n, c.unit, c.zone) AS got
  FROM (SELECT t.zone, t.at, t.off_before, t.off_after, t.isolated, u.unit, u.n, u.span, w.wall,
               (w.wall - u.span) AT TIME ZONE t.zone AS start_at,
               -- NULL when the wall time falls into the gap
               least(CASE WHEN (w.wall - t.off_before) AT TIME ZONE 'UTC' < t.at
                          THEN (w.wall - t.off_before) AT TIME ZONE 'UTC' END,
                     CASE WHEN (w.wall - t.off_after) AT TIME ZONE 'UTC' >= t.at
                          THEN (w.wall - t.off_after) AT TIME ZONE 'UTC' END) AS exact
          FROM tz_transitions t,
               (VALUES ('days', 1, interval '1 day'), ('days', 2, interval '2 days'),
                       ('weeks', 1, interval '7 days')) u(unit, n, span),
               LATERAL (SELECT (t.at AT TIME ZONE 'UTC') + t.off_before + k * interval '1 minute' AS wall
                          FROM unnest(ARRAY[-61, -30, -1, 0, 1, 15, 30, 59, 60, 90]) k) w) c
 -- the start itself must be an unambiguous wall time of a quiet day
 WHERE (c.start_at AT TIME ZONE c.zone) = c.wall - c.span
   AND c.isolated;

SELECT count(*) > 500000 AS enough_day_cases FROM day_cases;
SELECT 'calendar delay: not the expected instant' AS check, count(*) AS violations,
       min(format('%s %s %s %s from %s: got %s, want %s', zone, n, unit, wall, start_at, got,
                  coalesce(exact, at))) AS first_case
  FROM day_cases WHERE got IS DISTINCT FROM coalesce(exact, at)
UNION ALL
SELECT 'calendar delay: skipped or doubled day', count(*),
       min(format('%s %s %s from %s: got %s', zone, n, unit, start_at, got))
  FROM day_cases
 WHERE (got AT TIME ZONE zone)::date - (start_at AT TIME ZONE zone)::date <> extract(day FROM span)
   -- unless the wanted time fell into a gap that ends after midnight: the
   -- rest of that local day does not exist (America/Godthab, 2024-03-30 23:00)
   AND NOT (exact IS NULL AND got = at AND (at AT TIME ZONE zone)::date > wall::date)
UNION ALL
SELECT 'calendar delay: before the start', count(*),
       min(format('%s %s %s from %s: got %s', zone, n, unit, start_at, got))
  FROM day_cases WHERE got < start_at;

-- 3. Windows and quiet hours around each transition: a window straddling
--    the transition's local time, one opening at it, one crossing midnight,
--    quiet hours straddling it; starts a day before, just before, at and just
--    after the transition; delays of 0 minutes, 1 day and 1 business day.
CREATE TEMP TABLE window_cases AS
SELECT c.*,
       revenue_engine.next_send_time(c.start_at, c.n, c.unit, c.zone) AS base,
       revenue_engine.next_send_time(c.start_at, c.n, c.unit, c.zone, c.ws, c.we, c.qs, c.qe) AS got
  FROM (SELECT t.zone, t.at, t.off_after - t.off_before AS t_gap, s.start_at, d.unit, d.n,
               w.ws, w.we, w.qs, w.qe
          FROM tz_transitions t,
               LATERAL (SELECT ((t.at AT TIME ZONE 'UTC') + t.off_before)::time AS wb) b,
               LATERAL (VALUES (t.at - interval '25 hours'), (t.at - interval '30 minutes'),
                               (t.at), (t.at + interval '45 minutes')) s(start_at),
               (VALUES ('minutes', 0), ('days', 1), ('business_days', 1)) d(unit, n),
               LATERAL (VALUES (b.wb - interval '30 minutes', b.wb + interval '30 minutes', NULL::time, NULL::time),
                               (b.wb, b.wb + interval '2 hours', NULL, NULL),
                               ('20:00', '08:00', NULL, NULL),
                               (NULL, NULL, b.wb - interval '30 minutes', b.wb + interval '30 minutes'),
                               -- a fall back re-enters this window: open again at the transition
                               (CASE WHEN t.off_after < t.off_before THEN b.wb + (t.off_after - t.off_before) END,
                                CASE WHEN t.off_after < t.off_before THEN b.wb + (t.off_after - t.off_before) / 2 END,
                                NULL, NULL)
                       ) w(ws, we, qs, qe)
         WHERE w.ws IS NOT NULL OR w.qs IS NOT NULL) c;

-- whether a local time of day is inside [s, e) (crossing midnight when s > e)
CREATE FUNCTION pg_temp.in_span(l time, s time, e time) RETURNS boolean LANGUAGE sql IMMUTABLE
AS $$ SELECT CASE WHEN s < e THEN l >= s AND l < e ELSE l >= s OR l < e END $$;
CREATE FUNCTION pg_temp.may_send(at timestamptz, zone text, unit text, ws time, we time, qs time, qe time)
RETURNS boolean LANGUAGE sql IMMUTABLE
AS $$
  SELECT (ws IS NULL OR pg_temp.in_span((at AT TIME ZONE zone)::time, ws, we))
     AND (qs IS NULL OR NOT pg_temp.in_span((at AT TIME ZONE zone)::time, qs, qe))
     AND (unit <> 'business_days' OR extract(isodow FROM at AT TIME ZONE zone) < 6)
$$;

SELECT count(*) > 1000000 AS enough_window_cases FROM window_cases;
SELECT 'window: due outside the window or in quiet hours' AS check, count(*) AS violations,
       min(format('%s %s %s from %s window %s-%s quiet %s-%s: got %s', zone, n, unit, start_at,
                  ws, we, qs, qe, got)) AS first_case
  FROM window_cases WHERE NOT pg_temp.may_send(got, zone, unit, ws, we, qs, qe)
UNION ALL
SELECT 'window: before the start or before the delay', count(*),
       min(format('%s %s %s from %s window %s-%s quiet %s-%s: got %s, delay ends %s', zone, n, unit,
                  start_at, ws, we, qs, qe, got, base))
  FROM window_cases WHERE got < start_at OR got < base
UNION ALL
-- due at the end of the delay or at an opening: a second earlier was closed
SELECT 'window: not at the delay''s end nor at an opening', count(*),
       min(format('%s %s %s from %s window %s-%s quiet %s-%s: got %s', zone, n, unit, start_at,
                  ws, we, qs, qe, got))
  FROM window_cases
 WHERE got <> base AND pg_temp.may_send(got - interval '1 second', zone, unit, ws, we, qs, qe)
UNION ALL
-- open at the end of the delay: sent then
SELECT 'window: open at the delay''s end yet deferred', count(*),
       min(format('%s %s %s from %s window %s-%s quiet %s-%s: got %s', zone, n, unit, start_at,
                  ws, we, qs, qe, got))
  FROM window_cases
 WHERE got <> base AND pg_temp.may_send(base, zone, unit, ws, we, qs, qe)
UNION ALL
-- the transition lies between the delay's end and the result and may send:
-- an opening was missed (the clock turned back into the window)
SELECT 'window: opening at the transition missed', count(*),
       min(format('%s %s %s from %s window %s-%s quiet %s-%s: got %s, open at %s', zone, n, unit,
                  start_at, ws, we, qs, qe, got, at))
  FROM window_cases
 WHERE at >= base AND at < got AND pg_temp.may_send(at, zone, unit, ws, we, qs, qe)
UNION ALL
-- a daily window opens at least once in every local day
SELECT 'window: a local day skipped', count(*),
       min(format('%s %s %s from %s window %s-%s quiet %s-%s: got %s, delay ends %s', zone, n, unit,
                  start_at, ws, we, qs, qe, got, base))
  FROM window_cases
 WHERE (got AT TIME ZONE zone)::date - (base AT TIME ZONE zone)::date
       > CASE WHEN unit = 'business_days' THEN 3 ELSE 1 END
   -- unless the window lay wholly in a gap that day (Antarctica/Casey jumps
   -- 3 hours at local midnight, Pacific/Apia skipped 2011-12-30)
   AND NOT (t_gap >= interval '1 day')
   AND NOT (ws IS NOT NULL AND t_gap >= CASE WHEN ws < we THEN we - ws ELSE we - ws + interval '24 hours' END)
ORDER BY 1;

-- 4. Business days against a count made here: from every day of 2026 at
--    10:00 in three zones, 1..23 business days with a holiday list: the local
--    date reached is a business day and exactly n business days lie after the
--    start's date up to it.
CREATE TEMP TABLE bd_cases AS
SELECT zone, start_at, n,
       revenue_engine.next_send_time(start_at, n, 'business_days', zone,
                                     holidays => '{2026-01-01,2026-04-03,2026-04-06,2026-05-01,2026-12-24,2026-12-25,2026-12-26,2027-01-01}') AS got
  FROM unnest(ARRAY['Europe/Berlin', 'America/New_York', 'Australia/Sydney']) zone,
       generate_series('2026-01-01'::timestamp, '2026-12-31', '1 day') d,
       LATERAL (SELECT (d + time '10:00') AT TIME ZONE zone AS start_at) s,
       generate_series(1, 23, 2) n;
SELECT 'business days: wrong count or not a business day' AS check, count(*) AS violations,
       min(format('%s %s business days from %s: got %s', zone, n, start_at, got)) AS first_case
  FROM bd_cases c
 WHERE (c.got AT TIME ZONE c.zone)::time <> time '10:00'
    OR extract(isodow FROM c.got AT TIME ZONE c.zone) > 5
    OR (SELECT count(*) FROM generate_series((c.start_at AT TIME ZONE c.zone)::date + 1 - date '2000-01-01',
                                             (c.got AT TIME ZONE c.zone)::date - date '2000-01-01') i,
                             LATERAL (SELECT date '2000-01-01' + i AS day) g
         WHERE extract(isodow FROM g.day) < 6
           AND g.day <> ALL ('{2026-01-01,2026-04-03,2026-04-06,2026-05-01,2026-12-24,2026-12-25,2026-12-26,2027-01-01}'::date[]))
       <> c.n;
