#!/usr/bin/env bash
# Benchmark of the delivery worker (issue: throughput, latency and memory of
# webhook delivery), all on one throwaway cluster with a fast local sink
# (nginx answering 204 on 127.0.0.1), in one run:
#
#   throughput  100,000 events enqueued while the endpoint is disabled, then
#               the endpoint is enabled and the worker drains them: deliveries/s
#               from the enable commit to the last sent_at.  Against it, the
#               database floor: the same claim / mark-sent SQL with no HTTP
#               (test/bench/delivery/floor.sql) on the same 100,000 rows reset to
#               pending.  Worker and floor alternate over BENCH_ROUNDS rounds
#               (default 2); medians reported.  Target >= 5,000 deliveries/s.
#   latency     pgbench offers 1,000 events/s for 10 s (-R 1000 -T 10 -c 4 -j 2);
#               each event carries clock_timestamp() taken just before its
#               commit, nginx logs $msec and the webhook-id of each request:
#               commit -> received p50/p90/p99/max.  Target p99 < 50 ms.
#   memory      the worker's RSS (and its memory contexts) after the first
#               1,000 deliveries (warm-up) and after each 100,000 round: flat.
#   diagnosis   one more worker round, not in the medians, under `perf record`
#               with the worker's pg_stat_activity sampled every 5 ms: where its
#               CPU and its wall-clock time go (BENCH_PERF=0 skips it).
#
# The machine may be shared: before each timed phase the script waits (up to
# 10 s) for the CPU load of other processes to drop, and it reports the load
# of other processes during each round.
#
# Usage: bash test/bench/delivery.sh   (as root, like the other benchmarks; the
# cluster runs as the postgres OS user).  It benchmarks the extension already
# installed (it does not build).  The report is printed and saved to
# test/bench/results/delivery-<date>.txt.
#
# Knobs (environment): BENCH_EVENTS (100000), BENCH_ROUNDS (2),
# BENCH_MAX_IN_FLIGHT (revenue_engine.worker_max_in_flight, 256),
# BENCH_ENDPOINT_MAX_IN_FLIGHT (256), BENCH_LAT_RATE (1000), BENCH_LAT_SECONDS
# (10), BENCH_FLOOR_CLAIM (the floor's claim size; default the worker's maximum,
# see below), BENCH_PERF (1), BENCH_QUIET_WAIT (max seconds to wait for a quiet
# machine before each timed phase, 10), BENCH_NICE (unset; e.g. -10 runs the
# script and everything it starts -- cluster, nginx, pgbench -- at that nice
# level, to favour the benchmark over other load on a shared machine).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH="$ROOT/test/bench"
HELP="$BENCH/delivery"
source "$ROOT/test/lib/cluster.sh"

N=${BENCH_EVENTS:-100000}
ROUNDS=${BENCH_ROUNDS:-2}
WARMUP=1000
WORKER_MIF=${BENCH_MAX_IN_FLIGHT:-256}
EP_MIF=${BENCH_ENDPOINT_MAX_IN_FLIGHT:-256}
LAT_RATE=${BENCH_LAT_RATE:-1000}
LAT_SECONDS=${BENCH_LAT_SECONDS:-10}
PERF=${BENCH_PERF:-1}
QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
# The worker claims at most min(RE_CLAIM_BATCH, free endpoint slots, free
# worker slots) rows at once and records at most RE_RECORD_BATCH outcomes per
# transaction (src/worker/worker.c; 500 and 256): the floor uses those maxima.
RE_CLAIM=$(sed -n 's/^#define RE_CLAIM_BATCH \([0-9]*\).*/\1/p' "$ROOT/src/worker/worker.c")
RE_RECORD=$(sed -n 's/^#define RE_RECORD_BATCH \([0-9]*\).*/\1/p' "$ROOT/src/worker/worker.c")
RE_CLAIM=${RE_CLAIM:-500}
RE_RECORD=${RE_RECORD:-256}
CLAIM_BATCH=$RE_CLAIM
[ "$EP_MIF" -lt "$CLAIM_BATCH" ] && CLAIM_BATCH=$EP_MIF
[ "$WORKER_MIF" -lt "$CLAIM_BATCH" ] && CLAIM_BATCH=$WORKER_MIF
CLAIM_BATCH=${BENCH_FLOOR_CLAIM:-$CLAIM_BATCH}
RECORD_BATCH=$RE_RECORD
# floor.sql copies the worker's SQL: say so when src/outbox/delivery.c changed it since
SQL_CHECK=$(python3 "$ROOT/test/bench/delivery/sqlcheck.py" "$ROOT/src/outbox/delivery.c")

