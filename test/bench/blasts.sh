#!/usr/bin/env bash
# Benchmark of blasts (src/blasts/): the funnel counters and status ingestion
# on one blast of 1,000,000 recipients, all in one run on one throwaway
# cluster:
#
#   (a) reading revenue_engine.blast_funnel for the blast against the plain
#       scan of its recipients (count(*) and count(*) FILTER per stage), both
#       warm, alternated BENCH_READS times (21) after 3 warm-up pairs; median
#       ms of each (psql \timing: round trip, planning included) and the
#       ratio.  Targets: funnel < 5 ms, >= 100x faster than the scan.
#   (b) record_message_status(provider message id, 'delivered' or 'read',
#       now(), 'webhook') with pgbench -n -M prepared -c 4 -j 2 -T
#       BENCH_SECONDS, against the same updates with the funnel row trigger
#       disabled (ALTER TABLE ... DISABLE TRIGGER blast_recipients_funnel_update:
#       the table without the funnel triggers).  BENCH_ROUNDS rounds (3), the
#       two variants alternated (ABBA order); medians and the ratio.  Target
#       >= 70%.  Every run has its own disjoint range of recipients, all sent;
#       every transaction changes a different recipient sent -> delivered, and
#       once a client has been through its share of the range, delivered ->
#       read (pgbench's permute() over the range, blasts/status_update.pgbench):
#       a real change each, the same work in both variants.  Real changes are
#       counted afterwards (one status_history row each) and a run that made
#       no-op transactions is flagged.  After a run without the trigger the
#       counters are corrected by exactly what that run changed (a scan of its
#       range before and after, nothing else touched), so every run with the
#       trigger is checked against the truth: after every run the counters
#       are compared with a scan of the blast (the 13 counters summed over
#       its counter rows) and with blast_funnel.
#   (c) ingest_status_webhook('wa', headers, body) of a 1,000-status WhatsApp
#       Cloud API callback (X-Hub-Signature-256: HMAC-SHA256 of the body with
#       the channel's app secret), BENCH_BATCHES batches (7) on distinct
#       recipients, each status a real change (sent -> delivered); beside it
#       the same 1,000 statuses as 1,000 record_message_status calls in one
#       transaction (the application parsed the body itself), on other
#       recipients; alternated after a warm-up pair; median statuses/s and the
#       ratio; the backend's peak memory after each of the warm-up pair; the
#       history rows' metadata read back.  First, one callback with one status
#       item as WhatsApp sends it: if that fails (aead732 crashed the backend
#       on it), the batches carry minimal items and the report says so.
#
# Setup: a channel pointing at https://unreachable.invalid/, create_blast with
# recipients_query over generate_series, due in 30 days (the worker sends
# nothing); then every recipient gets provider message id 'wamid.<id>' and
# status sent, in UPDATE statements of 10,000 rows with the funnel row
# trigger, 40,000 without (the counters then corrected from a scan of the
# range), 40,000 with, and all the rest in one statement: with the trigger
# if its cost per row stayed flat, else without (blasts/mark_sent.sql); the
# cost per row of each is reported, and the counters are checked.  Then
# VACUUM FULL (the UPDATEs left a dead version of every row: the scan
# baseline reads a compact table) and ANALYZE.
#
# Usage: bash test/bench/blasts.sh  (as root like the other benchmarks; the
# cluster runs as the postgres OS user).  It benchmarks the extension already
# installed (it does not build).  The report is printed and saved to
# test/bench/results/blasts-<date>.txt.
#
# Knobs (environment): BENCH_RECIPIENTS (1000000; e.g. 100000 for a quick
# run), BENCH_ROUNDS (3), BENCH_SECONDS ((b) seconds per run; default 20 or
# less, so that a run does not use up its range: 13 s at 1,000,000),
# BENCH_READS (21), BENCH_BATCHES (7), BENCH_BATCH_SIZE (1000),
# BENCH_KEEP_RAW (a file to copy the raw measurements to).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH="$ROOT/test/bench"
HELP="$BENCH/blasts"
source "$ROOT/test/lib/cluster.sh"

