#!/usr/bin/env bash
# Benchmark of drip campaigns (issue 12, "Must be measured"), one throwaway
# cluster, a local nginx sink, one run:
#
#   (a) 100,000 steps due at once across 50 tenants (2,000 enrollments each,
#       one send step, a channel per tenant to the sink): enrolled with a start
#       a day ahead, then made due in one UPDATE of next_run_at (the bench's
#       only hand on the schedule) and the worker woken at its commit.  Time
#       from that commit until every step is claimed and its send queued (all
#       100,000 campaign messages exist), and until every send reached the
#       sink (the sink's log: last arrival; and all sends recorded sent).
#       Targets <= 20 s and <= 35 s; exactly 100,000 sends, 100,000 requests.
#   (b) latency from an enrolling commit (zero delay) to the provider request:
#       pgbench offers 1,000 enrollments/s for BENCH_LAT_SECONDS (10) s
#       (-R 1000 -c 4 -j 2), each enrollment's context carries clock_timestamp()
#       just before its commit, the sink logs $msec and the Idempotency-Key of
#       each request (-> send -> campaign message -> enrollment).  p50 / p99
#       against targets <= 10 ms and <= 50 ms.
#   (c) the cost the enrollment trigger adds to track_daily_usage: the usage
#       benchmark's (a) (test/bench/run.sh: 200,000 calls in one transaction,
#       10,000 users, the same data, setup.sql) with one active campaign
#       triggered by milestone_reached (10,000 contacts, one per user, so its
#       milestones enroll) vs none (the campaign paused), alternated over
#       BENCH_ROUNDS (3) rounds; medians and their ratio.
#
# Usage: bash test/bench/campaigns.sh   (or make bench).  It benchmarks the
# extension already installed (it does not build).  The report is printed and
# saved to test/bench/results/campaigns-<date>.txt.
# Knobs: BENCH_TENANTS (50), BENCH_PER_TENANT (2000), BENCH_LAT_RATE (1000),
# BENCH_LAT_SECONDS (10), BENCH_ROUNDS (3), BENCH_MAX_IN_FLIGHT (256),
# BENCH_PARTS ("a b c": the measurements to run), BENCH_TIMEOUT (300 s for (a)).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH="$ROOT/test/bench"
HELP="$BENCH/campaigns"
source "$ROOT/test/lib/cluster.sh"

TENANTS=${BENCH_TENANTS:-50}
PER=${BENCH_PER_TENANT:-2000}
TOTAL=$((TENANTS * PER))
LAT_RATE=${BENCH_LAT_RATE:-1000}
LAT_SECONDS=${BENCH_LAT_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WORKER_MIF=${BENCH_MAX_IN_FLIGHT:-256}
PARTS=" ${BENCH_PARTS:-a b c} "		# which measurements to run
part() { [[ "$PARTS" == *" $1 "* ]]; }
warm=0
LAT_CONTACTS=$((LAT_RATE * LAT_SECONDS * 2 + 1000))

SO="$($PG_CONFIG --pkglibdir)/revenue_engine.so"
ENV_LINE="PostgreSQL $($PG_CONFIG --version | cut -d' ' -f2), $(nproc) CPUs, installed revenue_engine.so md5 $(md5sum "$SO" | cut -c1-12) ($(date -r "$SO" '+%Y-%m-%d %H:%M')), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(/usr/sbin/nginx -v 2>&1 | sed 's|.*: ||')"

START=$(date +%s)
DIR=$(mktemp -d /tmp/re_campaigns.XXXXXX)
NGX="$DIR/nginx"
PORT=$(re_free_port)
SINK_PORT=$(re_free_port)
LAT_PORT=$(re_free_port)
RESULTS="$BENCH/results"
REPORT_FILE="$RESULTS/campaigns-$(date +%Y-%m-%d_%H%M%S).txt"
RAW="$DIR/raw"
NGINX_PID=""
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
	set +e
	[ -n "$NGINX_PID" ] && kill -TERM "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
	re_cluster_stop "$DIR"
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%4ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
pq() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -d postgres "$@"; }
load() { cut -d' ' -f1 /proc/loadavg; }