[ -n "${BENCH_NICE:-}" ] && renice -n "$BENCH_NICE" -p $$ >/dev/null
SO="$($PG_CONFIG --pkglibdir)/revenue_engine.so"
SO_MD5=$(md5sum "$SO" | cut -c1-12)
SO_DATE=$(date -r "$SO" '+%Y-%m-%d %H:%M:%S')

START=$(date +%s)
DIR=$(mktemp -d /tmp/re_delivery.XXXXXX)
NGX="$DIR/nginx"
PORT=$(re_free_port)
SINK_PORT=$(re_free_port)
LAT_PORT=$(re_free_port)
RESULTS="$BENCH/results"
REPORT_FILE="$RESULTS/delivery-$(date +%Y-%m-%d_%H%M%S).txt"
RAW="$DIR/raw"				# "kind round key=value ..." lines
NGINX_PID=""
PERF_PID=""
PM_PID=0
WPID=0
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

cleanup() {
	set +e
	[ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
	[ -n "$NGINX_PID" ] && kill -TERM "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
	re_cluster_stop "$DIR"
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%4ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
pq() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -d postgres "$@"; }

# "busy total ours worker nginx" CPU ticks (see delivery/cpu.py)
cpu_snap() { python3 "$HELP/cpu.py" "$PM_PID" "${NGINX_PID:-0}" "$$" "$WPID"; }
# "VmRSS RssAnon RssShmem" in kB
rss_of() { awk '/^(VmRSS|RssAnon|RssShmem):/{printf "%s ", $2} END{print ""}' "/proc/$1/status"; }
# the next transaction id to be assigned (does not assign one)
next_xid() { pq -c "SELECT pg_snapshot_xmax(pg_current_snapshot())"; }
worker_sent() { pq -c "SELECT sent FROM revenue_engine.workers WHERE database_name = current_database()"; }
wait_sent() {	# target timeout [pid to sample]
	pq -c "SET bench.target = '$1'" -c "SET bench.timeout = '$2'" -c "SET bench.sample_pid = '${3:-0}'" \
		-f "$HELP/wait_sent.sql" 2>&1
}

# The worker's memory contexts: pg_log_backend_memory_contexts writes them to
# the server log; "total_bytes blocks" of its "Grand total" line.
worker_contexts() {
	local before
	before=$(grep -c 'Grand total' "$DIR/server.log" || true)
	pq -c "SELECT pg_log_backend_memory_contexts($WPID)" >/dev/null
	for _ in $(seq 50); do
		[ "$(grep -c 'Grand total' "$DIR/server.log" || true)" -gt "$before" ] && break
		sleep 0.1
	done
	grep 'Grand total' "$DIR/server.log" | tail -1 |
		sed -n 's/.*Grand total: \([0-9]*\) bytes in \([0-9]*\) blocks.*/\1 \2/p'
}
rss_point() {	# label
	local rss ctx
	rss=$(rss_of "$WPID")
	ctx=$(worker_contexts)
	echo "rss $1 sent=$(worker_sent) $(awk '{print "vmrss=" $1, "anon=" $2, "shmem=" $3}' <<<"$rss")" \
		"$(awk '{print "ctx=" $1, "ctxblocks=" $2}' <<<"${ctx:-0 0}")" >>"$RAW"
}

# Wait (at most QUIET_WAIT s) until other processes use < 0.15 CPU for a second.
wait_quiet() {	# phase
	local t0 a b other
	t0=$(date +%s)
	while :; do
		a=$(cpu_snap); sleep 1; b=$(cpu_snap)
		other=$(python3 -c "
a = [int(x) for x in '$a'.split()]; b = [int(x) for x in '$b'.split()]
el = (b[1] - a[1]) / $NCPU
print(f'{((b[0] - a[0]) - (b[2] - a[2])) / el:.2f}')")
		if python3 -c "import sys; sys.exit(0 if $other < 0.15 else 1)"; then
			break
		fi
		if [ $(($(date +%s) - t0)) -ge "$QUIET_WAIT" ]; then
			log "$1: other processes still use $other CPU after ${QUIET_WAIT}s; going on"
			break
		fi
	done
	echo "quiet $1 other=$other waited=$(($(date +%s) - t0 - 1))" >>"$RAW"
}

# --- the sink ----------------------------------------------------------------
# throughput: answer 204, log nothing; latency: answer 204, log arrival time
# and webhook-id, unbuffered
re_nginx_sink "$NGX" "$SINK_PORT" \
	"log_format lat '\$msec \$http_webhook_id';" \
	"server { listen 127.0.0.1:$LAT_PORT; access_log $NGX/lat.log lat; location / { return 204; } }" || exit 1
log "nginx sink pid $NGINX_PID: throughput 127.0.0.1:$SINK_PORT, latency (logged) 127.0.0.1:$LAT_PORT"

# --- the cluster --------------------------------------------------------------
log "cluster in $DIR, port $PORT"
# autovacuum off: every timed phase starts from the same explicitly VACUUMed state
re_cluster_start "$DIR" "$PORT" "${RE_BENCH_SETTINGS[@]}" \
	"revenue_engine.http_allow_private = on" \
	"revenue_engine.worker_max_in_flight = $WORKER_MIF"
PM_PID=$(head -1 "$DIR/data/postmaster.pid")
: >"$RAW"

pq >/dev/null <<-SQL
CREATE EXTENSION revenue_engine;
SELECT revenue_engine.register_event_type('bench_event');
SELECT revenue_engine.create_endpoint('sink', 'http://127.0.0.1:$SINK_PORT/',
       signing_secret => '$SECRET', max_in_flight => $EP_MIF);
SQL
WPID=""
for _ in $(seq 300); do
	WPID=$(pq -c "SELECT pid FROM revenue_engine.workers WHERE database_name = current_database()")
	[ -n "$WPID" ] && break
	sleep 0.1
done
[ -n "$WPID" ] || { log "no delivery worker started"; cat "$DIR/server.log"; exit 1; }
log "delivery worker pid $WPID (worker_max_in_flight $WORKER_MIF, endpoint max_in_flight $EP_MIF)"
[ "$SQL_CHECK" = ok ] || log "WARNING: floor.sql is not the worker's current SQL ($SQL_CHECK)"

# --- warm-up: the first 1,000 deliveries, then the worker's memory ---------------
pq -c "SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'bench_event',
                                                 jsonb_build_object('warmup', g)))
         FROM generate_series(1, $WARMUP) g" >/dev/null
