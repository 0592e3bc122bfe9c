#!/usr/bin/env bash
# Benchmark of revenue_engine.track_daily_usage (issue "track_daily_usage"):
# the C function against the way applications do it today (a PL/pgSQL
# reference) and against the floor (a LANGUAGE sql function doing only the
# two upserts), all in one run on one throwaway cluster with the same 10,000
# users.  Usage: bash test/bench/run.sh   (or make bench)
#
#   (a) 200,000 calls in one transaction per variant, C / PL/pgSQL / floor
#       alternated over BENCH_ROUNDS rounds (default 3); medians reported
#   (b) pgbench -n -M prepared -c 4 -j 2 -T BENCH_SECONDS (default 30) per
#       variant, alternated, BENCH_PGBENCH_ROUNDS rounds (default 1)
#   (c) one backend: C function memory (pg_backend_memory_contexts and RSS)
#       after 1,000 and after 1,000,000 calls
#
# It benchmarks the extension already installed (it does not build).  The
# report is printed and saved to test/bench/results/usage-<date>.txt.
#
# Every variant starts from empty counter tables: TRUNCATE, then CHECKPOINT.
# The empty counter tables must not be analyzed: analyzing an empty table
# records reltuples = 0, and then the plans a backend caches on its first call
# (the C function's SPI plans, PL/pgSQL's plans) pick sequential scans for the
# keyed UPDATE/SELECT statements and keep them for the whole run, so (a)
# becomes quadratic (seen: PL/pgSQL 2.6-3 ms/call instead of ~60 us, C ~270
# us).  So the script does not VACUUM ANALYZE them, and autovacuum is off in
# the throwaway cluster: in one run it analyzed a just-truncated table while
# the next variant was starting (PL/pgSQL then took 632 s).  After TRUNCATE the tables
# are in the "never analyzed" state of a freshly created table, as in a new
# deployment, and the planner uses the primary keys.  No autovacuum also keeps
# its workers out of the CPU figures of (b).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH="$ROOT/test/bench"
source "$ROOT/test/lib/cluster.sh"

BENCH_SECONDS=${BENCH_SECONDS:-30}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}		# (a) rounds
PGBENCH_ROUNDS=${BENCH_PGBENCH_ROUNDS:-1}	# (b) rounds (the issue asks for one)
CLK_TCK=$(getconf CLK_TCK)
MEM_CALLS=${BENCH_MEM_CALLS:-1000000}	# (c); override only to try the script quickly
MEM_BATCH=10000		# (c) calls per statement (each its own transaction)
MEM_SNAP=100000		# (c) memory read every MEM_SNAP calls

# tenant: the C function's tenant form, track_daily_usage('default', user_id,
# 'reply', 1, NULL) (src/tenancy/tenant_forms.sql), which must cost about
# what the plain form costs.
VARIANTS=(c tenant plpgsql floor)
declare -A FN=(
	[c]=revenue_engine.track_daily_usage
	[tenant]=revenue_engine.track_daily_usage
	[plpgsql]=bench.track_daily_usage_plpgsql
	[floor]=bench.track_daily_usage_floor
)
declare -A PRE=([tenant]="'default', ")		# the tenant form's arguments before
declare -A POST=([tenant]=", NULL")			# and after the plain form's
declare -A DAILY=([c]=revenue_engine.daily_usage [tenant]=revenue_engine.daily_usage [plpgsql]=bench.daily_usage [floor]=bench.daily_usage)
declare -A LIFETIME=([c]=revenue_engine.lifetime_usage [tenant]=revenue_engine.lifetime_usage [plpgsql]=bench.lifetime_usage [floor]=bench.lifetime_usage)
declare -A EVENTS=([c]=revenue_engine.webhook_events [tenant]=revenue_engine.webhook_events [plpgsql]=bench.webhook_events [floor]=bench.webhook_events)

# What is benchmarked: the installed build (the tree may be ahead of it).
SO="$($PG_CONFIG --pkglibdir)/revenue_engine.so"
DIRTY=""
[ -n "$(git -C "$ROOT" status --porcelain -- src 2>/dev/null)" ] && DIRTY=" + uncommitted changes in src/"
ENV_LINE="PostgreSQL $($PG_CONFIG --version | cut -d' ' -f2), $(nproc) CPUs, installed revenue_engine.so md5 $(md5sum "$SO" | cut -c1-12) ($(date -r "$SO" '+%Y-%m-%d %H:%M')), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$DIRTY"

