-- Wait until this database's delivery worker has recorded bench.target sent
-- deliveries (its shared-memory counter: no table scan).  A COMMIT per poll
-- keeps no snapshot open across polls.
--
-- bench.sample_pid = 0: poll every 100 ms.  Otherwise (the diagnostic round
-- only) poll every 5 ms and sample that backend's pg_stat_activity each time:
-- state, activity text and wait event; prints "sample <count> <key>" lines.
DO $wait$
DECLARE
    target   bigint := current_setting('bench.target')::bigint;
    deadline timestamptz := clock_timestamp() + current_setting('bench.timeout')::interval;
    spid     int := current_setting('bench.sample_pid')::int;
    s        bigint;
    k        text;
    keys     text[] := '{}';
    counts   int[] := '{}';
    i        int;
BEGIN
    LOOP
        IF spid <> 0 THEN
            SELECT a.state || ' | ' || coalesce(a.query, '') || ' | ' ||
                   coalesce(a.wait_event_type || ':' || a.wait_event, '-')
              INTO k FROM pg_stat_activity a WHERE a.pid = spid;
            i := array_position(keys, k);
            IF i IS NULL THEN
                keys := keys || k;
                counts := counts || 1;
            ELSE
                counts[i] := counts[i] + 1;
            END IF;
        END IF;
        SELECT w.sent INTO s FROM revenue_engine.workers w
         WHERE w.database_name = current_database();
        EXIT WHEN s >= target;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'timed out: the worker has sent % of %', s, target;
        END IF;
        COMMIT;
        PERFORM pg_sleep(CASE WHEN spid <> 0 THEN 0.005 ELSE 0.1 END);
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(keys), 0) LOOP
        RAISE NOTICE 'sample % %', counts[i], keys[i];
    END LOOP;
END
$wait$;
