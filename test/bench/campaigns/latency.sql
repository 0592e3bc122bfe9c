-- (b) of test/bench/campaigns.sh: one enrollment with zero delay per
-- transaction, of the next contact; its context carries clock_timestamp()
-- taken just before the commit (the statement is the transaction).
SELECT revenue_engine.enroll('lat', 'l' || nextval('bench.lat_seq'),
                             jsonb_build_object('t', extract(epoch FROM clock_timestamp())));
