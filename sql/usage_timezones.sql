-- Calendar days are the user's local days: local midnight, DST and travel.
\c
-- Asia/Kuala_Lumpur is UTC+8: local midnight of 2026-11-20 is 16:00 UTC the day before.
SELECT timezone FROM revenue_engine.set_user_profile(u(30), timezone => 'Asia/Kuala_Lumpur');
SET revenue_engine.clock_override = '2026-11-19 15:59:59+00';
SELECT r->>'date' AS date, r->>'timezone' AS tz FROM revenue_engine.track_daily_usage(u(30), 'reply', 10) r;
SET revenue_engine.clock_override = '2026-11-19 16:00:00+00';
SELECT r->>'date' AS date, r->'streak_days' AS streak, r->'goal_just_achieved' AS goal
  FROM revenue_engine.track_daily_usage(u(30), 'reply', 10) r;
-- The same instant is still 2026-11-19 for a user in UTC.
SELECT r->>'date' AS date FROM revenue_engine.track_daily_usage(u(35), 'reply', 1) r;
-- A date in the user's future is refused; "future" is the user's.
SELECT r->>'date' AS date FROM revenue_engine.track_daily_usage(u(30), 'reply', 1, '2026-11-20') r;
SELECT revenue_engine.track_daily_usage(u(30), 'reply', 1, '2026-11-21');
SELECT revenue_engine.track_daily_usage(u(35), 'reply', 1, '2026-11-20');

-- (Each call sets the clock first: the count, 1, is computed from the set_config result.)
-- America/New_York: DST starts 2026-03-08 (02:00 EST -> 03:00 EDT), a 23-hour day.
SELECT timezone, daily_goals FROM revenue_engine.set_user_profile(u(31), timezone => 'America/New_York', daily_goals => '{"reply": 1}');
SELECT c.at, r->>'date' AS local_day, r->'streak_days' AS streak
  FROM unnest('{"2026-03-07 04:59:59+00","2026-03-07 05:00:00+00","2026-03-08 04:59:59+00",
               "2026-03-08 05:00:00+00","2026-03-09 03:59:59+00","2026-03-09 04:00:00+00"}'::timestamptz[])
       WITH ORDINALITY AS c(at, seq),
       LATERAL (SELECT set_config('revenue_engine.clock_override', c.at::text, true) AS v) s,
       LATERAL revenue_engine.track_daily_usage(u(31), 'reply', length(s.v) / length(s.v)) r
 ORDER BY c.seq;
SELECT usage_date, count, streak_days FROM revenue_engine.daily_usage WHERE user_id = u(31) ORDER BY 1;

-- Pacific/Auckland: DST ends 2026-04-05 (03:00 NZDT -> 02:00 NZST), a 25-hour day.
SELECT timezone FROM revenue_engine.set_user_profile(u(32), timezone => 'Pacific/Auckland', daily_goals => '{"reply": 1}');
SELECT c.at, r->>'date' AS local_day, r->'streak_days' AS streak
  FROM unnest('{"2026-04-03 10:59:59+00","2026-04-03 11:00:00+00","2026-04-04 10:59:59+00",
               "2026-04-04 11:00:00+00","2026-04-05 11:59:59+00","2026-04-05 12:00:00+00"}'::timestamptz[])
       WITH ORDINALITY AS c(at, seq),
       LATERAL (SELECT set_config('revenue_engine.clock_override', c.at::text, true) AS v) s,
       LATERAL revenue_engine.track_daily_usage(u(32), 'reply', length(s.v) / length(s.v)) r
 ORDER BY c.seq;

-- A user who travels: the local day follows the time zone of the profile now.
SELECT timezone FROM revenue_engine.set_user_profile(u(33), timezone => 'Asia/Kuala_Lumpur');
SET revenue_engine.clock_override = '2026-11-19 17:00:00+00';   -- 01:00 on the 20th in Kuala Lumpur
SELECT r->>'date' AS date, r->>'timezone' AS tz FROM revenue_engine.track_daily_usage(u(33), 'reply', 2) r;
SELECT timezone FROM revenue_engine.set_user_profile(u(33), timezone => 'America/Los_Angeles');
SET revenue_engine.clock_override = '2026-11-20 06:00:00+00';   -- 22:00 on the 19th in Los Angeles
SELECT r->>'date' AS date, r->>'timezone' AS tz FROM revenue_engine.track_daily_usage(u(33), 'reply', 3) r;
SET revenue_engine.clock_override = '2026-11-21 09:00:00+00';   -- 01:00 on the 21st in Los Angeles
SELECT r->>'date' AS date, r->>'timezone' AS tz FROM revenue_engine.track_daily_usage(u(33), 'reply', 4) r;
SELECT usage_date, count FROM revenue_engine.daily_usage WHERE user_id = u(33) ORDER BY 1;
RESET revenue_engine.clock_override;

-- Time zone names: spelled as PostgreSQL spells them; unknown names refused.
SELECT timezone FROM revenue_engine.set_user_profile(u(34), timezone => 'america/new_york');
SELECT timezone FROM revenue_engine.set_user_profile(u(34), timezone => 'utc');
SELECT revenue_engine.set_user_profile(u(34), timezone => 'Mars/Olympus_Mons');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_user_profile(u(34), timezone => '');
SELECT revenue_engine.set_user_profile(u(34), timezone => '<+05>-5');
SELECT timezone FROM revenue_engine.user_profiles WHERE user_id = u(34);