N=${BENCH_RECIPIENTS:-1000000}
[ "$N" -ge 100000 ] || { echo "BENCH_RECIPIENTS must be at least 100000" >&2; exit 1; }
ROUNDS=${BENCH_ROUNDS:-3}
READS=${BENCH_READS:-21}
BATCHES=${BENCH_BATCHES:-7}
BATCH=${BENCH_BATCH_SIZE:-1000}
CLIENTS=4
JOBS=2
SECRET=bench-whatsapp-app-secret-4f1c2a
# (b) has seen up to ~14,000 transactions/s on 2 CPUs, and one client may run
# ahead of the others: a run's range (2 * SIZE real changes, SIZE / CLIENTS
# recipients per client) must take MAX_TPS for the whole run.  The default run
# length is 20 s or what the range takes at MAX_TPS, whichever is shorter.
MAX_TPS=24000

SO="$($PG_CONFIG --pkglibdir)/revenue_engine.so"
SO_MD5=$(md5sum "$SO" | cut -c1-12)
SO_DATE=$(date -r "$SO" '+%Y-%m-%d %H:%M:%S')
DIRTY=""
[ -n "$(git -C "$ROOT" status --porcelain -- src 2>/dev/null)" ] && DIRTY=" (the tree has uncommitted changes in src/)"
ENV_LINE="PostgreSQL $($PG_CONFIG --version | cut -d' ' -f2), $(nproc) CPUs, installed revenue_engine.so $SO_MD5 ($SO_DATE), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$DIRTY"