# --- the sink: nginx answering 204; (a) and (b) each on a server of its own
# that logs the arrival time and Idempotency-Key of each request (re_nginx_sink's
# own server, on DUMMY_PORT, is unused).
DUMMY_PORT=$(re_free_port)
re_nginx_sink "$NGX" "$DUMMY_PORT" \
	"log_format camp '\$msec \$http_idempotency_key';" \
	"server { listen 127.0.0.1:$SINK_PORT; access_log $NGX/sink.log camp buffer=256k flush=1s; location / { return 204; } }" \
	"server { listen 127.0.0.1:$LAT_PORT; access_log $NGX/lat.log camp; location / { return 204; } }" || exit 1
log "nginx sink pid $NGINX_PID: (a) 127.0.0.1:$SINK_PORT, (b) 127.0.0.1:$LAT_PORT"

log "cluster in $DIR, port $PORT"
re_cluster_start "$DIR" "$PORT" "${RE_BENCH_SETTINGS[@]}" \
	"revenue_engine.http_allow_private = on" \
	"revenue_engine.worker_max_in_flight = $WORKER_MIF" \
	"max_connections = 60" \
	"log_min_messages = warning"
cp "$BENCH"/reference.sql "$BENCH"/setup.sql "$HELP"/*.sql "$DIR/"
chown postgres: "$DIR"/*.sql
: >"$RAW"
pq -c "CREATE EXTENSION revenue_engine" >/dev/null


# =============================================================================
# (c) track_daily_usage with one active milestone-triggered campaign vs none
# =============================================================================
if part c; then
log "(c) setup: the usage benchmark's data (10,000 users), 10,000 contacts (one per user), a campaign on milestone_reached"
pq -f "$DIR/reference.sql" >/dev/null
pq -f "$DIR/setup.sql" >/dev/null
pq >/dev/null <<-SQL
SELECT revenue_engine.create_channel('held', 'http://127.0.0.1:$SINK_PORT/held', enabled => false);
SELECT revenue_engine.set_channel_kind('held', 'sms', 'at_least_once');
SELECT revenue_engine.create_template('congrats', 'Congratulations {{first_name|there}} on {{milestone_value}}!');
SELECT revenue_engine.create_campaign('milestones', 'held',
         '[{"kind": "send", "template": "congrats"}]',
         '{"purpose": "transactional", "trigger": {"kind": "event", "value": "milestone_reached"}}');
SELECT count(revenue_engine.upsert_contact('u' || n, phone => format('+1444%s', lpad(n::text, 7, '0')),
                                            name => 'User ' || n, user_id => user_id))
  FROM bench.users;
SQL
CPU_SQL="(SELECT (f[12])::bigint + (f[13])::bigint FROM string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') AS f)"
reset_usage() {
	pq >/dev/null <<-'SQL'
	TRUNCATE revenue_engine.daily_usage, revenue_engine.lifetime_usage,
	         revenue_engine.milestones_reached, revenue_engine.webhook_events,
	         revenue_engine.enrollments, revenue_engine.enrollment_history,
	         revenue_engine.campaign_messages, revenue_engine.sends;
	VACUUM ANALYZE bench.users, bench.call_seq, revenue_engine.user_profiles, revenue_engine.contacts;
	CHECKPOINT;
	SQL
}
for round in $(seq 1 "$ROUNDS"); do
	for v in none campaign; do
		if [ "$v" = campaign ]; then
			pq -c "SELECT revenue_engine.activate_campaign('milestones')" >/dev/null
		else
			pq -c "SELECT revenue_engine.pause_campaign('milestones')" >/dev/null 2>&1 || true
		fi
		reset_usage
		l=$(load)
		out=$(pq -F ' ' <<-SQL
		BEGIN;
		SELECT $CPU_SQL;
		SELECT count(revenue_engine.track_daily_usage(s.user_id, 'reply', 1)) FROM bench.call_seq s;
		SELECT extract(epoch FROM clock_timestamp() - now()), $CPU_SQL;
		COMMIT;
		SQL
		)
		{ read -r cpu0; read -r n; read -r secs cpu1; } <<<"$out"
		cpu=$(python3 -c "print(($cpu1 - $cpu0) / $CLK_TCK)")
		# nothing runs the enrollments' steps: the campaign is paused before they are due
		pq -c "SELECT revenue_engine.pause_campaign('milestones')" >/dev/null 2>&1 || true
		read -r events enr <<<"$(pq -F ' ' -c "SELECT (SELECT count(*) FROM revenue_engine.webhook_events),
		                                             (SELECT count(*) FROM revenue_engine.enrollments)")"
		echo "c $v $round $secs $cpu $n $events $enr $l" >>"$RAW"
		log "(c) round $round $v: ${secs}s (CPU ${cpu}s) for $n calls, $events events, $enr enrollments"
	done
done
reset_usage
fi

# =============================================================================
# (a) 100,000 steps due at once across 50 tenants
# =============================================================================
if part a; then
log "(a) setup: $TENANTS tenants x $PER contacts, each enrolled with a start a day ahead"
for t in $(seq 1 "$TENANTS"); do
	tn=$(printf 't%02d' "$t")
	pq >/dev/null <<-SQL
	SET revenue_engine.tenant = '$tn';
	SELECT revenue_engine.create_channel('sink', 'http://127.0.0.1:$SINK_PORT/$tn', max_in_flight => 64);
	SELECT revenue_engine.set_channel_kind('sink', 'sms', 'at_least_once');
	SELECT revenue_engine.create_template('hello', 'Hello {{first_name|there}}, news for {{external_ref}}');
	SELECT revenue_engine.create_campaign('bulk', 'sink', '[{"kind": "send", "template": "hello"}]',
	                                      '{"purpose": "transactional"}');
	SELECT revenue_engine.activate_campaign('bulk');
	SELECT count(revenue_engine.upsert_contact('c' || g, phone => format('+1555%s', lpad(g::text, 7, '0')),
	                                            name => 'Contact ' || g))
	  FROM generate_series(1, $PER) g;
	SELECT count(revenue_engine.enroll('bulk', 'c' || g, '{}', now() + interval '1 day'))
	  FROM generate_series(1, $PER) g;
	SQL
done
n_enr=$(pq -c "SELECT count(*) FROM revenue_engine.enrollments WHERE status = 'active' AND next_run_at > now() + interval '1 hour'")
[ "$n_enr" = "$TOTAL" ] || { log "(a) $n_enr enrollments waiting, expected $TOTAL"; exit 1; }
pq >/dev/null <<-'SQL'
VACUUM ANALYZE revenue_engine.enrollments, revenue_engine.contacts, revenue_engine.campaigns,
               revenue_engine.campaign_versions, revenue_engine.campaign_steps, revenue_engine.channels,
               revenue_engine.sends, revenue_engine.campaign_messages;
CHECKPOINT;
SQL
sleep 1
l=$(load)
log "(a) $TOTAL enrollments become due at once"
t0=$(pq <<-'SQL'
BEGIN;
UPDATE revenue_engine.enrollments SET next_run_at = now() WHERE status = 'active' AND next_run_at IS NOT NULL;
COMMIT;
SELECT revenue_engine.wake_worker() \g /dev/null
SELECT extract(epoch FROM clock_timestamp());
SQL
)
out=$(pq -c "SET bench.target = '$TOTAL'" -c "SET bench.t0 = '$t0'" -c "SET bench.timeout = '${BENCH_TIMEOUT:-300} s'" \
	-f "$DIR/wait_due.sql" 2>&1) || { log "(a) failed: $out"; exit 1; }
tq=$(sed -n 's/.*NOTICE:  queued \([0-9.]*\).*/\1/p' <<<"$out")
ts=$(sed -n 's/.*NOTICE:  sent \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$tq" ] && [ -n "$ts" ] || { log "(a) failed: $out"; exit 1; }
sleep 2		# nginx flushes its log every second
read -r nmsg nsends nsent ndistinct <<<"$(pq -F ' ' -c "SELECT (SELECT count(*) FROM revenue_engine.campaign_messages),
       (SELECT count(*) FROM revenue_engine.sends), (SELECT count(*) FROM revenue_engine.sends WHERE status = 'sent'),
       (SELECT count(DISTINCT (tenant_id, enrollment_id)) FROM revenue_engine.campaign_messages)")"
nreq=$(wc -l <"$NGX/sink.log")
nkeys=$(awk '{print $2}' "$NGX/sink.log" | sort -u | wc -l)
last=$(awk 'BEGIN{m=0} {if ($1 > m) m = $1} END{printf "%.3f", m}' "$NGX/sink.log")
tsink=$(python3 -c "print(f'{$last - $t0:.3f}')")
tenants_done=$(awk '{split($2, a, "-"); print a[4]}' "$NGX/sink.log" | sort -u | wc -l)
echo "a $tq $ts $tsink $nmsg $nsends $nsent $ndistinct $nreq $nkeys $tenants_done $l" >>"$RAW"
log "(a) queued in ${tq}s, all sent in ${ts}s (last request at the sink ${tsink}s); $nmsg messages, $nsends sends, $nreq requests"

# Per tenant: when its first and last request arrived (fairness).
awk -v t0="$t0" '{split($2, a, "-"); t = a[4]; if (!(t in f) || $1 < f[t]) f[t] = $1; if ($1 > l[t]) l[t] = $1}
     END {for (t in f) printf "af %s %.3f %.3f\n", t, f[t] - t0, l[t] - t0}' "$NGX/sink.log" >>"$RAW"
fi

# =============================================================================
# (b) latency: enrolling commit -> provider request, 1,000 enrollments/s
# =============================================================================
if part b; then
log "(b) setup: $LAT_CONTACTS contacts of the default tenant, a one-step campaign to the logging sink"
pq >/dev/null <<-SQL
SELECT revenue_engine.create_channel('lat', 'http://127.0.0.1:$LAT_PORT/lat', max_in_flight => 64);
SELECT revenue_engine.set_channel_kind('lat', 'sms', 'at_least_once');
SELECT revenue_engine.create_template('ping', 'Ping {{external_ref}}');
SELECT revenue_engine.create_campaign('lat', 'lat', '[{"kind": "send", "template": "ping"}]',
                                      '{"purpose": "transactional"}');
SELECT revenue_engine.activate_campaign('lat');
SELECT count(revenue_engine.upsert_contact('l' || g, phone => format('+1777%s', lpad(g::text, 7, '0'))))
  FROM generate_series(1, $LAT_CONTACTS) g;
CREATE SEQUENCE bench.lat_seq;
VACUUM ANALYZE revenue_engine.contacts, revenue_engine.enrollments, revenue_engine.sends,
               revenue_engine.campaign_messages;
CHECKPOINT;
SQL
# warm-up: a few enrollments through the same path
as_postgres pgbench -n -R 100 -T 2 -c 2 -j 1 -h "$DIR" -p "$PORT" -f "$DIR/latency.sql" postgres >"$DIR/pgbench-warm.log" 2>&1 ||
	{ cat "$DIR/pgbench-warm.log"; exit 1; }
sleep 2
warm=$(pq -c "SELECT last_value FROM bench.lat_seq")
l=$(load)
log "(b) pgbench -n -R $LAT_RATE -T $LAT_SECONDS -c 4 -j 2"
as_postgres pgbench -n -R "$LAT_RATE" -T "$LAT_SECONDS" -c 4 -j 2 -h "$DIR" -p "$PORT" \
	-f "$DIR/latency.sql" postgres >"$DIR/pgbench.log" 2>&1 || { cat "$DIR/pgbench.log"; exit 1; }
nlat=$(pq -c "SELECT last_value - $warm FROM bench.lat_seq")
for _ in $(seq 600); do
	left=$(pq -c "SELECT count(*) FROM revenue_engine.enrollments e JOIN revenue_engine.campaigns k
	                ON k.tenant_id = e.tenant_id AND k.id = e.campaign_id
	               WHERE k.name = 'lat' AND e.tenant_id = 'default'
	                 AND NOT EXISTS (SELECT 1 FROM revenue_engine.campaign_messages m
	                                  WHERE m.tenant_id = e.tenant_id AND m.enrollment_id = e.id
	                                    AND m.status <> 'queued')")
	[ "$left" = 0 ] && break
	sleep 0.2
done
sleep 0.5
# enrollment commit time (context t) and send id of each
pq -F ' ' -c "SELECT m.send_id, e.context->>'t'
                FROM revenue_engine.campaign_messages m
                JOIN revenue_engine.enrollments e ON e.tenant_id = m.tenant_id AND e.id = m.enrollment_id
                JOIN revenue_engine.contacts c ON c.tenant_id = e.tenant_id AND c.id = e.contact_id
               WHERE m.tenant_id = 'default' AND e.context ? 't'
                 AND substr(c.external_ref, 2)::bigint > $warm" >"$DIR/lat_enr.txt"
cp "$NGX/lat.log" "$DIR/lat_sink.txt"
echo "b $nlat $LAT_RATE $LAT_SECONDS $l $left" >>"$RAW"
log "(b) $nlat enrollments; $(wc -l <"$DIR/lat_sink.txt") requests at the sink"
fi

# =============================================================================
# report
# =============================================================================
mkdir -p "$RESULTS"
touch "$DIR/lat_enr.txt" "$DIR/lat_sink.txt"
python3 - "$RAW" "$DIR/lat_enr.txt" "$DIR/lat_sink.txt" "$warm" "$ENV_LINE" "$(($(date +%s) - START))" \
	"$TENANTS" "$PER" "$ROUNDS" "$WORKER_MIF" <<-'PY' | tee "$REPORT_FILE"
import statistics, sys
from collections import defaultdict
raw, enr_f, sink_f, warm, env, elapsed, tenants, per, rounds, mif = sys.argv[1:11]
tenants, per, rounds, warm = int(tenants), int(per), int(rounds), int(warm)
total = tenants * per
c = defaultdict(list); a = None; af = []; b = None
for line in open(raw):
    f = line.split()
    if f[0] == "c": c[f[1]].append((float(f[3]), float(f[4]), int(f[5]), int(f[6]), int(f[7]), float(f[8])))
    elif f[0] == "a": a = f[1:]
    elif f[0] == "af": af.append((f[1], float(f[2]), float(f[3])))
    elif f[0] == "b": b = f[1:]

def verdict(ok): return "MET" if ok else "NOT MET"
out = []; p = out.append
p("drip campaigns benchmark (issue 12)")
p(env)
p(f"worker_max_in_flight {mif}; sink: local nginx answering 204")
p("")

# (a)
if a is None:
    p("(a) not run (BENCH_PARTS)"); a = ["nan"] * 3 + ["0"] * 7 + ["-"]
tq, ts, tsink = float(a[0]), float(a[1]), float(a[2])
nmsg, nsends, nsent, ndist, nreq, nkeys, ntenants = (int(x) for x in a[3:10])
p(f"(a) {total:,} steps due at once across {tenants} tenants ({per:,} each, one send step; 1-min load {a[10]})")
p(f"    all claimed, sends queued  {tq:7.2f} s   target <= 20 s   ratio {tq / 20:.2f}  [{verdict(tq <= 20)}]"
  f"   ({total / tq:,.0f} steps/s)")
p(f"    all at the sink            {tsink:7.2f} s   target <= 35 s   ratio {tsink / 35:.2f}  [{verdict(tsink <= 35)}]"
  f"   (all recorded sent {ts:.2f} s; {total / tsink:,.0f} sends/s)")
exact = nmsg == total and nsends == total and nsent == total and ndist == total and nreq == total and nkeys == total
p(f"    exactly {total:,} sends: campaign messages {nmsg:,}, sends {nsends:,} (sent {nsent:,}), enrollments with a message {ndist:,}, "
  f"requests at the sink {nreq:,} with {nkeys:,} distinct Idempotency-Keys, from {ntenants} tenants  [{verdict(exact)}]")
if af:
    firsts = sorted(x[1] for x in af); lasts = sorted(x[2] for x in af)
    p(f"    fairness: tenants' first request at {firsts[0]:.2f}-{firsts[-1]:.2f} s, last request at {lasts[0]:.2f}-{lasts[-1]:.2f} s")
p("")

# (b)
if b is None:
    b = ["0", "-", "-", "-", "-"]
t_of = {}
for line in open(enr_f):
    f = line.split()
    if len(f) == 2: t_of[int(f[0])] = float(f[1])
lat = []; seen = set()
for line in open(sink_f):
    f = line.split()
    if len(f) < 2: continue
    try: sid = int(f[1].rsplit("-", 1)[1])
    except (IndexError, ValueError): continue
    if sid in seen or sid not in t_of: continue
    seen.add(sid)
    lat.append((float(f[0]) - t_of[sid]) * 1000)
nlat, rate, secs, lload, left = int(b[0]), b[1], b[2], b[3], b[4]
# only the timed run's enrollments (the warm-up's are first; one per contact l<n>)
lat_sorted = sorted(lat)
def pct(q):
    if not lat_sorted: return float("nan")
    k = min(len(lat_sorted) - 1, max(0, int(round(q / 100 * len(lat_sorted) + 0.5)) - 1))
    return lat_sorted[k]
p50, p90, p99 = pct(50), pct(90), pct(99)
p(f"(b) enrolling commit (zero delay) -> provider request, pgbench -R {rate} -T {secs} -c 4 -j 2 (1-min load {lload})")
p(f"    {nlat:,} enrollments in the timed run, {len(lat):,} of their requests at the sink, {left} not sent when measured")
p(f"    p50 {p50:7.2f} ms   target <= 10 ms   ratio {p50 / 10:.2f}  [{verdict(p50 <= 10)}]")
p(f"    p99 {p99:7.2f} ms   target <= 50 ms   ratio {p99 / 50:.2f}  [{verdict(p99 <= 50)}]")
if lat_sorted:
    p(f"    p90 {p90:.2f} ms, max {lat_sorted[-1]:.2f} ms, min {lat_sorted[0]:.2f} ms")
p("")

# (c)
p(f"(c) track_daily_usage, 200,000 calls in one transaction (usage benchmark (a)), median of {rounds} alternated rounds")
med = {}; cpu = {}
if not c["none"] or not c["campaign"]:
    p("    not run (BENCH_PARTS or BENCH_ROUNDS=0)")
    c["none"] = c["campaign"] = [(float("nan"),) * 6]
for v, name in (("none", "no active campaign"), ("campaign", "one active milestone campaign")):
    runs = c[v]
    med[v] = statistics.median(r[0] for r in runs); cpu[v] = statistics.median(r[1] for r in runs)
    last = runs[-1]
    p(f"    {name:31s} {med[v]:7.2f} s  {med[v] / 200000 * 1e6:6.1f} us/call  CPU {cpu[v] / 200000 * 1e6:6.1f} us/call"
      f"   (runs {', '.join(f'{r[0]:.2f}' for r in runs)} s; events {last[3]}, enrollments {last[4]})")
p(f"    with campaign / none: time {med['campaign'] / med['none']:.3f}, CPU {cpu['campaign'] / cpu['none']:.3f}"
  f"   (+{(med['campaign'] - med['none']) / 200000 * 1e6:.1f} us/call; the events enroll {c['campaign'][-1][4]:,} contacts)")
p("")
p(f"summary: (a) queued {tq:.2f} s / 20 s, sink {tsink:.2f} s / 35 s, exact {exact} | (b) p50 {p50:.2f} ms / 10 ms, "
  f"p99 {p99:.2f} ms / 50 ms | (c) usage with campaign / none {med['campaign'] / med['none']:.3f} | run took {elapsed} s")
print("\n".join(out))
PY
log "report saved to $REPORT_FILE"
