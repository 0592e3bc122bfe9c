-- revenue_engine demo: one user replies over three days (in Kuala Lumpur),
-- reaching the 1st and 10th reply, a daily goal, a streak and a feature.
\set QUIET on
\pset footer off
CREATE EXTENSION revenue_engine;
\set user '''6f1c2a4e-0000-4000-8000-000000000001'''

\echo '\n-- An endpoint receives every event, signed (Standard Webhooks).'
SELECT revenue_engine.create_endpoint('demo-receiver', :'receiver', signing_secret => :'secret',
                                      retry_schedule => '{1 second,5 seconds}') AS endpoint_id;

\echo '\n-- The user lives in Kuala Lumpur and wants 5 replies a day.'
SELECT user_id, timezone, daily_goals
  FROM revenue_engine.set_user_profile(:user, timezone => 'Asia/Kuala_Lumpur', daily_goals => '{"reply": 5}');

\echo '\n-- Day 1, 09:00 local: the first reply ever.'
SET revenue_engine.clock_override = '2026-11-18 01:00:00+00';
SELECT revenue_engine.track_daily_usage(:user, 'reply') AS response;

\echo '\n-- Day 1, later: 5 more replies reach the daily goal.'
SELECT r->>'date' AS date, r->'current_count' AS today, r->'goal_just_achieved' AS goal,
       r->'streak_days' AS streak, r->'lifetime_total' AS total, r->'milestones' AS milestones
  FROM revenue_engine.track_daily_usage(:user, 'reply', 5) r;

\echo '\n-- Day 2, 23:30 local (15:30 UTC): 5 replies cross the 10th reply and keep the streak.'
SET revenue_engine.clock_override = '2026-11-19 15:30:00+00';
SELECT r->>'date' AS date, r->'current_count' AS today, r->'goal_just_achieved' AS goal,
       r->'streak_days' AS streak, r->'lifetime_total' AS total, r->'milestones' AS milestones
  FROM revenue_engine.track_daily_usage(:user, 'reply', 5) r;

\echo '\n-- Day 3, 00:30 local: only an hour later, but a new local day. The first meme.'
SET revenue_engine.clock_override = '2026-11-19 16:30:00+00';
SELECT r->>'date' AS date, r->'first_use' AS first_use, r->'events' AS events
  FROM revenue_engine.track_daily_usage(:user, 'meme') r;

\echo '\n-- The outbox: every event was written in the transaction that caused it;'
\echo '-- the delivery worker was woken at each commit and POSTed it to the receiver.'
SELECT pg_sleep(1);
SELECT event_type, event_data, status, attempts
  FROM revenue_engine.webhook_events ORDER BY created_at, event_data->>'milestone_value';
SELECT name, pending, in_flight, dead, sent_5m, round(p50_latency_ms::numeric, 1) AS p50_ms
  FROM revenue_engine.endpoint_stats;

\echo '\n-- Lifetime figures.'
SELECT usage_type, lifetime_total, latest_milestone, milestones_reached, best_streak
  FROM revenue_engine.user_lifetime_stats ORDER BY usage_type;