START=$(date +%s)
DIR=$(mktemp -d /tmp/re_blasts.XXXXXX)
PORT=$(re_free_port)
RESULTS="$BENCH/results"
REPORT_FILE="$RESULTS/blasts-$(date +%Y-%m-%d_%H%M%S).txt"
RAW="$DIR/raw"				# "kind key=value ..." lines
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
	[ -n "${BENCH_KEEP_RAW:-}" ] && [ -f "$RAW" ] && cp "$RAW" "$BENCH_KEEP_RAW"
	re_cluster_stop "$DIR"
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%4ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
pq() { as_postgres psql -X -q -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -d postgres "$@"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
phase() {	# name seconds
	echo "setup $2 $1" >>"$RAW"
	log "setup: $1 ${2}s"
}

log "cluster in $DIR, port $PORT"
# shared_buffers 1GB (after RE_BENCH_SETTINGS' 256MB: the later line wins): the
# blast's recipients, sends and indexes stay in shared buffers.
re_cluster_start "$DIR" "$PORT" "${RE_BENCH_SETTINGS[@]}" "shared_buffers = 1GB" \
	"log_min_messages = warning"
PM_PID=$(head -1 "$DIR/data/postmaster.pid")
cp "$HELP"/*.sql "$HELP"/*.pgbench "$DIR/"
chown postgres: "$DIR"/*.sql "$DIR"/*.pgbench
: >"$RAW"

# --- setup ----------------------------------------------------------------------
t=$(now)
pq -c "CREATE EXTENSION revenue_engine" -f "$DIR/schema.sql" >/dev/null
phase "extension and bench helpers" "$(since "$t")"

t=$(now)
read -r BLAST FIRST LAST <<<"$(pq -F ' ' -v recipients="$N" -v secret="$SECRET" -f "$DIR/create.sql")"
phase "create_blast of $N recipients (recipients_query, due in 30 days)" "$(since "$t")"
[ $((LAST - FIRST + 1)) -eq "$N" ] || { log "blast $BLAST has ids $FIRST..$LAST, expected $N"; exit 1; }

# Every recipient sent, in UPDATE statements of (trigger on/off): 10,000 on,
# 40,000 off, 40,000 on, and the rest in one.  The rest goes with the funnel
# trigger if its cost per row stayed flat from 10,000 to 40,000 rows (at most
# 1.5x) and the rest should take at most 120 s at that rate; otherwise with
# the trigger disabled (the counters corrected from a scan): at aead732 one
# statement of a million rows with the trigger was quadratic, hours long.
mark_sent() {	# lo hi on|off -> seconds
	pq -v blast="$BLAST" -v lo="$1" -v hi="$2" -v off="$([ "$3" = off ] && echo true || echo false)" \
		-f "$DIR/mark_sent.sql"
}
declare -A SENT_US
lo=$FIRST
for spec in "10000 on" "40000 off" "40000 on" "rest auto"; do
	read -r n trig <<<"$spec"
	if [ "$n" = rest ]; then
		n=$((LAST - lo + 1))
		trig=$(python3 -c "
a, b, n = ${SENT_US[10000on]}, ${SENT_US[40000on]}, $n
print('on' if b <= 1.5 * a and b * n / 1e6 <= 120 else 'off')")
	fi
	[ "$n" -ge 1 ] || break
	secs=$(mark_sent "$lo" $((lo + n - 1)) "$trig")
	us=$(python3 -c "print(f'{$secs * 1e6 / $n:.1f}')")
	SENT_US[$n$trig]=$us
	echo "sent n=$n trigger=$trig secs=$secs us=$us" >>"$RAW"
	log "setup: recipients $lo..$((lo + n - 1)) sent in one UPDATE, funnel trigger $trig: ${secs}s, $us us/row"
	lo=$((lo + n))
done
check=$(pq -c "SELECT bench.check_counters($BLAST)")
echo "check when=sent $(awk '{print "diff=" $1, "funnel=" $2, "scan=" $3}' <<<"$check")" >>"$RAW"
log "counters after marking sent: $check (counters that differ, funnel, scan)"

# Ranges: (c) takes 2 * (BATCHES + 1) * BATCH recipients at the end (a warm-up
# batch and BATCHES batches, each twice: callback and calls) and the last one
# for the crash probe; (b) the rest, one range per run, a multiple of CLIENTS.
C_LO=$((LAST - 2 * (BATCHES + 1) * BATCH))
RUNS=$((2 * ROUNDS))
SIZE=$(((C_LO - FIRST) / RUNS / CLIENTS * CLIENTS))
[ "$SIZE" -ge 1000 ] || { log "too few recipients ($N) for $RUNS runs and $BATCHES batches"; exit 1; }
if [ -n "${BENCH_SECONDS:-}" ]; then
	SECS=$BENCH_SECONDS
else
	# a range takes 2 * SIZE real changes (sent -> delivered, then -> read)
	SECS=$((2 * SIZE / MAX_TPS))
	[ "$SECS" -gt 20 ] && SECS=20
	[ "$SECS" -lt 1 ] && SECS=1
fi
log "(b) $RUNS runs of ${SECS}s, $SIZE recipients each; (c) ids from $C_LO"

t=$(now)
pq >/dev/null <<-'SQL'
VACUUM (FULL, ANALYZE) revenue_engine.blast_recipients;
VACUUM (ANALYZE) revenue_engine.blast_counters, revenue_engine.blasts, revenue_engine.sends,
                 revenue_engine.status_history, revenue_engine.channels;
CHECKPOINT;
SQL
phase "VACUUM FULL ANALYZE of the recipients, VACUUM ANALYZE of the rest, CHECKPOINT" "$(since "$t")"

check=$(pq -c "SELECT bench.check_counters($BLAST)")
echo "check when=setup $(awk '{print "diff=" $1, "funnel=" $2, "scan=" $3}' <<<"$check")" >>"$RAW"
log "counters after setup: $check (counters that differ, funnel, scan)"
pq -F ' ' -c "SELECT replace(pg_size_pretty(pg_total_relation_size('revenue_engine.blast_recipients')), ' ', ''),
                     replace(pg_size_pretty(pg_relation_size('revenue_engine.blast_recipients')), ' ', ''),
                     replace(pg_size_pretty(pg_total_relation_size('revenue_engine.sends')), ' ', '')" |
	{ read -r a b c; echo "sizes recipients_total=$a recipients_heap=$b sends_total=$c" >>"$RAW"; }

# --- (a) funnel vs scan -------------------------------------------------------------
FUNNEL_Q="SELECT 'F', total, sent, delivered, read, replied, closed, failed FROM revenue_engine.blast_funnel WHERE blast_id = $BLAST;"
SCAN_Q="SELECT 'S', count(*), count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE delivered_at IS NOT NULL), count(*) FILTER (WHERE read_at IS NOT NULL), count(*) FILTER (WHERE replied_at IS NOT NULL), count(*) FILTER (WHERE closed_at IS NOT NULL), count(*) FILTER (WHERE status = 'failed') FROM revenue_engine.blast_recipients WHERE blast_id = $BLAST;"
pq -c "EXPLAIN (COSTS OFF) ${SCAN_Q%;}" | sed 's/^ *//; s/ *->  */ /' | tr '\n' ';' >"$DIR/scan_plan"
{
	echo '\timing on'
	for i in $(seq 1 $((READS + 3))); do
		if [ $((i % 2)) = 1 ]; then echo "$FUNNEL_Q"; echo "$SCAN_Q"; else echo "$SCAN_Q"; echo "$FUNNEL_Q"; fi
	done
} >"$DIR/reads.sql"
chown postgres: "$DIR/reads.sql"
echo "load when=a value=$(loadavg)" >>"$RAW"
log "(a) funnel vs scan, $READS alternated pairs after 3 warm-up pairs"
pq -f "$DIR/reads.sql" >"$DIR/reads.out"
python3 - "$DIR/reads.out" >>"$RAW" <<'PY'
import re, sys
tag = None
n = {"F": 0, "S": 0}
for line in open(sys.argv[1]):
    line = line.strip()
    m = re.match(r"Time: ([0-9.]+) ms", line)
    if m and tag:
        n[tag] += 1
        if n[tag] > 3:		# warm-up
            print(f"read kind={tag} ms={m.group(1)} row={row}")
        tag = None
    elif line[:2] in ("F|", "S|"):
        tag, row = line[0], line[2:].replace("|", ",")
PY
echo "scanplan $(tr ' ' '_' <"$DIR/scan_plan")" >>"$RAW"

# --- (b) status updates with and without the funnel trigger ------------------------
children_cpu() { local f; read -r -a f <"/proc/$PM_PID/stat"; echo $((f[15] + f[16])); }
cp "$HELP/status_update.pgbench" "$DIR/"
run=0
b_run() {	# round variant
	local round=$1 v=$2 lo hi out tps lat ntx nfail cpu0 cpu secs_cpu changed check
	lo=$((FIRST + run * SIZE))
	hi=$((lo + SIZE - 1))
	run=$((run + 1))
	pq >/dev/null <<-SQL
	VACUUM revenue_engine.blast_recipients, revenue_engine.blast_counters, revenue_engine.status_history;
	CHECKPOINT;
	TRUNCATE bench.range_before;
	INSERT INTO bench.range_before SELECT bench.scan_counters_json($BLAST, $lo, $hi);
	SQL
	[ "$v" = notrig ] && pq -c "ALTER TABLE revenue_engine.blast_recipients DISABLE TRIGGER blast_recipients_funnel_update"
	echo "load when=b-$round-$v value=$(loadavg)" >>"$RAW"
	cpu0=$(children_cpu)
	as_postgres pgbench -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$SECS" \
		-D n=0 -D lo="$lo" -D size="$SIZE" -D clients="$CLIENTS" \
		-h "$DIR" -p "$PORT" -f "$DIR/status_update.pgbench" postgres >"$DIR/pgbench-$run.log" 2>&1 ||
		{ cat "$DIR/pgbench-$run.log"; exit 1; }
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$DIR/pgbench-$run.log")
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$DIR/pgbench-$run.log")
	ntx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$DIR/pgbench-$run.log")
	nfail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$DIR/pgbench-$run.log")
	sleep 1		# let the postmaster reap the backends
	cpu=$(python3 -c "print(($(children_cpu) - $cpu0) / $CLK_TCK)")
	# the trigger back on; a run without it: its range's change added to the counters
	pq >/dev/null <<-SQL
	BEGIN;
	ALTER TABLE revenue_engine.blast_recipients ENABLE TRIGGER blast_recipients_funnel_update;
	SELECT bench.add_to_counters($BLAST, bench.counters_change($BLAST, $lo, $hi, (SELECT j FROM bench.range_before)))
	 WHERE '$v' = 'notrig';
	COMMIT;
	SQL
	# real changes: each applied status wrote one history row
	read -r changed ndeliv nread <<<"$(pq -F ' ' -c "
	    SELECT (SELECT count(*) FROM revenue_engine.status_history h
	             WHERE h.tenant_id = revenue_engine.current_tenant() AND h.recipient_id BETWEEN $lo AND $hi),
	           count(*) FILTER (WHERE r.status = 'delivered'), count(*) FILTER (WHERE r.status = 'read')
	      FROM revenue_engine.blast_recipients r
	     WHERE r.tenant_id = revenue_engine.current_tenant() AND r.blast_id = $BLAST
	       AND r.id BETWEEN $lo AND $hi")"
	check=$(pq -c "SELECT bench.check_counters($BLAST)")
	echo "b round=$round variant=$v lo=$lo hi=$hi tps=$tps lat=$lat ntx=$ntx fail=${nfail:-0} changed=$changed delivered=$ndeliv read=$nread cpu=$cpu $(awk '{print "diff=" $1, "funnel=" $2, "scan=" $3}' <<<"$check")" >>"$RAW"
	log "(b) round $round $v: $tps tps, latency $lat ms, $ntx transactions, $changed real changes (now $ndeliv delivered, $nread read), server CPU ${cpu}s; counters: $check"
}
for round in $(seq 1 "$ROUNDS"); do
	if [ $((round % 2)) = 1 ]; then order="trig notrig"; else order="notrig trig"; fi
	for v in $order; do
		log "(b) round $round $v: pgbench -c $CLIENTS -j $JOBS -T $SECS"
		b_run "$round" "$v"
	done
done

# --- (c) WhatsApp callback batches vs record_message_status calls --------------------
# First one callback with one status item as WhatsApp sends it (id, status,
# timestamp, recipient_id, conversation, pricing), on the last recipient.  If
# that crashes the backend, the server restarts and the batches carry minimal
# items (id, status, timestamp) instead, and the report says so.
probe_out=$(pq -c "SELECT w.result FROM (SELECT bench.wa_body(jsonb_build_array(
                       bench.wa_status(r.id, r.phone, 'delivered', now(), true))) AS body
                      FROM revenue_engine.blast_recipients r
                     WHERE r.tenant_id = revenue_engine.current_tenant() AND r.id = $LAST) b
                CROSS JOIN LATERAL revenue_engine.ingest_status_webhook('wa',
                      bench.wa_headers(b.body, '$SECRET'), b.body) w" 2>&1) || true
