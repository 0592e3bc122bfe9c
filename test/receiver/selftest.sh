#!/usr/bin/env bash
# Self-test of test/receiver/receiver.py: starts it on a free port, exercises
# every mode and the control API with curl, checks the answers and the
# Standard Webhooks verification (signatures computed here with openssl),
# stops it with SIGTERM and prints "receiver selftest: ok".  Exits non-zero
# on the first failure.  Takes a few seconds.  Usage: bash test/receiver/selftest.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# Resolve the real interpreter once (a pyenv shim costs ~0.5 s per call).
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
TMP=$(mktemp -d /tmp/receiver_selftest.XXXXXX)
PID=

cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill "$PID" 2>/dev/null || true; fi
	rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
	echo "receiver selftest: FAILED: $*" >&2
	if [ -s "$TMP/stderr" ]; then echo "--- receiver stderr:" >&2; cat "$TMP/stderr" >&2; fi
	exit 1
}

# check NAME EXPECTED ACTUAL
check() {
	[ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}

# json FILE EXPR [ARGS...]: print a Python expression over the JSON document d
# (ARGS are sys.argv[3:]).
json() {
	"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"
}

# post PATH [curl args...]: POST, body saved to $TMP/body, prints the status.
post() {
	local path=$1
	shift
	curl -s -o "$TMP/body" -w '%{http_code}' -X POST "$@" "$BASE$path"
}

# mode JSON: switch the receiver's mode.
mode() {
	check "set mode $1" 200 "$(post /_control/mode -d "$1")"
}

# sign ID TS BODY [SECRET]: Standard Webhooks "v1,<base64 HMAC-SHA256>" with openssl.
sign() {
	local secret=${4:-$SECRET} hexkey
	hexkey=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
	printf 'v1,%s' "$(printf '%s.%s.%s' "$1" "$2" "$3" |
		openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)"
}

# ---------------------------------------------------------------- start
"$PY" "$HERE/receiver.py" --port 0 --port-file "$TMP/port" --log "$TMP/requests.jsonl" \
	--secret "$SECRET" 2>"$TMP/stderr" &
PID=$!
for _ in $(seq 100); do
	[ -s "$TMP/port" ] && break
	kill -0 "$PID" 2>/dev/null || fail "receiver exited at startup"
	sleep 0.05
done
[ -s "$TMP/port" ] || fail "no port file after 5 s"
PORT=$(cat "$TMP/port")
BASE=http://127.0.0.1:$PORT