wait_sent "$WARMUP" '60 s' >/dev/null
rss_point warm-up
log "warm-up: $WARMUP delivered; worker VmRSS/RssAnon/RssShmem $(rss_of "$WPID")kB"

# --- 100,000 events, enqueued with the endpoint disabled -------------------------
pq -c "SELECT revenue_engine.set_endpoint_enabled('sink', false)" >/dev/null
t0=$(date +%s.%N)
for k in $(seq 0 9); do
	lo=$((k * N / 10 + 1))
	hi=$(((k + 1) * N / 10))
	pq -c "SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'bench_event',
	                                                 jsonb_build_object('n', g)))
	         FROM generate_series($lo, $hi) g" >/dev/null
done
t1=$(date +%s.%N)
log "enqueued $N events in 10 transactions: $(printf %.1f "$(echo "$t1 - $t0" | bc)") s"
echo "enqueue 0 n=$N secs=$(echo "$t1 - $t0" | bc)" >>"$RAW"

# Back to the state right after enqueueing: all bench deliveries pending with
# their original due time, events pending, attempt log empty, endpoint
# disabled; VACUUM ANALYZE and CHECKPOINT so every timed phase starts alike.
reset_state() {
	local pending
	pq >/dev/null <<-'SQL'
	SELECT revenue_engine.set_endpoint_enabled('sink', false);
	UPDATE revenue_engine.deliveries d
	   SET status = 'pending', attempts = 0, next_attempt_at = d.created_at, lease_until = NULL,
	       last_status = NULL, last_error = NULL, sent_at = NULL
	  FROM revenue_engine.webhook_events e
	 WHERE d.status <> 'pending' AND e.tenant_id = d.tenant_id AND e.id = d.event_id
	   AND e.event_data ? 'n';
	UPDATE revenue_engine.webhook_events
	   SET status = 'pending', attempts = 0, sent_at = NULL, error_message = NULL,
	       next_attempt_at = created_at
	 WHERE status <> 'pending' AND event_data ? 'n';
	DELETE FROM revenue_engine.delivery_attempts;
	VACUUM (ANALYZE) revenue_engine.deliveries, revenue_engine.webhook_events,
	                 revenue_engine.delivery_attempts, revenue_engine.endpoints;
	CHECKPOINT;
	SQL
	pending=$(pq -c "SELECT count(*) FROM revenue_engine.deliveries d
	                   JOIN revenue_engine.webhook_events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
	                  WHERE d.status = 'pending' AND e.event_data ? 'n'")
	[ "$pending" = "$N" ] || { log "reset: $pending pending deliveries, expected $N"; exit 1; }
}

# key=value checks after a round that started at epoch $1: deliveries sent since
# then, record transactions (distinct sent_at: sent_at is now() of the recording
# transaction), events sent, attempts logged as sent/204 and otherwise
round_checks() {
	pq -F ' ' -c "SELECT 'ok=' || count(*) FILTER (WHERE status = 'sent'),
	                     'recs=' || count(DISTINCT sent_at),
	                     'end=' || extract(epoch FROM max(sent_at))
	                FROM revenue_engine.deliveries WHERE sent_at >= to_timestamp($1)"
	pq -F ' ' -c "SELECT 'ev=' || (SELECT count(*) FROM revenue_engine.webhook_events
	                                 WHERE status = 'sent' AND event_data ? 'n'),
	                     'a204=' || count(*) FILTER (WHERE status_code = 204 AND outcome = 'sent'),
	                     'aother=' || count(*) FILTER (WHERE status_code IS DISTINCT FROM 204 OR outcome <> 'sent')
	                FROM revenue_engine.delivery_attempts"
}
secs_of() {	# raw line -> end - start
	python3 -c "import sys; kv = dict(x.split('=', 1) for x in sys.argv[1].split() if '=' in x); print(f\"{float(kv['end']) - float(kv['start']):.2f}\")" "$1"
}
cpu_fields() {	# snapshot-before snapshot-after
	read -r b0 t0_ o0 w0 n0 <<<"$1"
	read -r b1 t1_ o1 w1 n1 <<<"$2"
	echo "busy=$((b1 - b0)) total=$((t1_ - t0_)) ours=$((o1 - o0)) wcpu=$((w1 - w0)) ncpu=$((n1 - n0)) hz=$HZ cpus=$NCPU"
}