START=$(date +%s)
DIR=$(mktemp -d /tmp/re_bench.XXXXXX)
PORT=$(re_free_port)
RESULTS="$BENCH/results"
REPORT_FILE="$RESULTS/usage-$(date +%Y-%m-%d_%H%M%S).txt"
RAW="$DIR/raw"				# "section variant round value..." lines

cleanup() { re_cluster_stop "$DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%4ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
# The 1-min load average before each measurement: the machine may be shared.
load() { echo "L $(cut -d' ' -f1 /proc/loadavg)" >>"$RAW"; }

pq() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -d postgres "$@"; }

log "cluster in $DIR, port $PORT"
re_cluster_start "$DIR" "$PORT" "${RE_BENCH_SETTINGS[@]}" "log_min_messages = warning"
cp "$BENCH"/reference.sql "$BENCH"/setup.sql "$BENCH"/pgbench_*.sql "$DIR/"
chown postgres: "$DIR"/*.sql
: >"$RAW"

log "setup: extension, bench schema, 10,000 users with profiles"
pq -c "CREATE EXTENSION revenue_engine" >/dev/null
pq -f "$DIR/reference.sql" >/dev/null
pq -f "$DIR/setup.sql" >/dev/null

reset_counters() {
	pq >/dev/null <<-'SQL'
	TRUNCATE bench.daily_usage, bench.lifetime_usage, bench.webhook_events,
	         revenue_engine.daily_usage, revenue_engine.lifetime_usage,
	         revenue_engine.milestones_reached, revenue_engine.webhook_events;
	VACUUM ANALYZE bench.users, bench.call_seq, bench.user_profiles, revenue_engine.user_profiles;
	CHECKPOINT;
	SQL
}

# "calls daily_sum events" of a variant's tables
counters() {
	local v=$1
	pq -F ' ' -c "SELECT (SELECT coalesce(sum(total), 0) FROM ${LIFETIME[$v]}),
	                     (SELECT coalesce(sum(count), 0) FROM ${DAILY[$v]}),
	                     (SELECT count(*) FROM ${EVENTS[$v]})"
}

# --- (a) 200,000 calls in one transaction -----------------------------------
# CPU time of the backend (utime + stime, clock ticks) from /proc, next to the
# wall time: the machine may be shared, and CPU time is less sensitive to that.
CPU_SQL="(SELECT (f[12])::bigint + (f[13])::bigint FROM string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') AS f)"
for round in $(seq 1 "$BENCH_ROUNDS"); do
	for v in "${VARIANTS[@]}"; do
		reset_counters
		load
		out=$(pq -F ' ' <<-SQL
		BEGIN;
		SELECT $CPU_SQL;
		SELECT count(${FN[$v]}(${PRE[$v]:-}s.user_id, 'reply', 1${POST[$v]:-})) FROM bench.call_seq s;
		SELECT extract(epoch FROM clock_timestamp() - now()), $CPU_SQL;
		COMMIT;
		SQL
		)
		{ read -r cpu0; read -r n; read -r secs cpu1; } <<<"$out"
		cpu=$(python3 -c "print(($cpu1 - $cpu0) / $CLK_TCK)")
		read -r total daily events <<<"$(counters "$v")"
		echo "a $v $round $secs $n $total $daily $events $cpu" >>"$RAW"
		log "(a) round $round $v: ${secs}s (CPU ${cpu}s) for $n calls (lifetime sum $total, daily sum $daily, events $events)"
	done
done

# --- (b) pgbench ------------------------------------------------------------
# Server CPU of a run: the postmaster's reaped children (the pgbench backends;
# autovacuum is off) from /proc/<postmaster>/stat.
PM_PID=$(head -1 "$DIR/data/postmaster.pid")
children_cpu() { local f; read -r -a f <"/proc/$PM_PID/stat"; echo $((f[15] + f[16])); }
for round in $(seq 1 "$PGBENCH_ROUNDS"); do
	for v in "${VARIANTS[@]}"; do
		reset_counters
		log "(b) round $round pgbench $v, ${BENCH_SECONDS}s"
		load
		cpu0=$(children_cpu)
		as_postgres pgbench -n -M prepared -c 4 -j 2 -T "$BENCH_SECONDS" \
			-h "$DIR" -p "$PORT" -f "$DIR/pgbench_$v.sql" postgres >"$DIR/pgbench_$v.log" 2>&1 ||
			{ cat "$DIR/pgbench_$v.log"; exit 1; }
		tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$DIR/pgbench_$v.log")
		lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$DIR/pgbench_$v.log")
		ntx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$DIR/pgbench_$v.log")
		nfail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$DIR/pgbench_$v.log")
		sleep 1		# the backends have exited; let the postmaster reap them
		cpu=$(python3 -c "print(($(children_cpu) - $cpu0) / $CLK_TCK)")
		read -r total daily events <<<"$(counters "$v")"
		echo "b $v $round $tps $lat $ntx ${nfail:-0} $total $daily $events $cpu" >>"$RAW"
		log "(b) round $round $v: tps $tps, latency ${lat} ms, $ntx transactions, server CPU ${cpu}s (lifetime sum $total, events $events)"
	done
done

# --- (c) memory of one backend ------------------------------------------------
reset_counters
load
log "(c) memory: $MEM_CALLS calls of the C function in one backend"
call() {	# from to
	echo "SELECT count(revenue_engine.track_daily_usage(md5('user' || ((i * 7919) % 10000))::uuid, 'reply', 1)) FROM generate_series($1::bigint, $2) AS i;"
}
snap() {	# calls
	echo "SELECT 'm', $1, (SELECT sum(total_bytes) FROM pg_backend_memory_contexts),
	         (SELECT count(*) FROM pg_backend_memory_contexts),
	         substring(s FROM 'VmRSS:\s*(\d+) kB'), substring(s FROM 'RssAnon:\s*(\d+) kB')
	    FROM pg_read_file('/proc/' || pg_backend_pid() || '/status') AS s;"
}
contexts() {	# calls: bytes per context name, to tell what grew
	echo "SELECT 'x', $1, sum(total_bytes), name FROM pg_backend_memory_contexts GROUP BY name;"
}
{
	echo "SELECT 'pid', pg_backend_pid();"
	call 1 1000
	snap 1000
	contexts 1000
	from=1001
	while [ "$from" -le "$MEM_CALLS" ]; do
		to=$(( (from - 1) / MEM_BATCH * MEM_BATCH + MEM_BATCH ))
		[ "$to" -gt "$MEM_CALLS" ] && to=$MEM_CALLS
		call "$from" "$to"
		if [ $((to % MEM_SNAP)) -eq 0 ] || [ "$to" -eq "$MEM_CALLS" ]; then snap "$to"; fi
		from=$((to + 1))
	done
	contexts "$MEM_CALLS"
} | pq -F ' ' >"$DIR/mem.out"
grep '^m ' "$DIR/mem.out" | sed 's/^m /c c 1 /' >>"$RAW"
grep '^x ' "$DIR/mem.out" >>"$RAW"
read -r total daily events <<<"$(counters c)"
log "(c) done: lifetime sum $total, events $events"
echo "cc c 1 $total $daily $events" >>"$RAW"

# --- report -----------------------------------------------------------------
mkdir -p "$RESULTS"
python3 - "$RAW" "$BENCH_SECONDS" "$BENCH_ROUNDS" "$PGBENCH_ROUNDS" "$ENV_LINE" "$(($(date +%s) - START))" <<'PY' | tee "$REPORT_FILE"
import statistics, sys
from collections import defaultdict

raw, seconds, rounds, brounds, env, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
a = defaultdict(list); a_cpu = defaultdict(list); a_check = defaultdict(list)
b = defaultdict(list); mem = []; mem_check = None; ctx = defaultdict(dict); loads = []
for line in open(raw):
    f = line.split()
    if f[0] == "a":
        a[f[1]].append(float(f[3])); a_check[f[1]].append(f[4:8]); a_cpu[f[1]].append(float(f[8]))
    elif f[0] == "b":
        b[f[1]].append(f[3:])
    elif f[0] == "c":
        mem.append([int(x) for x in f[3:]])
    elif f[0] == "cc":
        mem_check = f[3:]
    elif f[0] == "L":
        loads.append(float(f[1]))
    elif f[0] == "x":
        g = line.rstrip("\n").split(" ", 3)
        ctx[int(g[1])][g[3]] = int(g[2])

NAMES = {"c": "C", "tenant": "C tenant", "plpgsql": "PL/pgSQL", "floor": "floor"}
TARGET_SPEEDUP, FLOOR_SLACK = 1.3, 1.05
out = []
p = out.append
p("track_daily_usage benchmark: C vs PL/pgSQL reference vs SQL floor")
p(env)
p("10,000 users, usage type 'reply', count 1; call i -> user (i * 7919) % 10000")
p(f"1-min load average before the measurements: {min(loads):.1f} to {max(loads):.1f} "
  "(the benchmark itself keeps about 1 CPU busy in (a) and (c), all of them in (b); more means other work "
  "competed for the CPUs and wall-clock figures are noisy: compare the CPU figures too)")
p("")

med = {v: statistics.median(a[v]) for v in a}
cpu = {v: statistics.median(a_cpu[v]) for v in a_cpu}
p(f"(a) 200,000 calls in one transaction, median of {rounds} alternated rounds (wall clock; CPU = the backend's CPU time)")
for v in ("c", "tenant", "plpgsql", "floor"):
    runs = ", ".join(f"{x:.2f}" for x in a[v])
    chk = a_check[v][-1]
    p(f"    {NAMES[v]:9s} {med[v]:7.2f} s  {med[v] / 200000 * 1e6:6.1f} us/call   CPU {cpu[v] / 200000 * 1e6:6.1f} us/call   "
      f"(runs: {runs} s; lifetime sum {chk[1]}, daily sum {chk[2]}, events {chk[3]})")
r_ref = med["c"] / med["plpgsql"]
r_floor = med["c"] / med["floor"]
p(f"    C time / PL/pgSQL time = {r_ref:.2f}  ->  C speed-up over PL/pgSQL {1 / r_ref:.2f}x "
  f"[target >= {TARGET_SPEEDUP}x: {'MET' if 1 / r_ref >= TARGET_SPEEDUP else 'NOT MET'}]")
p(f"    C time / floor time    = {r_floor:.2f}  ->  C is {abs(r_floor - 1) * 100:.0f}% "
  f"{'slower' if r_floor > 1 else 'faster'} than the floor "
  f"[target time ratio <= {FLOOR_SLACK:.2f}: {'MET' if r_floor <= FLOOR_SLACK else 'NOT MET'}]")
p(f"    C tenant form time / C time = {med['tenant'] / med['c']:.2f}, by CPU time {cpu['tenant'] / cpu['c']:.2f}")
p(f"    by CPU time: C / PL/pgSQL = {cpu['c'] / cpu['plpgsql']:.2f} (speed-up {cpu['plpgsql'] / cpu['c']:.2f}x), "
  f"C / floor = {cpu['c'] / cpu['floor']:.2f}")
p("")

p(f"(b) pgbench -n -M prepared -c 4 -j 2 -T {seconds}, variants alternated, "
  + ("one run each" if brounds == 1 else f"median of {brounds} runs"))
tps = {}; bcpu = {}
for v in ("c", "tenant", "plpgsql", "floor"):
    runs = b[v]
    tps[v] = statistics.median(float(r[0]) for r in runs)
    bcpu[v] = statistics.median(float(r[7]) / int(r[2]) * 1e6 for r in runs)
    t, lat, ntx, nfail, total, daily, events, _ = runs[-1]
    ok = "" if all(int(r[4]) == int(r[2]) for r in runs) else "  MISMATCH"
    more = "" if len(runs) == 1 else f"  runs: {', '.join(r[0].split('.')[0] for r in runs)} tps;"
    p(f"    {NAMES[v]:9s} {tps[v]:9.1f} tps  latency {float(lat):6.3f} ms  server CPU {bcpu[v]:5.1f} us/call  "
      f"({ntx} calls, {nfail} failed; lifetime sum {total}{ok}, events {events}){more}")
p(f"    C TPS / PL/pgSQL TPS = {tps['c'] / tps['plpgsql']:.2f}x speed-up   "
  f"(C time / PL/pgSQL time = {tps['plpgsql'] / tps['c']:.2f})")
rb = tps["floor"] / tps["c"]
p(f"    C TPS / floor TPS    = {tps['c'] / tps['floor']:.2f}x speed-up   "
  f"(C time / floor time = {rb:.2f}) "
  f"[target time ratio <= {FLOOR_SLACK:.2f}: {'MET' if rb <= FLOOR_SLACK else 'NOT MET'}]")
p(f"    C tenant form TPS / C TPS = {tps['tenant'] / tps['c']:.2f}, server CPU per call {bcpu['tenant'] / bcpu['c']:.2f}")
p(f"    by server CPU per call: C / PL/pgSQL = {bcpu['c'] / bcpu['plpgsql']:.2f}, C / floor = {bcpu['c'] / bcpu['floor']:.2f}")
p("")

p("(c) C function, one backend: memory after N calls (statements of 10,000 calls, one transaction each)")
p("    calls      contexts kB  #contexts  VmRSS kB  RssAnon kB")
for calls, total, n, rss, anon in mem:
    p(f"    {calls:9,d}  {total / 1024:11.1f}  {n:9d}  {rss:8d}  {anon:10d}")
first, last = mem[0], mem[-1]
steady = next((m for m in mem if m[0] >= 100000), first)
grow = (last[1] - first[1]) / 1024
grow_steady = (last[1] - steady[1]) / 1024
p(f"    memory contexts: {first[1] / 1024:.1f} kB after {first[0]:,d} calls, {last[1] / 1024:.1f} kB after "
  f"{last[0]:,d} calls: {grow:+.1f} kB ({grow * 1024 / (last[0] - first[0]):+.3f} B/call); "
  f"from {steady[0]:,d} to {last[0]:,d} calls {grow_steady:+.1f} kB")
p(f"    VmRSS {first[3]} -> {last[3]} kB ({last[3] - first[3]:+d} kB, includes shared buffers touched); "
  f"RssAnon {first[4]} -> {last[4]} kB ({last[4] - first[4]:+d} kB)")
if len(ctx) == 2:
    c0, c1 = (ctx[k] for k in sorted(ctx))
    diffs = sorted(((c1.get(n, 0) - c0.get(n, 0), n) for n in set(c0) | set(c1)), key=lambda d: -abs(d[0]))
    grew = [f"{n!r} {d / 1024:+.1f} kB" for d, n in diffs[:4] if d != 0]
    p(f"    contexts that changed most from {first[0]:,d} to {last[0]:,d} calls: " + ("; ".join(grew) or "none"))
flat = abs(grow) <= 256
steady_flat = abs(grow_steady) <= 64
p(f"    [target flat memory ({first[0]:,d} vs {last[0]:,d} calls, within 256 kB): {'MET' if flat else 'NOT MET'}; "
  f"from {steady[0]:,d} calls on (within 64 kB): {'flat' if steady_flat else 'NOT flat'}]"
  + (f"  (lifetime sum {mem_check[0]}, events {mem_check[2]})" if mem_check else ""))
p("")

p("summary")
p(f"    (a) 200k calls/txn  C {med['c']:.2f} s {med['c'] / 200000 * 1e6:.1f} us/call | "
  f"PL/pgSQL {med['plpgsql']:.2f} s {med['plpgsql'] / 200000 * 1e6:.1f} us/call | "
  f"floor {med['floor']:.2f} s {med['floor'] / 200000 * 1e6:.1f} us/call | "
  f"speed-up over PL/pgSQL {1 / r_ref:.2f}x | C time / floor time {r_floor:.2f} | "
  f"tenant form {med['tenant'] / 200000 * 1e6:.1f} us/call ({med['tenant'] / med['c']:.2f} of C)")
p(f"    (b) pgbench 4 clients  C {tps['c']:.0f} tps | PL/pgSQL {tps['plpgsql']:.0f} tps | "
  f"floor {tps['floor']:.0f} tps | speed-up over PL/pgSQL {tps['c'] / tps['plpgsql']:.2f}x | "
  f"C time / floor time {rb:.2f} | tenant form {tps['tenant']:.0f} tps ({tps['tenant'] / tps['c']:.2f} of C)")
p(f"    (c) memory  {first[1] / 1024:.0f} kB after {first[0]:,d} calls -> {last[1] / 1024:.0f} kB after "
  f"{last[0]:,d} calls ({grow:+.1f} kB)")
p(f"    run took {elapsed} s")
print("\n".join(out))
PY
log "report saved to $REPORT_FILE"