# ---------------------------------------------------------------- signatures
NOW=$(date +%s)
BODY='{"type":"invoice.paid","data":{"amount":1234,"currency":"EUR","note":"h\u00e9"}}'
SIG=$(sign msg_1 "$NOW" "$BODY")
# Cross-check openssl against Python's hmac (the receiver's implementation).
PYSIG=$("$PY" -c '
import base64, hashlib, hmac, sys
key = base64.b64decode(sys.argv[1].split("_", 1)[1])
msg = f"{sys.argv[2]}.{sys.argv[3]}.{sys.argv[4]}".encode()
print("v1," + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode())' \
	"$SECRET" msg_1 "$NOW" "$BODY")
check "openssl and python signatures agree" "$PYSIG" "$SIG"

wh() { # wh ID TS SIG BODY: a signed webhook POST
	post /hooks/test -H 'Content-Type: application/json' -H "webhook-id: $1" \
		-H "webhook-timestamp: $2" -H "webhook-signature: $3" --data-binary "$4"
}
check "mode ok: valid signature" 200 "$(wh msg_1 "$NOW" "v1,bm90IHRoaXMgb25l $SIG" "$BODY")"
check "mode ok body" True "$(json "$TMP/body" 'd["ok"] is True and len(d["id"]) == 36')"
check "tampered body" 200 "$(wh msg_2 "$NOW" "$SIG" "${BODY/1234/9999}")"
OLD=$((NOW - 600))
check "old timestamp" 200 "$(wh msg_3 "$OLD" "$(sign msg_3 "$OLD" "$BODY")" "$BODY")"
check "unsigned" 200 "$(post /hooks/test -H 'webhook-id: msg_4' -d '{}')"
check "duplicate webhook-id" 200 "$(wh msg_1 "$NOW" "$SIG" "$BODY")"
curl -s "$BASE/_control/requests?since=0" -o "$TMP/reqs"
check "recorded verification" \
	"[(1, True, None), (2, False, 'no matching v1 signature'), (3, False, 'timestamp too old'), (4, False, 'missing header'), (5, True, None)]" \
	"$(json "$TMP/reqs" '[(r["seq"], r["verified"], r["verify_error"] and r["verify_error"].split(" (")[0].split(":")[0]) for r in d]')"
check "recorded fields" True "$(json "$TMP/reqs" 'd[0]["body"] == sys.argv[3] and d[0]["webhook_id"] == "msg_1" and d[0]["headers"]["webhook-timestamp"] == sys.argv[4] and (d[0]["method"], d[0]["path"], d[0]["answered"]) == ("POST", "/hooks/test", 200)' "$BODY" "$NOW")"
curl -s "$BASE/_control/requests?since=3" -o "$TMP/reqs"
check "requests?since=3" "[4, 5]" "$(json "$TMP/reqs" '[r["seq"] for r in d]')"
curl -s "$BASE/_control/stats" -o "$TMP/stats"
check "stats after signatures" "(5, 4, 1, 2, 3, {'200': 5})" \
	"$(json "$TMP/stats" '(d["requests"], d["unique_webhook_ids"], d["duplicates"], d["verified_ok"], d["verified_bad"], d["by_status"])')"
check "log file lines" 5 "$(wc -l <"$TMP/requests.jsonl")"

# Secret set through the control API; null disables verification.
SECRET2=whsec_$(printf 'another-secret-key-0123' | base64 -w0)
check "set secret" 200 "$(post /_control/secret -d "{\"secret\": \"$SECRET2\"}")"
check "new secret verifies" 200 "$(wh msg_6 "$NOW" "$(sign msg_6 "$NOW" x "$SECRET2")" x)"
check "clear secret" 200 "$(post /_control/secret -d '{"secret": null}')"
check "no secret" 200 "$(wh msg_7 "$NOW" "$SIG" x)"
check "bad secret rejected" 400 "$(post /_control/secret -d '{"secret": "whsec_%%%"}')"
curl -s "$BASE/_control/requests?since=5" -o "$TMP/reqs"
check "verified with control secret / null without" "[True, None]" "$(json "$TMP/reqs" '[r["verified"] for r in d]')"

# ---------------------------------------------------------------- modes
check "unknown mode rejected" 400 "$(post /_control/mode -d '{"mode": "nope"}')"

mode '{"mode": "ok", "status": 204}'
check "ok 204" 204 "$(post /x -d a)"
[ ! -s "$TMP/body" ] || fail "ok 204 sent a body"

mode '{"mode": "status", "status": 429, "retry_after": "3"}'
HDRS=$(curl -s -D - -o /dev/null -X POST -d a "$BASE/x" | tr -d '\r')
grep -q '^HTTP/1.1 429' <<<"$HDRS" || fail "status 429: $HDRS"
grep -qi '^retry-after: 3$' <<<"$HDRS" || fail "status 429 without Retry-After: $HDRS"
mode '{"mode": "status", "status": 500, "body": "boom"}'
check "status 500" 500 "$(post /x -d a)"
check "status 500 body" boom "$(cat "$TMP/body")"
for s in 410 400; do
	mode "{\"mode\": \"status\", \"status\": $s}"
	check "status $s" $s "$(post /x -d a)"
done

mode '{"mode": "redirect"}'
HDRS=$(curl -s -D - -o /dev/null -X POST -d a "$BASE/x" | tr -d '\r')
grep -q '^HTTP/1.1 302' <<<"$HDRS" || fail "redirect: $HDRS"
grep -qi '^location: http://127.0.0.1:1/elsewhere$' <<<"$HDRS" || fail "redirect Location: $HDRS"

mode '{"mode": "stall", "seconds": 3}'
rc=0
curl -s -o /dev/null --max-time 1 -X POST -d a "$BASE/x" || rc=$?
check "stall times the client out (curl 28)" 28 $rc

mode '{"mode": "close"}'
rc=0
curl -s -o /dev/null --max-time 5 -X POST -d a "$BASE/x" || rc=$?
check "close: empty reply (curl 52)" 52 $rc

mode '{"mode": "garbage"}'
rc=0
curl -s -o /dev/null --max-time 5 -X POST -d a "$BASE/x" || rc=$?
[ $rc -ne 0 ] && [ $rc -ne 28 ] || fail "garbage: curl exit $rc, expected a protocol error"

mode '{"mode": "slow", "seconds": 1, "interval": 0.25}'
OUT=$(curl -s -o "$TMP/body" -w '%{http_code} %{time_starttransfer} %{time_total}' --max-time 5 -X POST -d a "$BASE/x")
read -r code tstart ttotal <<<"$OUT"
check "slow status" 200 "$code"
check "slow trickles the body after the headers" True \
	"$("$PY" -c 'import sys; s, t = map(float, sys.argv[1:]); print(t - s >= 0.7 and s < 0.5)' "$tstart" "$ttotal")"
check "slow body size" 4 "$(wc -c <"$TMP/body")"
mode '{"mode": "slow", "seconds": 3}'
rc=0
curl -s -o /dev/null --max-time 1 -X POST -d a "$BASE/x" || rc=$?
check "slow times the client out (curl 28)" 28 $rc

mode '{"mode": "huge", "bytes": 5000000}'
check "huge" "200 5000000" "$(curl -s -o /dev/null -w '%{http_code} %{size_download}' -X POST -d a "$BASE/x")"

mode '{"mode": "sequence", "statuses": [500, 500, 200]}'
# Several URLs in one curl: also checks keep-alive (connection reused).
OUT=$(curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}/%{num_connects} ' \
	-X POST -d a "$BASE/1" "$BASE/2" "$BASE/3" "$BASE/4")
check "sequence + keep-alive" "500/1 500/0 200/0 200/0 " "$OUT"

mode '{"mode": "provider"}'
check "provider" 200 "$(post /v17.0/123/messages -H 'Content-Type: application/json' -d '{"to": "+33600000000", "text": {"body": "hi"}}')"
check "provider answer" True \
	"$(json "$TMP/body" 'd["messages"][0]["id"].startswith("wamid.") and d["echo"] == {"to": "+33600000000", "text": {"body": "hi"}}')"
check "provider non-JSON" 200 "$(post /m -d 'not json')"
check "provider echo null" None "$(json "$TMP/body" 'd["echo"]')"
mode '{"mode": "provider", "shape": "whatsapp"}'
check "provider whatsapp" 200 "$(post /m -d '{"to": "+33 6 00", "type": "text"}')"
check "provider whatsapp answer" True \
	"$(json "$TMP/body" 'sorted(d) == ["contacts", "messages", "messaging_product"] and d["messaging_product"] == "whatsapp" and d["contacts"] == [{"input": "+33 6 00", "wa_id": "33600"}] and d["messages"][0]["id"].startswith("wamid.")')"
WAMID=$(json "$TMP/body" 'd["messages"][0]["id"]')
mode '{"mode": "provider", "shape": "whatsapp", "id_from": "to", "id_prefix": "wamid.T"}'
check "provider id_from" 200 "$(post /m -d '{"to": "+33 6 01"}')"
check "provider id_from answer" wamid.T33601 "$(json "$TMP/body" 'd["messages"][0]["id"]')"
check "provider id_from missing" 400 "$(post /m -d '{"text": "no to"}')"
check "provider bad shape" 400 "$(post /_control/mode -d '{"mode": "provider", "shape": "sms"}')"
curl -s "$BASE/_control/requests?since=0" -o "$TMP/reqs"
check "provider ids recorded" "['$WAMID', 'wamid.T33601', None]" \
	"$(json "$TMP/reqs" '[r["provider_id"] for r in d[-3:]]')"

mode '{"mode": "ok", "fail_ratio": 1.0}'
check "fail_ratio 1" 500 "$(post /x -d a)"
mode '{"mode": "ok", "fail_ratio": 0.5}'
URLS=()
for i in $(seq 40); do URLS+=(-o /dev/null "$BASE/r$i"); done
OUT=$(curl -s -w '%{http_code}\n' -X POST -d a "${URLS[@]}" | sort -u | tr '\n' ' ')
check "fail_ratio 0.5 mixes 200 and 500" "200 500 " "$OUT"

# Expect: 100-continue must be answered at once (curl otherwise waits 1 s),
# and chunked request bodies are read.
mode '{"mode": "ok"}'
OUT=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H 'Expect: 100-continue' -X POST -d expect-body "$BASE/e")
check "expect 100-continue fast" True "$("$PY" -c 'import sys; print(sys.argv[1] == "200" and float(sys.argv[2]) < 0.8)' $OUT)"
check "chunked body" 200 "$(post /c -H 'Transfer-Encoding: chunked' -d chunked-body)"
curl -s "$BASE/_control/requests?since=0" -o "$TMP/reqs"
check "expect + chunked recorded" "['expect-body', 'chunked-body']" "$(json "$TMP/reqs" '[r["body"] for r in d[-2:]]')"

# A client that disconnects mid-body must not disturb the server.
"$PY" -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
s.close()' "$PORT"
check "alive after a client disconnect" 200 "$(post /x -d a)"

# ---------------------------------------------------------------- reset
curl -s "$BASE/_control/stats" -o "$TMP/stats"
N=$(json "$TMP/stats" 'd["requests"]')
check "log lines = requests" "$N" "$(wc -l <"$TMP/requests.jsonl")"
mode '{"mode": "status", "status": 503}'
check "reset" 200 "$(post /_control/reset)"
curl -s "$BASE/_control/stats" -o "$TMP/stats"
check "stats after reset" "0 {} 0 0" \
	"$(json "$TMP/stats" '" ".join(map(str, (d["requests"], d["by_status"], d["unique_webhook_ids"], d["duplicates"])))')"
[ ! -s "$TMP/requests.jsonl" ] || fail "log not truncated by reset"
check "mode ok after reset" 200 "$(post /x -d a)"
check "secret back to --secret after reset" True \
	"$(curl -s "$BASE/_control/requests?since=0" -o "$TMP/reqs" && json "$TMP/reqs" 'len(d) == 1 and d[0]["seq"] == 1 and d[0]["verified"] is False')"

# ---------------------------------------------------------------- stop
kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
check "exit status after SIGTERM" 0 $rc
! grep -q Traceback "$TMP/stderr" || fail "receiver printed a traceback"

echo "receiver selftest: ok"