worker_round() {	# round [diag]
	local round=$1 diag=${2:-} kind=w base x0 x1 c0 c1 t_enable out line
	reset_state
	wait_quiet "worker-$round"
	base=$(worker_sent)
	x0=$(next_xid)
	if [ -n "$diag" ]; then
		kind=wdiag
		perf record -F 999 -p "$WPID" -o "$DIR/perf.data" >"$DIR/perf-record.log" 2>&1 &
		PERF_PID=$!
		sleep 1
	fi
	c0=$(cpu_snap)
	t_enable=$(pq <<-'SQL'
	BEGIN;
	SELECT revenue_engine.set_endpoint_enabled('sink', true) \g /dev/null
	SELECT extract(epoch FROM clock_timestamp());
	COMMIT;
	SQL
	)
	out=$(wait_sent $((base + N)) '300 s' "$([ -n "$diag" ] && echo "$WPID" || echo 0)")
	c1=$(cpu_snap)
	if [ -n "$diag" ]; then
		kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""
		grep -o 'sample .*' <<<"$out" >"$DIR/activity.txt" || true
	fi
	x1=$(next_xid)
	line="$kind $round start=$t_enable xids=$((x1 - x0)) $(cpu_fields "$c0" "$c1") $(round_checks "$t_enable" | tr '\n' ' ')"
	echo "$line" >>"$RAW"
	if [ -z "$diag" ]; then rss_point "after-round-$round"; else rss_point after-diagnostic; fi
	log "worker round $round${diag:+ (diagnostic: perf + activity sampling)}: $(grep -o 'ok=[0-9]*' <<<"$line" | cut -c4-) sent in" \
		"$(secs_of "$line") s;" \
		"worker VmRSS/RssAnon/RssShmem $(rss_of "$WPID")kB"
}

