-- backfill_usage: history from the application's own tables, idempotent, silent by default.
\c
CREATE SCHEMA legacy;
CREATE TABLE legacy.usage_log (user_id uuid, kind text, day date, n integer);
INSERT INTO legacy.usage_log VALUES
  (u(40), 'reply', '2026-11-01', 3),
  (u(40), 'reply', '2026-11-02', 12),
  (u(40), 'reply', '2026-11-03', 10),
  (u(40), 'reply', '2026-11-03', 5),       -- the same day twice: summed
  (u(40), 'reply', '2026-11-05', 40),
  (u(41), 'meme',  '2026-10-30', 1),
  (u(41), 'reply', '2026-10-30', 1);

SELECT revenue_engine.backfill_usage('SELECT user_id, kind, day, n FROM legacy.usage_log');
SELECT user_id = u(40) AS u40, usage_type, total, latest_milestone, current_streak, streak_end_date, best_streak
  FROM revenue_engine.lifetime_usage WHERE user_id IN (u(40), u(41)) ORDER BY 1 DESC, 2;
SELECT usage_date, count, backfilled_count, goal, goal_achieved_at IS NOT NULL AS achieved, streak_days
  FROM revenue_engine.daily_usage WHERE user_id = u(40) ORDER BY 1;
SELECT user_id = u(40) AS u40, milestone, lifetime_total, backfilled, event_id IS NULL AS no_event
  FROM revenue_engine.milestones_reached WHERE user_id IN (u(40), u(41)) ORDER BY 1 DESC, 2;
SELECT count(*) AS events FROM revenue_engine.webhook_events WHERE user_id IN (u(40), u(41));

-- Twice: nothing doubles, nothing new.
SELECT revenue_engine.backfill_usage('SELECT user_id, kind, day, n FROM legacy.usage_log');
SELECT usage_type, total FROM revenue_engine.lifetime_usage WHERE user_id = u(40);
SELECT sum(count) AS days_sum FROM revenue_engine.daily_usage WHERE user_id = u(40);
SELECT count(*) AS milestones FROM revenue_engine.milestones_reached WHERE user_id = u(40);

-- Live usage after the backfill adds to it, and only new milestones make events.
SELECT r->'milestones' AS crossed, r->'lifetime_total' AS total
  FROM revenue_engine.track_daily_usage(u(40), 'reply', 30, '2026-11-05') r;
SELECT event_type, event_data->'milestone_value' AS value FROM revenue_engine.webhook_events WHERE user_id = u(40);

-- Corrected history replaces what the earlier backfill set for those days; tracked usage stays.
UPDATE legacy.usage_log SET n = 50 WHERE user_id = u(40) AND day = '2026-11-05';
SELECT revenue_engine.backfill_usage('SELECT user_id, kind, day, n FROM legacy.usage_log WHERE user_id = $$' || u(40) || '$$');
SELECT usage_date, count, backfilled_count FROM revenue_engine.daily_usage
 WHERE user_id = u(40) AND usage_date = '2026-11-05';
SELECT total, backfilled_total FROM revenue_engine.lifetime_usage WHERE user_id = u(40) AND usage_type = 'reply';

-- emit_events => true: events for what the history reached.
SELECT revenue_engine.backfill_usage($$SELECT u(42), 'reply', date '2026-11-10', 12
                                      UNION ALL SELECT u(42), 'write_like_me', date '2026-11-10', 1$$,
                                     emit_events => true);
SELECT * FROM events_of(u(42));

-- Bad input: refused whole.
\set SHOW_CONTEXT never
SELECT revenue_engine.backfill_usage('SELECT user_id, kind FROM legacy.usage_log');
SELECT revenue_engine.backfill_usage('SELECT user_id, kind, day, n, 1 FROM legacy.usage_log');
SELECT revenue_engine.backfill_usage($$SELECT u(43), 'reply', date '2026-11-01', NULL::int$$);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.backfill_usage($$SELECT u(43), 'reply', date '2026-11-01', 0$$);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.backfill_usage($$SELECT u(43), 'reply', date '2026-12-25', 1$$);
\echo :LAST_ERROR_SQLSTATE
SELECT revenue_engine.backfill_usage($$SELECT u(43), 'no good', date '2026-11-01', 1$$);
SELECT revenue_engine.backfill_usage($$SELECT 'x', 'reply', date '2026-11-01', 1$$);
SELECT revenue_engine.backfill_usage('SELECT * FROM no_such_table');
SELECT revenue_engine.backfill_usage(NULL);
SELECT count(*) AS written FROM revenue_engine.daily_usage WHERE user_id = u(43);
