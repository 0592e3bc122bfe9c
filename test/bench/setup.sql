/*
 * Data for the track_daily_usage benchmark (test/bench/run.sh), after
 * reference.sql.  10,000 users numbered 0..9999 with the id md5('user' || n)::uuid,
 * each with a profile in both revenue_engine.user_profiles (written through
 * revenue_engine.set_user_profile) and bench.user_profiles (a copy):
 * twelve time zones, a quarter with a 'reply' goal of 20, a quarter with 5,
 * the rest on the built-in goal of 10.
 */
CREATE TABLE bench.users (
    n        integer PRIMARY KEY,
    user_id  uuid    NOT NULL UNIQUE,
    timezone text    NOT NULL,
    goal     integer
);
INSERT INTO bench.users
SELECT n, md5('user' || n)::uuid,
       (ARRAY['UTC', 'America/New_York', 'America/Los_Angeles', 'America/Sao_Paulo',
              'Europe/London', 'Europe/Berlin', 'Africa/Lagos', 'Asia/Kolkata',
              'Asia/Kuala_Lumpur', 'Asia/Tokyo', 'Australia/Sydney', 'Pacific/Auckland'])[1 + n % 12],
       CASE n % 4 WHEN 0 THEN 20 WHEN 1 THEN 5 END
  FROM generate_series(0, 9999) AS n;

SELECT count(revenue_engine.set_user_profile(
           u.user_id, timezone => u.timezone,
           daily_goals => CASE WHEN u.goal IS NOT NULL THEN jsonb_build_object('reply', u.goal) END))
  FROM bench.users u;

INSERT INTO bench.user_profiles (tenant_id, user_id, timezone, daily_goals)
SELECT tenant_id, user_id, timezone, daily_goals FROM revenue_engine.user_profiles;

-- The call sequence of (a): call i goes to user (i * 7919) % 10000, 20 calls per user.
CREATE TABLE bench.call_seq (i integer PRIMARY KEY, user_id uuid NOT NULL);
INSERT INTO bench.call_seq
SELECT i, md5('user' || ((i::bigint * 7919) % 10000))::uuid
  FROM generate_series(1, 200000) AS i;

VACUUM ANALYZE bench.users, bench.user_profiles, bench.call_seq, revenue_engine.user_profiles;
