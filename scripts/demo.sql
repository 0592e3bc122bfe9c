-- revenue_engine demo: one user replies over three days (in Kuala Lumpur),
-- reaching the 1st and 10th reply, a daily goal, a streak and a feature.
\set QUIET on
\pset footer off
CREATE EXTENSION revenue_engine;
\set user '''6f1c2a4e-0000-4000-8000-000000000001'''

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

\echo '\n-- The outbox: every event, written in the transaction that caused it (pending delivery).'
SELECT event_type, event_data, status
  FROM revenue_engine.webhook_events ORDER BY created_at, event_data->>'milestone_value';

\echo '\n-- Lifetime figures.'
SELECT usage_type, lifetime_total, latest_milestone, milestones_reached, best_streak
  FROM revenue_engine.user_lifetime_stats ORDER BY usage_type;
