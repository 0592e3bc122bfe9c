-- The keyed update of existing counter rows (src/usage/keyed_update.c) against
-- what the statements do: the same rows, and the statements whenever the
-- table has something an UPDATE must run.
\c

-- Many calls for one user in one transaction: the rows written earlier in the
-- transaction are found where they were written.
BEGIN;
SELECT count(revenue_engine.track_daily_usage(u(500), 'reply', 1, '2026-11-18')) FROM generate_series(1, 120);
SELECT total, latest_milestone, current_streak, streak_end_date, best_streak
  FROM revenue_engine.lifetime_usage WHERE user_id = u(500);
SELECT count, goal, streak_days, goal_achieved_at IS NOT NULL AS achieved
  FROM revenue_engine.daily_usage WHERE user_id = u(500);
SELECT milestone FROM revenue_engine.milestones_reached WHERE user_id = u(500) ORDER BY 1;
COMMIT;

-- A savepoint rolled back forgets the versions it wrote.
BEGIN;
SELECT revenue_engine.track_daily_usage(u(501), 'reply', 3, '2026-11-18')->'lifetime_total';
SAVEPOINT s;
SELECT revenue_engine.track_daily_usage(u(501), 'reply', 4, '2026-11-18')->'lifetime_total';
SELECT revenue_engine.track_daily_usage(u(501), 'reply', 5, '2026-11-18')->'lifetime_total';
ROLLBACK TO SAVEPOINT s;
SELECT revenue_engine.track_daily_usage(u(501), 'reply', 2, '2026-11-18')->'lifetime_total';  -- 5
SELECT revenue_engine.track_daily_usage(u(501), 'reply', 1, '2026-11-18')->'lifetime_total';  -- 6
COMMIT;
SELECT total FROM revenue_engine.lifetime_usage WHERE user_id = u(501);
SELECT count FROM revenue_engine.daily_usage WHERE user_id = u(501);

-- TRUNCATE in the same transaction: nothing remembered of the old file is used.
BEGIN;
SELECT revenue_engine.track_daily_usage(u(502), 'reply', 1, '2026-11-18')->'lifetime_total';
SELECT revenue_engine.track_daily_usage(u(502), 'reply', 1, '2026-11-18')->'lifetime_total';
TRUNCATE revenue_engine.daily_usage, revenue_engine.lifetime_usage, revenue_engine.milestones_reached;
SELECT revenue_engine.track_daily_usage(u(502), 'reply', 1, '2026-11-18')->'lifetime_total';  -- 1
SELECT revenue_engine.track_daily_usage(u(502), 'reply', 1, '2026-11-18')->'lifetime_total';  -- 2
ROLLBACK;
SELECT total FROM revenue_engine.lifetime_usage WHERE user_id = u(502);  -- nothing: rolled back

-- An index an application adds on a changed column: every update of total is
-- then not HOT, and the index gets an entry for each new version.
CREATE INDEX lifetime_by_total ON revenue_engine.lifetime_usage (total);
SELECT revenue_engine.track_daily_usage(u(503), 'reply', 7, '2026-11-18')->'lifetime_total';
SELECT revenue_engine.track_daily_usage(u(503), 'reply', 4, '2026-11-18')->'lifetime_total';
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT user_id FROM revenue_engine.lifetime_usage WHERE total = 11;
SELECT user_id = u(503) AS found FROM revenue_engine.lifetime_usage WHERE total = 11;
SELECT count(*) AS stale FROM revenue_engine.lifetime_usage WHERE total = 7 AND user_id = u(503);
RESET enable_seqscan;
RESET enable_bitmapscan;
DROP INDEX revenue_engine.lifetime_by_total;

-- A summarizing (BRIN) index an application adds on a changed column: from
-- PostgreSQL 16 on the update stays HOT, and the BRIN index alone must get
-- the new version (before 16 the update is not HOT and every index gets it).
-- The index is made when the total is 777776; the call adds 2 (crossing no
-- milestone: the keyed update alone writes the row), and a bitmap scan of the
-- BRIN index finds 777778 only when its range's summary was widened to it.
SELECT revenue_engine.track_daily_usage(u(540), 'reply', 777776, '2026-11-18')->'lifetime_total';
CREATE INDEX lifetime_total_brin ON revenue_engine.lifetime_usage USING brin (total);
BEGIN;
SELECT pg_stat_get_xact_tuples_hot_updated('revenue_engine.lifetime_usage'::regclass) AS hot0,
       pg_stat_get_xact_tuples_updated('revenue_engine.lifetime_usage'::regclass) AS upd0 \gset