floor_round() {	# round
	local round=$1 x0 x1 c0 c1 out t_start claims records rows tclaim trecord line
	reset_state
	wait_quiet "floor-$round"
	x0=$(next_xid)
	c0=$(cpu_snap)
	out=$(pq -c "SET bench.endpoint = 'sink'" -c "SET bench.claim_batch = '$CLAIM_BATCH'" \
		-c "SET bench.record_batch = '$RECORD_BATCH'" -f "$HELP/floor.sql" 2>&1)
	c1=$(cpu_snap)
	x1=$(next_xid)
	read -r _ t_start claims records rows tclaim trecord <<<"$(grep -o 'floor .*' <<<"$out")"
	line="f $round start=$t_start xids=$((x1 - x0)) claims=$claims records=$records rows=$rows tclaim=$tclaim trecord=$trecord $(cpu_fields "$c0" "$c1") $(round_checks "$t_start" | tr '\n' ' ')"
	echo "$line" >>"$RAW"
	log "floor round $round: $rows rows in $(secs_of "$line") s, $claims claim and $records record transactions"
}

# --- throughput: worker and floor, alternated --------------------------------------
for round in $(seq 1 "$ROUNDS"); do
	worker_round "$round"
	floor_round "$round"
done
if [ "$PERF" = 1 ]; then
	if command -v perf >/dev/null; then
		worker_round diag diag
		perf report -i "$DIR/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
			grep '%' | grep -v '^#' | head -12 >"$DIR/perf-dso.txt" || true
		perf report -i "$DIR/perf.data" --no-children --sort dso,symbol --stdio -g none \
			--percent-limit 0.7 2>/dev/null | grep '%' | grep -v '^#' | head -45 >"$DIR/perf-top.txt" || true
	else
		log "perf not found: no diagnostic round"
	fi
fi

# --- latency: 1,000 events/s offered, commit -> received at the sink ---------------------
pq >/dev/null <<-SQL
SELECT revenue_engine.alter_endpoint('sink', url => 'http://127.0.0.1:$LAT_PORT/');
VACUUM (ANALYZE) revenue_engine.deliveries, revenue_engine.webhook_events,
                 revenue_engine.delivery_attempts, revenue_engine.endpoints;
