-- Daily goals (once per local day) and streaks of consecutive goal days.
\c
-- reply's built-in goal is 10 a day.
SELECT r->>'date' AS date, r->'current_count' AS n, r->'daily_goal' AS goal, r->'goal_achieved' AS achieved,
       r->'goal_just_achieved' AS just, r->'streak_days' AS streak, r->'streak_milestone' AS tag
  FROM (VALUES (1, 6, '2026-11-10'), (2, 4, '2026-11-10'), (3, 3, '2026-11-10'),
               (4, 12, '2026-11-11'), (5, 5, '2026-11-12'), (6, 5, '2026-11-12'),
               (7, 10, '2026-11-14'), (8, 1, '2026-11-14')) AS c(seq, n, d),
       LATERAL revenue_engine.track_daily_usage(u(20), 'reply', c.n, c.d::date) r
 ORDER BY c.seq;

SELECT usage_date, count, goal, goal_achieved_at IS NOT NULL AS achieved, streak_days
  FROM revenue_engine.daily_usage WHERE user_id = u(20) ORDER BY usage_date;
SELECT * FROM events_of(u(20)) WHERE event_type = 'daily_goal_achieved';
SELECT current_streak, streak_end_date, best_streak FROM revenue_engine.lifetime_usage WHERE user_id = u(20);

-- A user's own goal replaces the type's; null removes it again.
SELECT timezone, daily_goals FROM revenue_engine.set_user_profile(u(21), daily_goals => '{"reply": 1}');
SELECT string_agg((r->'streak_days')::text || coalesce('@' || (r->>'streak_milestone'), ''), ' ' ORDER BY d)
  FROM generate_series(date '2026-10-01', date '2026-10-08', interval '1 day') AS d,
       LATERAL revenue_engine.track_daily_usage(u(21), 'reply', 1, d::date) r;
SELECT event_data->>'date' AS date, event_data->'streak_days' AS streak, event_data->'streak_milestone' AS tag
  FROM revenue_engine.webhook_events
 WHERE user_id = u(21) AND event_type = 'daily_goal_achieved' AND event_data->'streak_milestone' <> 'null'
 ORDER BY 1;
SELECT daily_goals FROM revenue_engine.set_user_profile(u(21), daily_goals => '{"reply": null, "meme": 2}');
SELECT r->'daily_goal' FROM revenue_engine.track_daily_usage(u(21), 'reply', 1, '2026-10-09') r;

-- Usage for an earlier day joins two runs: the later days are renumbered.
SELECT daily_goals FROM revenue_engine.set_user_profile(u(22), daily_goals => '{"reply": 1}');
SELECT string_agg(d || ':' || (r->'streak_days')::text, ' ' ORDER BY d)
  FROM unnest('{2026-09-01,2026-09-02,2026-09-04,2026-09-05}'::date[]) AS d,
       LATERAL revenue_engine.track_daily_usage(u(22), 'reply', 1, d) r;
SELECT revenue_engine.track_daily_usage(u(22), 'reply', 1, '2026-09-03')->'streak_days' AS joined;
SELECT usage_date, streak_days FROM revenue_engine.daily_usage WHERE user_id = u(22) ORDER BY 1;
SELECT current_streak, streak_end_date, best_streak FROM revenue_engine.lifetime_usage WHERE user_id = u(22);
-- A day before an older run leaves the latest run alone.
SELECT revenue_engine.track_daily_usage(u(22), 'reply', 1, '2026-08-30')->'streak_days' AS older;
SELECT current_streak, streak_end_date, best_streak FROM revenue_engine.lifetime_usage WHERE user_id = u(22);

-- The streak as of a day whose goal is not reached yet is the run ending the day before.
SELECT revenue_engine.track_daily_usage(u(22), 'reply', 1, '2026-09-06')->'streak_days' AS next_day;
SELECT daily_goals FROM revenue_engine.set_user_profile(u(22), daily_goals => '{"reply": 5}');
SELECT r->'streak_days' AS streak, r->'goal_achieved' AS achieved
  FROM revenue_engine.track_daily_usage(u(22), 'reply', 1, '2026-09-07') r;
SELECT r->'streak_days' AS streak, r->'goal_achieved' AS achieved
  FROM revenue_engine.track_daily_usage(u(22), 'reply', 1, '2026-09-09') r;

-- Streaks as of today (2026-11-20 in UTC, pinned by the test database).
SELECT daily_goals FROM revenue_engine.set_user_profile(u(23), daily_goals => '{"reply": 2}');
SELECT revenue_engine.track_daily_usage(u(23), 'reply', 2, '2026-11-18')->'streak_days',
       revenue_engine.track_daily_usage(u(23), 'reply', 2, '2026-11-19')->'streak_days';
SELECT current_streak, best_streak FROM revenue_engine.user_lifetime_stats WHERE user_id = u(23);
SELECT r->'streak_days' AS streak_today_before_goal FROM revenue_engine.track_daily_usage(u(23), 'reply', 1) r;
SELECT r->'streak_days' AS streak_today_after_goal FROM revenue_engine.track_daily_usage(u(23), 'reply', 1) r;
SET revenue_engine.clock_override = '2026-11-25 12:00:00+00';
SELECT current_streak, best_streak FROM revenue_engine.user_lifetime_stats WHERE user_id = u(23);
RESET revenue_engine.clock_override;

-- Feature first use: once per user and feature, even in another day.
SELECT r->'first_use' AS first, r->'events' AS events
  FROM revenue_engine.track_daily_usage(u(24), 'meme', 1, '2026-11-01') r;
SELECT r->'first_use' AS first, r->'events' AS events
  FROM revenue_engine.track_daily_usage(u(24), 'meme', 1, '2026-11-02') r;
SELECT r->'first_use' AS first, r->'events' AS events
  FROM revenue_engine.track_daily_usage(u(24), 'research', 2, '2026-11-02') r;
SELECT r->'first_use' AS first, r->'events' AS events
  FROM revenue_engine.track_daily_usage(u(24), 'reply', 2, '2026-11-02') r;
SELECT * FROM events_of(u(24)) WHERE event_type = 'feature_first_used';
SELECT usage_type, is_feature FROM revenue_engine.set_usage_type('export', is_feature => true);
SELECT r->'first_use' AS first, r->'events' AS events
  FROM revenue_engine.track_daily_usage(u(24), 'export', 1, '2026-11-02') r;
SELECT revenue_engine.reset_usage_type('export');