SELECT revenue_engine.track_daily_usage(u(540), 'reply', 2, '2026-11-18')->'milestones';
SELECT pg_stat_get_xact_tuples_updated('revenue_engine.lifetime_usage'::regclass) - :upd0 AS updates,
       pg_stat_get_xact_tuples_hot_updated('revenue_engine.lifetime_usage'::regclass) - :hot0
       = CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 1 ELSE 0 END
       AS hot_where_brin_allows_it;
COMMIT;
SET enable_seqscan = off;
SET enable_indexscan = off;
EXPLAIN (COSTS OFF) SELECT user_id FROM revenue_engine.lifetime_usage WHERE total = 777778;
SELECT user_id = u(540) AS found FROM revenue_engine.lifetime_usage WHERE total = 777778;
RESET enable_seqscan;
RESET enable_indexscan;
DROP INDEX revenue_engine.lifetime_total_brin;

-- A trigger an application adds is fired: its table takes the statement path.
-- (Triggers on the extension's tables run with its pinned search_path.)
CREATE TABLE daily_audit (user_id uuid, old_count bigint, new_count bigint);
CREATE FUNCTION audit_daily() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.daily_audit VALUES (NEW.user_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.count END, NEW.count);
    RETURN NEW;
END $$;
CREATE TRIGGER daily_audit AFTER INSERT OR UPDATE ON revenue_engine.daily_usage
    FOR EACH ROW EXECUTE FUNCTION audit_daily();
SELECT revenue_engine.track_daily_usage(u(504), 'reply', 2, '2026-11-18')->'current_count';
SELECT revenue_engine.track_daily_usage(u(504), 'reply', 3, '2026-11-18')->'current_count';
SELECT old_count, new_count FROM daily_audit WHERE user_id = u(504) ORDER BY new_count;
DROP TRIGGER daily_audit ON revenue_engine.daily_usage;

-- A CHECK constraint an application adds is enforced.
ALTER TABLE revenue_engine.lifetime_usage ADD CONSTRAINT at_most_20 CHECK (total <= 20) NOT VALID;
SELECT revenue_engine.track_daily_usage(u(505), 'reply', 15, '2026-11-18')->'lifetime_total';
\set VERBOSITY terse
SELECT revenue_engine.track_daily_usage(u(505), 'reply', 10, '2026-11-18')->'lifetime_total';  -- violates
\set VERBOSITY default
ALTER TABLE revenue_engine.lifetime_usage DROP CONSTRAINT at_most_20;
SELECT revenue_engine.track_daily_usage(u(505), 'reply', 10, '2026-11-18')->'lifetime_total';  -- 25

-- Above READ COMMITTED the statements run, and a concurrent change is a
-- serialization failure there (isolation specs); alone, the result is the same.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT revenue_engine.track_daily_usage(u(505), 'reply', 25, '2026-11-18')->'milestones';  -- 50
SELECT revenue_engine.track_daily_usage(u(505), 'reply', 1, '2026-11-18')->'lifetime_total';
COMMIT;
SELECT total, latest_milestone FROM revenue_engine.lifetime_usage WHERE user_id = u(505);

-- A new backfill that lowers a total: crossing a milestone again records
-- nothing, and the latest milestone stays the one recorded.
SELECT * FROM revenue_engine.backfill_usage(
    $$ SELECT u(506), 'reply', date '2026-11-10', 60 $$);
SELECT total, latest_milestone FROM revenue_engine.lifetime_usage WHERE user_id = u(506);
SELECT * FROM revenue_engine.backfill_usage(
    $$ SELECT u(506), 'reply', date '2026-11-10', 5 $$);
SELECT total, latest_milestone FROM revenue_engine.lifetime_usage WHERE user_id = u(506);
SELECT r->'milestones', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(506), 'reply', 1, '2026-11-18') r;
SELECT r->'milestones', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(506), 'reply', 95, '2026-11-18') r;  -- 50 again: nothing; 100: new
SELECT total, latest_milestone, latest_milestone_at IS NOT NULL AS has_at
  FROM revenue_engine.lifetime_usage WHERE user_id = u(506);
SELECT milestone, backfilled FROM revenue_engine.milestones_reached WHERE user_id = u(506) ORDER BY 1;
SELECT r->'milestones', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(506), 'reply', 1, '2026-11-18') r;

-- An application that resets a row: the milestones stay recorded, and crossing
-- one again leaves latest_milestone as the application set it.
UPDATE revenue_engine.lifetime_usage SET total = 5, latest_milestone = NULL, latest_milestone_at = NULL
 WHERE user_id = u(506);
SELECT r->'milestones', r->'lifetime_total'
  FROM revenue_engine.track_daily_usage(u(506), 'reply', 10, '2026-11-18') r;  -- 10 again: nothing