CHECKPOINT;
SELECT revenue_engine.set_endpoint_enabled('sink', true);
SQL
sleep 1.2	# the worker reloads its endpoints at least every second
wait_quiet latency
base=$(worker_sent)
x0=$(next_xid)
cp "$HELP/latency.sql" "$DIR/latency.sql"
chown postgres: "$DIR/latency.sql"
c0=$(cpu_snap)
log "latency: pgbench -n -R $LAT_RATE -T $LAT_SECONDS -c 4 -j 2"
as_postgres pgbench -n -R "$LAT_RATE" -T "$LAT_SECONDS" -c 4 -j 2 -h "$DIR" -p "$PORT" \
	-f "$DIR/latency.sql" postgres >"$DIR/pgbench.log" 2>&1 || { cat "$DIR/pgbench.log"; exit 1; }
c1=$(cpu_snap)
nlat=$(pq -c "SELECT count(*) FROM revenue_engine.webhook_events WHERE event_data ? 't'")
wait_sent $((base + nlat)) '120 s' >/dev/null
sleep 0.5	# nginx writes each log line when its request ends; let the last ones land
x1=$(next_xid)
# per event: id, clock_timestamp() before commit, when the worker started the
# request (attempt log started_at), when the outcome was recorded (sent_at)
pq -F ' ' -c "SELECT e.id, e.event_data->>'t', extract(epoch FROM a.started_at), extract(epoch FROM d.sent_at)
                FROM revenue_engine.webhook_events e
                JOIN revenue_engine.deliveries d ON d.tenant_id = e.tenant_id AND d.event_id = e.id
                LEFT JOIN revenue_engine.delivery_attempts a ON a.event_id = e.id AND a.outcome = 'sent'
               WHERE e.event_data ? 't'" >"$DIR/lat_events.txt"
recs=$(pq -c "SELECT count(DISTINCT d.sent_at) FROM revenue_engine.deliveries d
                JOIN revenue_engine.webhook_events e ON d.tenant_id = e.tenant_id AND d.event_id = e.id
               WHERE e.event_data ? 't'")
cp "$NGX/lat.log" "$DIR/lat_sink.txt"
echo "lat 0 n=$nlat xids=$((x1 - x0)) recs=$recs $(cpu_fields "$c0" "$c1")" >>"$RAW"
rss_point after-latency
log "latency: $nlat events enqueued, $(wc -l <"$DIR/lat_sink.txt") requests logged by the sink"

# --- report ----------------------------------------------------------------------
ENV_LINE="PostgreSQL $(pq -c 'SHOW server_version'), $NCPU CPUs, revenue_engine.so $SO_MD5 ($SO_DATE), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(/usr/sbin/nginx -v 2>&1 | sed 's|.*: ||'), libcurl $(curl --version | head -1 | awk '{print $2}')"
SO_MD5_END=$(md5sum "$SO" | cut -c1-12)
if [ "$SO_MD5_END" != "$SO_MD5" ]; then
	ENV_LINE="$ENV_LINE; WARNING: revenue_engine.so was replaced during the run (now $SO_MD5_END, $(date -r "$SO" '+%Y-%m-%d %H:%M:%S')): the worker ran the one loaded at start"
fi
[ -n "${BENCH_NICE:-}" ] && ENV_LINE="$ENV_LINE; run at nice $BENCH_NICE"
[ "$SQL_CHECK" = ok ] ||
	ENV_LINE="$ENV_LINE; WARNING: the worker's SQL in src/outbox/delivery.c differs from the copy in test/bench/delivery/floor.sql ($SQL_CHECK): the floor may not be the same work"
mkdir -p "$RESULTS"
touch "$DIR/perf-top.txt" "$DIR/perf-dso.txt" "$DIR/activity.txt"
python3 "$HELP/report.py" "$DIR" "$ENV_LINE" "$(($(date +%s) - START))" \
	"$WORKER_MIF" "$EP_MIF" "$CLAIM_BATCH" "$RECORD_BATCH" "$LAT_RATE" "$LAT_SECONDS" | tee "$REPORT_FILE"
log "report saved to $REPORT_FILE"
