-- Bad input: a clear error with its SQLSTATE, and nothing half-written.
\c
\set SHOW_CONTEXT never
SELECT revenue_engine.track_daily_usage(NULL, 'reply');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply', -5);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply', 1000001);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), '');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply now');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), repeat('x', 64));
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply', 1, '2026-11-21');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage(u(50), 'reply', 1, 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.track_daily_usage('not-a-uuid', 'reply');
\echo :LAST_ERROR_SQLSTATE

-- The limit per call is a setting.
SET revenue_engine.max_count_per_call = 5;
SELECT revenue_engine.track_daily_usage(u(50), 'reply', 6);
RESET revenue_engine.max_count_per_call;

-- A lifetime total that would overflow bigint: an error naming the user, and no change.
SELECT revenue_engine.track_daily_usage(u(51), 'clicks', 1, '2026-11-01')->'lifetime_total';
UPDATE revenue_engine.lifetime_usage SET total = 9223372036854775000 WHERE user_id = u(51);
SELECT revenue_engine.track_daily_usage(u(51), 'clicks', 1000, '2026-11-02');
\echo :LAST_ERROR_SQLSTATE
SELECT total FROM revenue_engine.lifetime_usage WHERE user_id = u(51);
SELECT count(*) AS days FROM revenue_engine.daily_usage WHERE user_id = u(51);

-- Nothing was written for any refused call.
SELECT (SELECT count(*) FROM revenue_engine.daily_usage WHERE user_id = u(50)) AS daily,
       (SELECT count(*) FROM revenue_engine.lifetime_usage WHERE user_id = u(50)) AS lifetime,
       (SELECT count(*) FROM revenue_engine.webhook_events WHERE user_id = u(50)) AS events;

-- Profiles
SELECT revenue_engine.set_user_profile(NULL, timezone => 'UTC');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_user_profile(u(52), daily_goals => '[20]');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_user_profile(u(52), daily_goals => '{"reply": -3}');
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.set_user_profile(u(52), daily_goals => '{"reply": 2.5}');
SELECT revenue_engine.set_user_profile(u(52), daily_goals => '{"reply": "20"}');
SELECT revenue_engine.set_user_profile(u(52), daily_goals => '{"bad type": 20}');
SELECT revenue_engine.set_user_profile(u(52), timezone => 'Nowhere/Special');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS profiles FROM revenue_engine.user_profiles WHERE user_id = u(52);

-- Settings
SET revenue_engine.tenant = '';
SET revenue_engine.max_count_per_call = 0;
SET revenue_engine.no_such_setting = 1;
