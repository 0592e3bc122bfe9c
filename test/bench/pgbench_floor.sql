-- pgbench script of test/bench/run.sh (b): one call for a random user of the 10,000.
\set i random(0, 9999)
SELECT bench.track_daily_usage_floor(md5('user' || :i)::uuid, 'reply', 1);