if [ "$probe_out" = applied ]; then
	FULL=true
	echo "cprobe result=applied" >>"$RAW"
	log "(c) one full WhatsApp status item: applied"
else
	FULL=false
	sig=$(grep -o 'terminated by signal [0-9]*[^"]*' "$DIR/server.log" | tail -1 | tr ' ' '_')
	echo "cprobe result=failed server=${sig:-none} psql=$(head -1 <<<"$probe_out" | tr ' ' '_')" >>"$RAW"
	log "(c) one full WhatsApp status item FAILED: $(head -1 <<<"$probe_out"); server log: ${sig:-nothing}"
	for _ in $(seq 120); do pq -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.5; done
	pq -c "SELECT 1" >/dev/null || { log "the server did not come back"; tail -20 "$DIR/server.log"; exit 1; }
	log "(c) server back; the batches carry minimal status items (id, status, timestamp)"
	PM_PID=$(head -1 "$DIR/data/postmaster.pid")
fi

t=$(now)
pq -v blast="$BLAST" -v lo="$C_LO" -v size="$BATCH" -v nbatches="$BATCHES" -v secret="$SECRET" \
	-v full="$FULL" -f "$DIR/batches.sql" >/dev/null
phase "(c) $((BATCHES + 1)) WhatsApp callback bodies of $BATCH statuses (items full: $FULL), signed, and the baseline's statuses" "$(since "$t")"
pq -c "VACUUM revenue_engine.blast_recipients, revenue_engine.blast_counters, revenue_engine.status_history" -c "CHECKPOINT" >/dev/null
# the backend's peak memory (VmHWM, kB) at the start and after each statement of the warm-up pair
HWM_Q="SELECT 'M', substring(pg_read_file('/proc/' || pg_backend_pid() || '/status') FROM 'VmHWM:\s*(\d+) kB');"
{
	echo '\timing on'
	echo "$HWM_Q"
	for k in $(seq 0 "$BATCHES"); do
		ingest="SELECT 'I', $k, count(*) FILTER (WHERE w.result = 'applied'), count(*)
		          FROM bench.wa_batches b
		         CROSS JOIN LATERAL revenue_engine.ingest_status_webhook('wa', b.headers, b.body) w
		         WHERE b.k = $k;"
		calls="SELECT 'C', $k, count(*) FILTER (WHERE revenue_engine.record_message_status(
		              s.message_id, s.status, s.occurred_at, 'webhook', s.raw) = 'applied'), count(*)
		         FROM bench.wa_statuses s WHERE s.k = $k;"
		if [ $((k % 2)) = 1 ]; then echo "$ingest"; echo "$calls"; else
			echo "$calls"; [ "$k" = 0 ] && echo "$HWM_Q"
			echo "$ingest"; [ "$k" = 0 ] && echo "$HWM_Q"
		fi
	done
} >"$DIR/ingest.sql"
chown postgres: "$DIR/ingest.sql"
echo "load when=c value=$(loadavg)" >>"$RAW"
log "(c) $BATCHES WhatsApp batches of $BATCH statuses and $BATCHES x $BATCH record_message_status calls, alternated, after a warm-up pair"
pq -f "$DIR/ingest.sql" >"$DIR/ingest.out"
python3 - "$DIR/ingest.out" >>"$RAW" <<'PY'
import re, sys
last = None
for line in open(sys.argv[1]):
    line = line.strip()
    m = re.match(r"Time: ([0-9.]+) ms", line)
    if m and last:
        kind, k, applied, n = last
        print(f"c kind={kind} k={k} applied={applied} n={n} ms={m.group(1)}")
        last = None
    elif line[:2] in ("I|", "C|"):
        last = line.split("|")
    elif line[:2] == "M|":
        print(f"chwm kb={line[2:]}")
