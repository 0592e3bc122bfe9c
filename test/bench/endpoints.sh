#!/usr/bin/env bash
# Many endpoints against one (issue 10, point 7): on one throwaway cluster
# with the nginx sink of delivery.sh (204 on 127.0.0.1), in the same run,
# alternating:
#
#   one    100,000 events to one endpoint (max_in_flight 256);
#   many   1,000 endpoints with 100 events each (max_in_flight 64, the
#          default), all answered by the same sink.
#
# Each round resets its deliveries to pending with its endpoints disabled,
# enables them in one transaction and waits until the worker has recorded
# them all.  Rate = deliveries / (last sent_at - first attempt's start):
# the worker's own clock, not the endpoint reload (at most once a second).
# Prints each round, the median rates and many/one (target >= 0.80).
#
# Usage: bash test/bench/endpoints.sh  (as root, like delivery.sh; it uses
# the extension installed for $PG_CONFIG).  Knobs: BENCH_ROUNDS (2),
# BENCH_ENDPOINTS (1000), BENCH_PER_ENDPOINT (100), BENCH_ONE (100000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/test/lib/cluster.sh"

ROUNDS=${BENCH_ROUNDS:-2}
NEP=${BENCH_ENDPOINTS:-1000}
PER=${BENCH_PER_ENDPOINT:-100}
NONE=${BENCH_ONE:-100000}
DIR=$(mktemp -d /tmp/re_endpoints.XXXXXX)
NGX="$DIR/nginx"
PORT=$(re_free_port)
SINK_PORT=$(re_free_port)
NGINX_PID=""
START=$(date +%s)

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

# --- the sink (the one delivery.sh uses) ---------------------------------------------
re_nginx_sink "$NGX" "$SINK_PORT" || exit 1

# --- the cluster, the endpoints, the events ---------------------------------------------
re_cluster_start "$DIR" "$PORT" "${RE_BENCH_SETTINGS[@]}" "revenue_engine.http_allow_private = on"
SINK="http://127.0.0.1:$SINK_PORT"
pq >/dev/null <<-SQL
CREATE EXTENSION revenue_engine;
SELECT revenue_engine.register_event_type('one_event');
SELECT revenue_engine.create_endpoint('one', '$SINK/one', event_types => '{one_event}',
       max_in_flight => 256, enabled => false);
SELECT count(revenue_engine.register_event_type('many_' || k)) FROM generate_series(1, $NEP) k;
SELECT count(revenue_engine.create_endpoint('m' || k, '$SINK/m' || k,
                                            event_types => ARRAY['many_' || k], enabled => false))
  FROM generate_series(1, $NEP) k;
SQL
for k in $(seq 0 9); do
	pq -c "SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'one_event', jsonb_build_object('n', g)))
	         FROM generate_series($((k * NONE / 10 + 1)), $(((k + 1) * NONE / 10))) g" >/dev/null
done
pq -c "SELECT count(revenue_engine.enqueue_event(gen_random_uuid(), 'many_' || k, jsonb_build_object('n', g)))
         FROM generate_series(1, $NEP) k, generate_series(1, $PER) g" >/dev/null
log "$NEP + 1 endpoints, $NONE + $((NEP * PER)) events enqueued (endpoints disabled)"

# the endpoints of a kind: "name = 'one'" or "name <> 'one'"
round() {	# kind where n
	local kind=$1 where=$2 n=$3 t0 line
	pq >/dev/null <<-SQL
	UPDATE revenue_engine.deliveries d
	   SET status = 'pending', attempts = 0, next_attempt_at = d.created_at, lease_until = NULL,
	       last_status = NULL, last_error = NULL, sent_at = NULL
	  FROM revenue_engine.endpoints e
	 WHERE e.tenant_id = d.tenant_id AND e.id = d.endpoint_id AND e.$where;
	DELETE FROM revenue_engine.delivery_attempts;
	VACUUM (ANALYZE) revenue_engine.deliveries, revenue_engine.webhook_events,
	                 revenue_engine.delivery_attempts, revenue_engine.endpoints;
	CHECKPOINT;
	SELECT count(revenue_engine.set_endpoint_enabled(e.name, true))
	  FROM revenue_engine.endpoints e WHERE e.$where;
	SQL
	t0=$(date +%s.%N)
	while :; do
		left=$(pq -c "SELECT count(*) FROM revenue_engine.deliveries d JOIN revenue_engine.endpoints e
		                 ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
		              WHERE e.$where AND d.status <> 'sent'")
		[ "$left" = 0 ] && break
		if [ "$(echo "$(date +%s.%N) - $t0 > 600" | bc)" = 1 ]; then
			log "$kind: $left deliveries still not sent after 600 s"
			exit 1
		fi
		sleep 0.2
	done
	line=$(pq -F ' ' -c "SELECT count(*), extract(epoch FROM max(d.sent_at) - (SELECT min(started_at) FROM revenue_engine.delivery_attempts))
	                       FROM revenue_engine.deliveries d JOIN revenue_engine.endpoints e
	                         ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
	                      WHERE e.$where")
	pq -c "SELECT count(revenue_engine.set_endpoint_enabled(e.name, false))
	         FROM revenue_engine.endpoints e WHERE e.$where" >/dev/null
	read -r cnt secs <<<"$line"
	[ "$cnt" = "$n" ] || { log "$kind: $cnt deliveries, expected $n"; exit 1; }
	echo "$kind $cnt $secs"
}

results=()
for r in $(seq 1 "$ROUNDS"); do
	line=$(round one "name = 'one'" "$NONE"); log "round $r: $line"; results+=("$line")
	line=$(round many "name <> 'one'" $((NEP * PER))); log "round $r: $line"; results+=("$line")
done

printf '%s\n' "${results[@]}" | python3 -c "
import statistics, sys
rates = {'one': [], 'many': []}
for line in sys.stdin:
    kind, n, secs = line.split()
    rates[kind].append(int(n) / float(secs))
print('delivery rate, same run, alternating ($ROUNDS rounds each):')
for kind, label in (('one', '1 endpoint x $NONE events'), ('many', '$NEP endpoints x $PER events')):
    print(f'  {label:32s} ' + ', '.join(f'{r:,.0f}/s' for r in rates[kind]) +
          f'  (median {statistics.median(rates[kind]):,.0f}/s)')
ratio = statistics.median(rates['many']) / statistics.median(rates['one'])
print(f'  many/one: {ratio:.2f} (target >= 0.80)')
"
