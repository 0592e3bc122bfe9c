#!/usr/bin/env bash
# revenue_engine demo: installs what it needs, builds and installs the
# extension, starts a throwaway cluster with the library preloaded and a local
# HTTP receiver, shows a user's usage turning into milestones, a goal, a
# streak and outbox events that the delivery worker POSTs, signed, to the
# receiver; then removes everything.  Run as root on Debian 12:
#   bash scripts/demo.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/install-deps.sh"
make -C "$ROOT" -s >/dev/null
make -C "$ROOT" -s install >/dev/null

source "$ROOT/test/lib/cluster.sh"
DIR=$(mktemp -d /tmp/revenue_engine_demo.XXXXXX)
chmod 755 "$DIR"
PORT=$(re_free_port)
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
RECEIVER_PID=
cleanup() {
	[ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null
	re_cluster_stop "$DIR"
}
trap cleanup EXIT

# The receiver verifies every Standard Webhooks signature with the endpoint's secret.
python3 "$ROOT/test/receiver/receiver.py" --port 0 --port-file "$DIR/receiver.port" \
	--log "$DIR/received.jsonl" --secret "$SECRET" >"$DIR/receiver.out" 2>&1 &
RECEIVER_PID=$!
for _ in $(seq 100); do [ -s "$DIR/receiver.port" ] && break; sleep 0.1; done
RPORT=$(cat "$DIR/receiver.port")

# Deliveries to 127.0.0.1 are refused unless this superuser setting allows them.
re_cluster_start "$DIR" "$PORT" "revenue_engine.http_allow_private = on"
echo "cluster: $DIR (port $PORT), revenue_engine preloaded; receiver: http://127.0.0.1:$RPORT/"

cp "$ROOT/scripts/demo.sql" "$DIR/demo.sql"
as_postgres psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
	-v receiver="http://127.0.0.1:$RPORT/hooks/revenue" -v secret="$SECRET" -f "$DIR/demo.sql"

echo
echo "-- What the receiver got (signature checked with the endpoint's secret):"
python3 - "$DIR/received.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    body = json.loads(r["body"])
    print(f'{r["method"]} {r["path"]}  webhook-id {r["webhook_id"][:8]}…  signature verified: {r["verified"]}  '
          f'event {body["event"]}: {json.dumps(body["metadata"], sort_keys=True)}')
PY