PY
# the history rows the callbacks wrote: their metadata (the status item) must read back
meta=$(pq -c "SELECT count(*) || '/' || sum(length(h.metadata::text))
                FROM revenue_engine.status_history h JOIN bench.wa_batches b
                  ON h.recipient_id BETWEEN b.lo AND b.hi
               WHERE h.tenant_id = revenue_engine.current_tenant()" 2>&1 | head -1 | tr ' ' '_') || true
echo "cmeta value=$meta" >>"$RAW"
log "(c) status_history rows of the callbacks, metadata read back: $meta"
check=$(pq -c "SELECT bench.check_counters($BLAST)")
echo "check when=final $(awk '{print "diff=" $1, "funnel=" $2, "scan=" $3}' <<<"$check")" >>"$RAW"
log "final check with the triggers enabled: $check (counters that differ, funnel, scan)"
WORKER_CPU=$(pq -c "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'revenue_engine%'" | while read -r pid; do
	read -r -a f <"/proc/$pid/stat" && echo $((f[13] + f[14]))
done | paste -sd+ | bc 2>/dev/null || echo 0)
echo "worker cpu=$(python3 -c "print(${WORKER_CPU:-0} / $CLK_TCK)")" >>"$RAW"

# --- report --------------------------------------------------------------------------
if [ "$(md5sum "$SO" | cut -c1-12)" != "$SO_MD5" ]; then
	ENV_LINE="$ENV_LINE; WARNING: revenue_engine.so was replaced during the run (now $(md5sum "$SO" | cut -c1-12), $(date -r "$SO" '+%Y-%m-%d %H:%M:%S')): the server ran the one loaded at start, unless it restarted"
fi
mkdir -p "$RESULTS"
python3 "$HELP/report.py" "$RAW" "$ENV_LINE" "$N" "$ROUNDS" "$SECS" "$SIZE" "$READS" "$BATCHES" "$BATCH" \
	"$(($(date +%s) - START))" | tee "$REPORT_FILE"
log "report saved to $REPORT_FILE"
