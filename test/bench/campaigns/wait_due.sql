-- (a) of test/bench/campaigns.sh: from the moment all steps became due
-- (bench.t0, epoch seconds), wait until bench.target campaign messages exist
-- (every step claimed and its send queued) and until as many sends are sent
-- (each reached the sink and its outcome was recorded).  Prints
-- "queued <seconds>" and "sent <seconds>" after bench.t0.  A COMMIT per poll
-- keeps no snapshot open across polls; polls every 50 ms.
DO $wait$
DECLARE
    target   bigint := current_setting('bench.target')::bigint;
    t0       double precision := current_setting('bench.t0')::double precision;
    deadline timestamptz := clock_timestamp() + current_setting('bench.timeout')::interval;
    nq       bigint := 0;
    ns       bigint := 0;
    tq       double precision;
    ts       double precision;
BEGIN
    LOOP
        IF tq IS NULL THEN
            SELECT count(*) INTO nq FROM revenue_engine.campaign_messages;
            IF nq >= target THEN
                tq := extract(epoch FROM clock_timestamp()) - t0;
            END IF;
        END IF;
        IF tq IS NOT NULL THEN
            SELECT count(*) INTO ns FROM revenue_engine.sends WHERE status = 'sent';
            IF ns >= target THEN
                ts := extract(epoch FROM clock_timestamp()) - t0;
                EXIT;
            END IF;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'timed out: % of % steps queued, % sent', nq, target, ns;
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RAISE NOTICE 'queued %', round(tq::numeric, 3);
    RAISE NOTICE 'sent %', round(ts::numeric, 3);
END
$wait$;
