-- Milestone ladders: first use, exact hit, a jump over several, beyond the last.
\c
SELECT r->'milestones' AS crossed, r->'milestone_reached' AS highest, r->'lifetime_total' AS total
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 1, '2026-11-01') r;   -- first: 1
SELECT r->'milestones', r->'milestone_reached', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 4, '2026-11-01') r;   -- 5: none
SELECT r->'milestones', r->'milestone_reached', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 5, '2026-11-02') r;   -- exact 10
SELECT r->'milestones', r->'milestone_reached', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 1, '2026-11-02') r;   -- 11: none
SELECT r->'milestones', r->'milestone_reached', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 489, '2026-11-03') r; -- 500: 50, 100, 500
SELECT r->'milestones', r->'milestone_reached', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 700, '2026-11-04') r; -- 1200: 1000
SELECT r->'milestones', r->'milestone_reached', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(10), 'reply', 5000, '2026-11-05') r; -- beyond the last: none

SELECT milestone, lifetime_total, backfilled FROM revenue_engine.milestones_reached
 WHERE user_id = u(10) ORDER BY milestone;
SELECT event_data->>'milestone_value' AS value, event_data->>'lifetime_total' AS total,
       event_data->>'is_first' AS is_first
  FROM revenue_engine.webhook_events
 WHERE user_id = u(10) AND event_type = 'milestone_reached'
 ORDER BY (event_data->>'milestone_value')::bigint;
SELECT latest_milestone FROM revenue_engine.lifetime_usage WHERE user_id = u(10);

-- Count 60 from 5 records 10 and 50.
SELECT revenue_engine.track_daily_usage(u(11), 'reply', 5, '2026-11-01')->'milestones';
SELECT revenue_engine.track_daily_usage(u(11), 'reply', 60, '2026-11-01')->'milestones';

-- A longer ladder added later: the next call records what it crosses, never the past again.
SELECT usage_type, milestones, daily_goal, is_feature
  FROM revenue_engine.set_usage_type('reply', milestones => '{1,10,50,100,500,1000,5000,10000}');
SELECT revenue_engine.track_daily_usage(u(10), 'reply', 4000, '2026-11-06')->'milestones';   -- 10200: 10000
SELECT count(*) FILTER (WHERE milestone = 5000) AS m5000, count(*) FILTER (WHERE milestone = 10000) AS m10000
  FROM revenue_engine.milestones_reached WHERE user_id = u(10);

-- A ladder for another type.
SELECT usage_type, milestones FROM revenue_engine.set_usage_type('meme', milestones => '{3,30}');
SELECT r->'milestones', r->'first_use' FROM revenue_engine.track_daily_usage(u(12), 'meme', 3, '2026-11-10') r;
SELECT usage_type, milestones, streak_milestones, daily_goal, is_feature, customized
  FROM revenue_engine.usage_type_settings ORDER BY usage_type;

-- Bad ladders
SELECT revenue_engine.set_usage_type('reply', milestones => '{10,5}');
SELECT revenue_engine.set_usage_type('reply', milestones => '{0,5}');
SELECT revenue_engine.set_usage_type('reply', daily_goal => -1);
SELECT revenue_engine.set_usage_type('', milestones => '{1}');

-- Back to the built-in ladder.
SELECT revenue_engine.reset_usage_type('reply'), revenue_engine.reset_usage_type('meme');
SELECT usage_type, milestones FROM revenue_engine.usage_type_settings WHERE usage_type IN ('reply', 'meme');
