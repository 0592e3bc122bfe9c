#!/usr/bin/env bash
# revenue_engine demo: installs what it needs, builds and installs the
# extension, starts a throwaway cluster with the library preloaded and a local
# HTTP receiver, shows a user's usage turning into milestones, a goal, a
# streak and outbox events that the delivery worker POSTs, signed, to the
# receiver; then a WhatsApp blast sent to a local fake provider, its signed
# status callbacks ingested, and the funnel; then a drip campaign triggered by a
# usage milestone (enrolled in the usage call's transaction, first step sent by
# the worker to the fake provider, stopped by a reply; an opt-out cancelling a
# send queued for a retry), its history, funnels and due queue; then removes everything.  Run as root on Debian 12
# (PG_CONFIG, if set, picks the PostgreSQL to build against and run; default: pg_config on PATH):
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
PROVIDER_PID=
cleanup() {
	[ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null
	[ -n "$PROVIDER_PID" ] && kill "$PROVIDER_PID" 2>/dev/null
	# gone before the script returns: nothing of the demo is left running
	wait $RECEIVER_PID $PROVIDER_PID 2>/dev/null || true
	re_cluster_stop "$DIR"
}
trap cleanup EXIT

# The receiver verifies every Standard Webhooks signature with the endpoint's secret.
python3 "$ROOT/test/receiver/receiver.py" --port 0 --port-file "$DIR/receiver.port" \
	--log "$DIR/received.jsonl" --secret "$SECRET" >"$DIR/receiver.out" 2>&1 &
RECEIVER_PID=$!
for _ in $(seq 100); do [ -s "$DIR/receiver.port" ] && break; sleep 0.1; done
RPORT=$(cat "$DIR/receiver.port")

# A second receiver plays the messaging provider: each send gets a message id.
# Its log is read by part 3 through the server (pg_read_file): readable by postgres.
install -m 644 /dev/null "$DIR/provider.jsonl"
python3 "$ROOT/test/receiver/receiver.py" --port 0 --port-file "$DIR/provider.port" \
	--log "$DIR/provider.jsonl" >"$DIR/provider.out" 2>&1 &
PROVIDER_PID=$!
for _ in $(seq 100); do [ -s "$DIR/provider.port" ] && break; sleep 0.1; done
PPORT=$(cat "$DIR/provider.port")
python3 - "$PPORT" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/_control/mode",
                             data=json.dumps({"mode": "provider"}).encode(), method="POST",
                             headers={"Content-Type": "application/json"})
urllib.request.urlopen(req).read()
PY

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

cp "$ROOT/scripts/demo_blast.sql" "$DIR/demo_blast.sql"
as_postgres psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
	-v provider="http://127.0.0.1:$PPORT/v19.0/1122334455/messages" -f "$DIR/demo_blast.sql"

# Part 3: a drip campaign on the same WhatsApp channel (it reads the fake provider's log to
# show what it got), and one on an SMS channel whose provider is down: a free port nothing listens on.
cp "$ROOT/scripts/demo_campaign.sql" "$DIR/demo_campaign.sql"
as_postgres psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
	-v provider_log="$DIR/provider.jsonl" -v sms_provider="http://127.0.0.1:$(re_free_port)/sms" \
	-f "$DIR/demo_campaign.sql"
