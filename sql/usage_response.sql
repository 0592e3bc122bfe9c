-- The response of track_daily_usage: every key an existing caller reads.
\c
SELECT revenue_engine.track_daily_usage(u(1), 'reply');
SELECT jsonb_object_keys(revenue_engine.track_daily_usage(u(1), 'reply')) AS key ORDER BY 1;

-- count and date arguments, by position and by name
SELECT r->>'date' AS date, r->'current_count' AS current_count, r->'lifetime_total' AS total
  FROM revenue_engine.track_daily_usage(u(1), 'reply', 3, '2026-11-19') r;
SELECT r->>'date' AS date, r->'current_count' AS current_count, r->'lifetime_total' AS total
  FROM revenue_engine.track_daily_usage(user_id => u(1), usage_type => 'reply', count => 2) r;

-- counters
SELECT usage_date, count FROM revenue_engine.daily_usage WHERE user_id = u(1) ORDER BY 1;
SELECT usage_type, total FROM revenue_engine.lifetime_usage WHERE user_id = u(1);
SELECT user_id, usage_type, lifetime_total, latest_milestone, milestones_reached
  FROM revenue_engine.user_lifetime_stats WHERE user_id = u(1);

-- A usage type with no settings is counted, with no milestones and no goal.
SELECT r->'daily_goal' AS goal, r->'milestones' AS milestones, r->'first_use' AS first_use
  FROM revenue_engine.track_daily_usage(u(1), 'suggestion_used', 5) r;

-- Rolled back: no counter, milestone or event remains.
BEGIN;
SELECT r->'milestone_reached' FROM revenue_engine.track_daily_usage(u(2), 'reply', 10) r;
SELECT count(*) FROM revenue_engine.webhook_events WHERE user_id = u(2);
ROLLBACK;
SELECT (SELECT count(*) FROM revenue_engine.daily_usage WHERE user_id = u(2)) AS daily,
       (SELECT count(*) FROM revenue_engine.lifetime_usage WHERE user_id = u(2)) AS lifetime,
       (SELECT count(*) FROM revenue_engine.milestones_reached WHERE user_id = u(2)) AS milestones,
       (SELECT count(*) FROM revenue_engine.webhook_events WHERE user_id = u(2)) AS events;

-- The user object of the payload, from an application function.
CREATE SCHEMA app;
CREATE TABLE app.users (id uuid PRIMARY KEY, email text, plan text);
INSERT INTO app.users VALUES (u(3), 'ana@example.com', 'pro');
CREATE FUNCTION app.user_payload(uid uuid) RETURNS jsonb LANGUAGE sql STABLE
AS $$ SELECT jsonb_build_object('id', id, 'email', email, 'plan', plan) FROM app.users WHERE id = uid $$;
SET revenue_engine.user_payload_function = 'app.user_payload';
SELECT r->'milestone_reached' FROM revenue_engine.track_daily_usage(u(3), 'reply') r;
SELECT event_type, user_data FROM revenue_engine.webhook_events WHERE user_id = u(3);
SET revenue_engine.user_payload_function = 'app.no_such_function';
SELECT revenue_engine.track_daily_usage(u(4), 'reply');
SET revenue_engine.user_payload_function = 'unqualified';
RESET revenue_engine.user_payload_function;

-- Application events enter the same outbox, once their type is registered.
SELECT revenue_engine.enqueue_event(u(3), 'payment_failed', '{"amount": 19}');
SELECT revenue_engine.register_event_type('payment_failed', 'a renewal payment failed');
SELECT revenue_engine.enqueue_event(u(3), 'payment_failed', '{"amount": 19}') IS NOT NULL AS queued;
SELECT event_type, event_data, status, attempts FROM revenue_engine.webhook_events
 WHERE user_id = u(3) AND event_type = 'payment_failed';
SELECT revenue_engine.enqueue_event(u(3), 'bad type!', '{}');
SELECT revenue_engine.enqueue_event(u(3), 'payment_failed', '[1]');
SELECT revenue_engine.enqueue_event(u(3), NULL, '{}');
