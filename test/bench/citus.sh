#!/usr/bin/env bash
# Benchmark of revenue_engine on Citus (issue 11, point 3): a coordinator and
# two workers on this machine (test/citus/cluster.sh, Citus 13.2.2 built by
# scripts/build-citus.sh) against one node of the same PostgreSQL, same run.
#
#   (1) track_daily_usage calls/s: pgbench -n -M prepared -c 4 -j 2 -T
#       BENCH_SECONDS (default 20) of the tenant form,
#       track_daily_usage(tenant, user_id, 'reply', 1, NULL), a random user of
#       1,000 in each of 3 tenants; on Citus through the distributed function
#       (each call runs on the worker node that holds its tenant), and the
#       same calls on the single node;
#   (2) the latency (p50, p99) of a call that writes an event,
#       enqueue_event(tenant, user_id, 'bench_event', '{}'), one client,
#       BENCH_SECONDS, on Citus and on the single node (pgbench -l).
#
# Both sides have an endpoint per tenant answering 204 (a local nginx), so
# the workers deliver while the benchmark runs, as in production.  The
# machine has 2 cores: the three Citus nodes, the single node, the clients
# and the sink share them, so (1) compares the two set-ups, not what three
# machines would do.  Usage: bash test/bench/citus.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${BENCH_SECONDS:-20}
PGC=$(bash "$ROOT/scripts/build-citus.sh" | tail -1)
export PG_CONFIG="$PGC"
unset PGBIN
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/citus/cluster.sh"
citus_install_extension "$ROOT"

DIR=$(mktemp -d /tmp/re_bench_citus.XXXXXX)
chmod 755 "$DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
NGINX_PID=
cleanup() {
	[ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
	citus_cluster_stop 2>/dev/null
	re_cluster_stop "$DIR/single" 2>/dev/null
	rm -rf "$DIR"
}
trap cleanup EXIT

SINK_PORT=$(re_free_port)
re_nginx_sink "$DIR/nginx" "$SINK_PORT"
citus_cluster_start "$DIR/citus"
SPORT=$(re_free_port)
re_cluster_start "$DIR/single" "$SPORT" "revenue_engine.http_allow_private = on" "${RE_BENCH_SETTINGS[@]}"
spsql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$DIR/single" -p "$SPORT" -U postgres -d postgres "$@"; }

SETUP="
SELECT revenue_engine.register_event_type('bench_event');
SET revenue_engine.tenant = 'acme';
SELECT revenue_engine.create_endpoint('sink', 'http://127.0.0.1:$SINK_PORT/acme');
SET revenue_engine.tenant = 'globex';
SELECT revenue_engine.create_endpoint('sink', 'http://127.0.0.1:$SINK_PORT/globex');
SET revenue_engine.tenant = 'initech';
SELECT revenue_engine.create_endpoint('sink', 'http://127.0.0.1:$SINK_PORT/initech');
"
cpsql 0 -c "CREATE EXTENSION revenue_engine" -c "SELECT count(*) FROM revenue_engine.distribute()" >/dev/null
cpsql 0 -c "$SETUP" >/dev/null
spsql -c "CREATE EXTENSION revenue_engine" -c "$SETUP" >/dev/null

cat >"$DIR/usage.sql" <<'SQL'
\set t random(0, 2)
\set i random(0, 999)
SELECT revenue_engine.track_daily_usage((ARRAY['acme', 'globex', 'initech'])[:t + 1], md5('user' || :i)::uuid, 'reply', 1, NULL);
SQL
cat >"$DIR/event.sql" <<'SQL'
\set t random(0, 2)
\set i random(0, 999)
SELECT revenue_engine.enqueue_event((ARRAY['acme', 'globex', 'initech'])[:t + 1], md5('user' || :i)::uuid, 'bench_event', '{}');
SQL
chmod a+r "$DIR"/*.sql

# pgbench against node: c (coordinator) or s (single); prints its tps line
bench() {
	local where="$1" script="$2" clients="$3" extra="${4:-}"
	local host port
	if [ "$where" = c ]; then host="${CITUS_DIRS[0]}"; port="${CITUS_PORTS[0]}"; db=$CITUS_DB; else host="$DIR/single"; port=$SPORT; db=postgres; fi
	(cd "$DIR" && as_postgres pgbench -n -M prepared -c "$clients" -j "$(( clients > 1 ? 2 : 1 ))" -T "$SECS" $extra \
		-h "$host" -p "$port" -U postgres -f "$script" "$db" 2>&1)
}
percentiles() {			# pgbench -l logs in $DIR -> "p50 p99" in ms
	cat "$DIR"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "p50 %.2f ms, p99 %.2f ms (%d calls)", a[int(NR*0.50)]/1000, a[int(NR*0.99)]/1000, NR}'
	rm -f "$DIR"/pgbench_log.*
}

echo "revenue_engine on Citus: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, PostgreSQL $($PG_CONFIG --version | cut -d' ' -f2), Citus 13.2.2 (coordinator + 2 workers, shard_count 4), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
echo "(1) track_daily_usage(tenant, ...), pgbench -M prepared -c 4 -j 2 -T $SECS, 3 tenants x 1,000 users"
# warm-up: every user's rows exist on both sides
bench s "$DIR/usage.sql" 4 >/dev/null
bench c "$DIR/usage.sql" 4 >/dev/null
s_tps=$(bench s "$DIR/usage.sql" 4 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
c_tps=$(bench c "$DIR/usage.sql" 4 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
printf '    single node:                   %8.0f calls/s\n' "${s_tps:-0}"
printf '    Citus, distributed function:   %8.0f calls/s  (%.2f of the single node)\n' "${c_tps:-0}" \
	"$(python3 -c "print(${c_tps:-0} / max(${s_tps:-0}, 1e-9))")"
echo
echo "(2) a call that writes an event: enqueue_event(tenant, ...), one client, -T $SECS"
bench s "$DIR/event.sql" 1 -l >/dev/null
echo "    single node:                   $(percentiles)"
bench c "$DIR/event.sql" 1 -l >/dev/null
echo "    Citus, distributed function:   $(percentiles)"
echo
echo "events delivered during the run: single node $(spsql -Atc "SELECT count(*) FILTER (WHERE status = 'sent') || ' of ' || count(*) FROM revenue_engine.webhook_events"), Citus $(cpsql 0 -Atc "SELECT count(*) FILTER (WHERE status = 'sent') || ' of ' || count(*) FROM revenue_engine.webhook_events")"