SELECT total, latest_milestone, latest_milestone_at FROM revenue_engine.lifetime_usage WHERE user_id = u(506);

-- One WAL record per row update: the heap update of each row (HOT here), no
-- separate record locking it first.
CREATE EXTENSION pg_walinspect;
SELECT revenue_engine.track_daily_usage(u(507), 'clicks', 1, '2026-11-18')->'lifetime_total';
BEGIN;
SELECT pg_current_wal_insert_lsn() AS lsn0, pg_current_xact_id() AS xid \gset
SELECT revenue_engine.track_daily_usage(u(507), 'clicks', 1, '2026-11-18')->'lifetime_total';
COMMIT;
SELECT count(*) FILTER (WHERE record_type LIKE '%LOCK%') AS lock_records,
       count(*) FILTER (WHERE record_type LIKE '%UPDATE%') AS update_records
  FROM pg_get_wal_records_info(:'lsn0', pg_current_wal_flush_lsn())
 WHERE xid = :'xid'::xid AND resource_manager LIKE 'Heap%';
DROP EXTENSION pg_walinspect;

-- A primary key other than the one expected (columns, order, types): the
-- table is declined, said at DEBUG1, and its rows are written by statements.
BEGIN;
ALTER TABLE revenue_engine.daily_usage DROP CONSTRAINT daily_usage_pkey;
ALTER TABLE revenue_engine.daily_usage ADD PRIMARY KEY (tenant_id, usage_type, user_id, usage_date);
SET LOCAL client_min_messages = debug1;
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 2, '2026-11-18')->'current_count';
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 3, '2026-11-18')->'current_count';  -- 5
RESET client_min_messages;
SELECT count, count(*) OVER () AS rows FROM revenue_engine.daily_usage WHERE user_id = u(508);
ROLLBACK;
BEGIN;
ALTER TABLE revenue_engine.user_profiles DROP CONSTRAINT user_profiles_pkey;
ALTER TABLE revenue_engine.user_profiles ADD CONSTRAINT user_profiles_pkey PRIMARY KEY (user_id, tenant_id);
SELECT timezone FROM revenue_engine.set_user_profile(u(508), timezone => 'Asia/Kolkata');
SET LOCAL client_min_messages = debug1;
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 2, '2026-11-18')->'timezone';
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 3, '2026-11-18')->'timezone';
RESET client_min_messages;
ROLLBACK;
-- Without a primary key the statement's ON CONFLICT has nothing to match.
BEGIN;
ALTER TABLE revenue_engine.lifetime_usage DROP CONSTRAINT lifetime_usage_pkey;
\set VERBOSITY terse
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 1, '2026-11-18')->'lifetime_total';
\set VERBOSITY default
ROLLBACK;
-- The rolled-back changes restored the keys: the keyed path again.
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 1, '2026-11-18')->'lifetime_total';
SELECT revenue_engine.track_daily_usage(u(508), 'clicks', 1, '2026-11-18')->'lifetime_total';  -- 2

-- A profile changed, deleted or re-created is read as it is now, in the same
-- transaction and the next, though its writes invalidate nothing.
SELECT count(*) AS invalidation_triggers FROM pg_trigger
 WHERE tgrelid = 'revenue_engine.user_profiles'::regclass;
SELECT timezone FROM revenue_engine.set_user_profile(u(509), timezone => 'Asia/Tokyo');
BEGIN;
SELECT revenue_engine.track_daily_usage(u(509), 'clicks')->'timezone';
SELECT timezone FROM revenue_engine.set_user_profile(u(509), timezone => 'America/New_York');
SELECT revenue_engine.track_daily_usage(u(509), 'clicks')->'timezone';
DELETE FROM revenue_engine.user_profiles WHERE user_id = u(509);
SELECT revenue_engine.track_daily_usage(u(509), 'clicks')->'timezone';  -- UTC
SELECT timezone FROM revenue_engine.set_user_profile(u(509), timezone => 'Europe/Berlin');
SELECT revenue_engine.track_daily_usage(u(509), 'clicks')->'timezone';
COMMIT;
SELECT revenue_engine.track_daily_usage(u(509), 'clicks')->'timezone';

-- Event ids are core's gen_random_uuid(): RFC 4122 version 4, variant 1.
SELECT count(*) > 0 AS some, count(*) FILTER (WHERE substr(id::text, 15, 1) <> '4'
                                            OR substr(id::text, 20, 1) NOT IN ('8', '9', 'a', 'b')) AS not_v4
  FROM revenue_engine.webhook_events WHERE event_type = 'milestone_reached';
