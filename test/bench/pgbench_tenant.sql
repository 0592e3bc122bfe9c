-- pgbench script of test/bench/run.sh (b): one call of the tenant form for a random user of the 10,000.
\set i random(0, 9999)
SELECT revenue_engine.track_daily_usage('default', md5('user' || :i)::uuid, 'reply', 1, NULL);
