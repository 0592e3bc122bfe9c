#!/usr/bin/env bash
# The delivery worker's CPU while idle: a throwaway cluster with the extension
# in one database, one endpoint and one delivered event (so every code path of
# the loop has run once), then the worker's user+system CPU over
# BENCH_IDLE_SECONDS (60) with nothing to do, read from /proc/<pid>/stat.
# Usage: bash test/bench/idle.sh   (PG_CONFIG picks the build under test)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/test/lib/cluster.sh"
SECONDS_IDLE=${BENCH_IDLE_SECONDS:-60}
HZ=$(getconf CLK_TCK)
DIR=$(mktemp -d /tmp/re_idle.XXXXXX)
PORT=$(re_free_port)
trap 're_cluster_stop "$DIR"; rm -rf "$DIR"' EXIT

pq() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -d postgres "$@"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

re_cluster_start "$DIR" "$PORT" "revenue_engine.http_allow_private = on" >/dev/null
pq -c "CREATE EXTENSION revenue_engine"
# an endpoint nobody listens on: one failed attempt, then a retry hours away
pq -c "SELECT revenue_engine.create_endpoint('idle', 'http://127.0.0.1:9/', retry_schedule => '{1 hour}')" >/dev/null
pq -c "SELECT revenue_engine.enqueue_event(gen_random_uuid(), 'milestone_reached', '{}')" >/dev/null
WPID=""
for _ in $(seq 100); do
	WPID=$(pq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'revenue_engine worker' AND datname = 'postgres'")
	[ -n "$WPID" ] && [ "$(pq -c "SELECT count(*) FROM revenue_engine.delivery_attempts")" -gt 0 ] && break
	sleep 0.1
done
[ -n "$WPID" ] || { echo "no worker"; exit 1; }
sleep 2
t0=$(ticks "$WPID")
sleep "$SECONDS_IDLE"
t1=$(ticks "$WPID")
awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$SECONDS_IDLE" -v so="$($PG_CONFIG --pkglibdir)/revenue_engine.so" \
	'BEGIN { printf "idle worker CPU over %d s: %.2f s (%.3f%% of a core)  [%s]\n", s, d / hz, 100 * d / hz / s, so }'
