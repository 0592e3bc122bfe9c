#!/usr/bin/env python3
"""Controllable HTTP/1.1 webhook receiver for revenue_engine tests and benchmarks.

Listens on 127.0.0.1 (threaded, keep-alive), records every POST/PUT/PATCH to a
non-control path as one JSON line in --log, verifies Standard Webhooks
signatures when a secret is configured, and answers according to a "mode"
that tests change at runtime through the /_control/* API.  See README.md in
this directory for the modes and the control API.

    python3 test/receiver/receiver.py --port 0 --port-file /tmp/port \
        --log /tmp/requests.jsonl [--secret whsec_...]

The actual bound port is written to --port-file once the socket listens.
SIGTERM or SIGINT stops the server; the process then exits 0.

Python 3 standard library only.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import random
import signal
import socketserver
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CONTROL_PREFIX = "/_control/"
# Standard Webhooks: reject timestamps further than this from "now" (seconds).
TIMESTAMP_TOLERANCE = 5 * 60
GARBAGE = b"this is not http\r\n\r\n"
REDIRECT_LOCATION = "http://127.0.0.1:1/elsewhere"
MODES = ("ok", "status", "redirect", "stall", "close", "slow", "garbage",
         "huge", "sequence", "provider")
# Provider answers: {"messages", "echo"}, or the WhatsApp Cloud API's own.
PROVIDER_SHAPES = ("echo", "whatsapp")
# Statuses whose responses carry no body and no Content-Length (RFC 9110).
NO_BODY_STATUSES = (204, 304)
HUGE_CHUNK = b"x" * 65536


class ConfigError(ValueError):
    """A control request carried an invalid setting (answered with 400)."""


# --------------------------------------------------------------------------
# Standard Webhooks verification
# --------------------------------------------------------------------------

def decode_secret(secret):
    """Return the HMAC key of a "whsec_<base64>" secret (prefix optional)."""
    if not isinstance(secret, str) or not secret:
        raise ConfigError("secret must be a non-empty string")
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"secret is not valid base64: {exc}") from None
    if not key:
        raise ConfigError("secret decodes to an empty key")
    return key


def verify_signature(key, headers, body, now):
    """Verify a Standard Webhooks signature.

    headers: dict with lower-cased names; body: raw request bytes.
    Returns (verified: bool, error: str or None).
    """
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    missing = [name for name, value in (("webhook-id", msg_id),
                                        ("webhook-timestamp", timestamp),
                                        ("webhook-signature", signatures))
               if not value]
    if missing:
        return False, "missing header: " + ", ".join(missing)
    try:
        ts = int(timestamp)
    except ValueError:
        return False, f"invalid webhook-timestamp {timestamp!r}"
    if ts < now - TIMESTAMP_TOLERANCE:
        return False, f"timestamp too old ({int(now - ts)} s in the past)"
    if ts > now + TIMESTAMP_TOLERANCE:
        return False, f"timestamp too new ({int(ts - now)} s in the future)"
    # Header values were decoded as latin-1 by http.client, so encoding them
    # back the same way recovers the exact bytes the sender signed.
    signed = f"{msg_id}.{timestamp}.".encode("latin-1") + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split():
        version, sep, signature = entry.partition(",")
        if version == "v1" and sep and hmac.compare_digest(
                signature.encode("latin-1"), expected):
            return True, None
    return False, "no matching v1 signature"


# --------------------------------------------------------------------------
# Mode configuration
# --------------------------------------------------------------------------

def _number(spec, name, default, lo, hi, kind=float):
    """Read an optional numeric setting and check its range."""
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ConfigError(f"{name} must be an integer")
    value = kind(value)
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return value


def normalize_mode(spec):
    """Validate a /_control/mode body and return the complete mode config."""
    if not isinstance(spec, dict):
        raise ConfigError("body must be a JSON object")
    mode = spec.get("mode", "ok")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    cfg = {"mode": mode,
           "fail_ratio": _number(spec, "fail_ratio", 0.0, 0.0, 1.0)}
    retry_after = spec.get("retry_after")
    if retry_after is not None:
        retry_after = str(retry_after)
    if mode == "ok":
        cfg["status"] = _number(spec, "status", 200, 200, 299, int)
    elif mode == "status":
        if "status" not in spec:
            raise ConfigError("mode 'status' needs a status")
        cfg["status"] = _number(spec, "status", None, 200, 599, int)
        cfg["retry_after"] = retry_after
        body = spec.get("body")
        if body is not None and not isinstance(body, str):
            raise ConfigError("body must be a string")
        cfg["body"] = body
        body_base64 = spec.get("body_base64")
        if body_base64 is not None:
            try:
                base64.b64decode(body_base64, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ConfigError("body_base64 must be base64")
        cfg["body_base64"] = body_base64
    elif mode == "redirect":
        cfg["status"] = _number(spec, "status", 302, 300, 399, int)
        cfg["location"] = str(spec.get("location", REDIRECT_LOCATION))
    elif mode == "stall":
        cfg["seconds"] = _number(spec, "seconds", 30.0, 0.0, 3600.0)
    elif mode == "slow":
        cfg["seconds"] = _number(spec, "seconds", 5.0, 0.0, 3600.0)
        cfg["interval"] = _number(spec, "interval", 0.5, 0.01, 60.0)
    elif mode == "huge":
        cfg["bytes"] = _number(spec, "bytes", 5_000_000, 0, 1 << 40, int)
    elif mode == "sequence":
        statuses = spec.get("statuses")
        if (not isinstance(statuses, list) or not statuses
                or not all(isinstance(s, int) and not isinstance(s, bool)
                           and 200 <= s <= 599 for s in statuses)):
            raise ConfigError("statuses must be a non-empty list of status codes 200-599")
        cfg["statuses"] = statuses
        cfg["retry_after"] = retry_after
    elif mode == "provider":
        cfg["id_prefix"] = str(spec.get("id_prefix", "wamid."))
        cfg["shape"] = spec.get("shape", "echo")
        if cfg["shape"] not in PROVIDER_SHAPES:
            raise ConfigError(f"shape must be one of {', '.join(PROVIDER_SHAPES)}")
        id_from = spec.get("id_from")
        if id_from is not None and (not isinstance(id_from, str) or not id_from):
            raise ConfigError("id_from must be the name of a request field")
        cfg["id_from"] = id_from
    return cfg


class Plan:
    """What to answer one webhook request with, decided under the state lock."""
    __slots__ = ("kind", "status", "cfg", "provider_id")

    def __init__(self, kind, status, cfg, provider_id=None):
        self.kind = kind          # mode name, or "fail" for fail_ratio hits
        self.status = status      # status code sent, None if no HTTP answer
        self.cfg = cfg
        self.provider_id = provider_id


# --------------------------------------------------------------------------
# Shared state: mode, secret, counters, recorded requests, log file
# --------------------------------------------------------------------------

class ReceiverState:
    def __init__(self, log_path, secret, keep):
        self.lock = threading.Lock()
        self.stopping = threading.Event()   # set on shutdown; ends stalls
        self.keep = keep
        self.initial_secret = secret
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        # Provider message ids stay unique for the life of the process, even
        # across resets, so they never collide in a database under test.
        self.provider_counter = 0
        with self.lock:
            self._reset_locked()

    # -- configuration ----------------------------------------------------

    def _reset_locked(self):
        self.mode = normalize_mode({"mode": "ok"})
        self.mode_requests = 0      # requests answered under the current mode
        self.seq = 0
        self.records = []           # most recent recorded requests, by seq
        self.by_status = {}
        self.seen_ids = set()
        self.duplicates = 0
        self.verified_ok = 0
        self.verified_bad = 0
        self._set_secret_locked(self.initial_secret)
        if self.log:
            self.log.seek(0)
            self.log.truncate()
            self.log.flush()

    def _set_secret_locked(self, secret):
        # Read without the lock by handlers: one tuple, replaced atomically.
        self.secret = (secret, decode_secret(secret)) if secret else None

    def reset(self):
        with self.lock:
            self._reset_locked()

    def set_mode(self, cfg):
        with self.lock:
            self.mode = cfg
            self.mode_requests = 0

    def set_secret(self, secret):
        if secret is not None:
            decode_secret(secret)   # raises ConfigError before changing anything
        with self.lock:
            self._set_secret_locked(secret)

    # -- per request (call with self.lock held) ----------------------------

    def plan_locked(self, request):
        """Decide the answer for the next webhook request.

        request: the body parsed as JSON, or None if it is not JSON.
        """
        cfg = self.mode
        n = self.mode_requests
        self.mode_requests += 1
        if cfg["fail_ratio"] > 0 and random.random() < cfg["fail_ratio"]:
            return Plan("fail", 500, cfg)
        mode = cfg["mode"]
        if mode in ("ok", "status", "redirect"):
            return Plan(mode, cfg["status"], cfg)
        if mode == "sequence":
            statuses = cfg["statuses"]
            return Plan(mode, statuses[min(n, len(statuses) - 1)], cfg)
        if mode in ("close", "garbage"):
            return Plan(mode, None, cfg)
        if mode == "provider":
            if cfg["id_from"] is None:
                self.provider_counter += 1
                return Plan(mode, 200, cfg, f"{cfg['id_prefix']}{self.provider_counter}")
            # The id follows from the request, so a test knows it in advance.
            value = request.get(cfg["id_from"]) if isinstance(request, dict) else None
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                return Plan("no_id", 400, cfg)
            return Plan(mode, 200, cfg,
                        cfg["id_prefix"] + "".join(c for c in str(value) if c.isalnum()))
        return Plan(mode, 200, cfg)     # stall, slow, huge

    def record_locked(self, method, path, headers, body, verified, verify_error,
                      answered, provider_id=None):
        """Count one webhook request, keep it in memory and append it to the log."""
        self.seq += 1
        webhook_id = headers.get("webhook-id")
        rec = {"seq": self.seq, "time": time.time(), "method": method,
               "path": path, "headers": headers, "body": body,
               "webhook_id": webhook_id, "verified": verified,
               "verify_error": verify_error, "answered": answered,
               "provider_id": provider_id}
        key = "none" if answered is None else str(answered)
        self.by_status[key] = self.by_status.get(key, 0) + 1
        if webhook_id is not None:
            if webhook_id in self.seen_ids:
                self.duplicates += 1
            else:
                self.seen_ids.add(webhook_id)
        if verified is True:
            self.verified_ok += 1
        elif verified is False:
            self.verified_bad += 1
        self.records.append(rec)
        # Bound memory for long benchmarks: keep between keep and 2*keep.
        if self.keep and len(self.records) > 2 * self.keep:
            del self.records[:-self.keep]
        if self.log:
            self.log.write(json.dumps(rec) + "\n")
            self.log.flush()

    # -- queries ---------------------------------------------------------

    def stats(self):
        with self.lock:
            return {"requests": self.seq,
                    "by_status": dict(self.by_status),
                    "unique_webhook_ids": len(self.seen_ids),
                    "duplicates": self.duplicates,
                    "verified_ok": self.verified_ok,
                    "verified_bad": self.verified_bad}

    def requests_since(self, since, limit):
        with self.lock:
            records = self.records
            if not records:
                return []
            # seq numbers are contiguous, so the position is arithmetic.
            start = max(0, since - records[0]["seq"] + 1)
            end = len(records) if limit is None else start + limit
            return records[start:end]   # records are never mutated: safe

    def close(self):
        with self.lock:
            if self.log:
                self.log.close()
                self.log = None


# --------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------

def ok_body():
    return json.dumps({"ok": True, "id": str(uuid.uuid4())}).encode()


def error_body(status):
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return json.dumps({"ok": False, "status": status, "error": phrase}).encode()


def provider_body(plan, request):
    """A provider's answer to an accepted send: the message id, in plan.cfg's shape."""
    if plan.cfg["shape"] == "whatsapp":
        to = request.get("to") if isinstance(request, dict) else None
        contacts = []
        if isinstance(to, str):
            contacts = [{"input": to, "wa_id": "".join(c for c in to if c.isdigit())}]
        return {"messaging_product": "whatsapp", "contacts": contacts,
                "messages": [{"id": plan.provider_id}]}
    return {"messages": [{"id": plan.provider_id}], "echo": request}


def slow_body(n):
    """n bytes; valid JSON ({"ok":true} padded with leading spaces) if it fits."""
    payload = b'{"ok":true}'
    return b" " * (n - len(payload)) + payload if n >= len(payload) else b"." * n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive
    server_version = "revenue-engine-test-receiver/1.0"
    wbufsize = -1                          # buffered: headers + body in one send
    disable_nagle_algorithm = True         # TCP_NODELAY (slow mode, small answers)
    timeout = 120                          # drop idle keep-alive connections

    # -- plumbing ----------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass                                # no per-request stderr logging

    def version_string(self):
        return self.server_version

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            # Client went away mid-request or mid-answer: nothing to answer.
            self.close_connection = True

    def handle_expect_100(self):
        # The stdlib version only buffers "100 Continue"; with a buffered
        # wfile it must be flushed or the client waits for it (curl: 1 s).
        self.send_response_only(HTTPStatus.CONTINUE)
        self.end_headers()
        self.wfile.flush()
        return True

    def _read_body(self):
        """Return the request body (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        n = int(length)                     # ValueError -> 400
        if n < 0:
            raise ValueError("negative Content-Length")
        data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionResetError("client disconnected mid-body")
        return data

    def _read_chunked(self):
        chunks = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionResetError("client disconnected mid-body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass                    # skip trailers
                return b"".join(chunks)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionResetError("client disconnected mid-body")
            chunks.append(chunk)
            self.rfile.readline()           # CRLF after each chunk

    def _send(self, status, body=b"", content_type="application/json",
              headers=(), close=False):
        """Send a complete response (Content-Length always, except 204/304)."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status not in NO_BODY_STATUSES:
            if body:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        else:
            body = b""
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status, obj, close=False):
        self._send(status, json.dumps(obj).encode(), close=close)

    # -- methods -----------------------------------------------------------

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            body = self._read_body()
        except ValueError:
            self._send_json(400, {"error": "bad request body framing"}, close=True)
            return
        if path.startswith(CONTROL_PREFIX):
            self._control_post(path, body)
        else:
            self._webhook(body)

    do_PUT = do_POST
    do_PATCH = do_POST

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == CONTROL_PREFIX + "stats":
            self._send_json(200, self.server.state.stats())
        elif url.path == CONTROL_PREFIX + "requests":
            query = parse_qs(url.query)
            try:
                since = int(query.get("since", ["0"])[0])
                limit = int(query["limit"][0]) if "limit" in query else None
            except ValueError:
                self._send_json(400, {"error": "since and limit must be integers"})
                return
            self._send_json(200, self.server.state.requests_since(since, limit))
        elif url.path == CONTROL_PREFIX + "mode":
            state = self.server.state
            self._send_json(200, {"mode": state.mode,
                                  "secret_set": state.secret is not None})
        elif url.path.startswith(CONTROL_PREFIX):
            self._send_json(404, {"error": f"unknown control endpoint {url.path}"})
        else:
            self._send_json(200, {"ok": True, "receiver": True})   # health check

    # -- control API -------------------------------------------------------

    def _control_post(self, path, body):
        state = self.server.state
        try:
            spec = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            self._send_json(400, {"error": f"body is not JSON: {exc}"})
            return
        try:
            if path == CONTROL_PREFIX + "mode":
                cfg = normalize_mode(spec)
                state.set_mode(cfg)
                self._send_json(200, {"ok": True, "mode": cfg})
            elif path == CONTROL_PREFIX + "secret":
                if not isinstance(spec, dict) or "secret" not in spec:
                    raise ConfigError('body must be {"secret": "whsec_..."} (or null)')
                state.set_secret(spec["secret"])
                self._send_json(200, {"ok": True,
                                      "secret_set": spec["secret"] is not None})
            elif path == CONTROL_PREFIX + "reset":
                state.reset()
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": f"unknown control endpoint {path}"})
        except ConfigError as exc:
            self._send_json(400, {"error": str(exc)})

    # -- webhooks ----------------------------------------------------------

    def _webhook(self, body):
        state = self.server.state
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        secret = state.secret
        if secret is None:
            verified, verify_error = None, None
        else:
            verified, verify_error = verify_signature(secret[1], headers, body,
                                                      time.time())
        text = body.decode("utf-8", errors="replace")
        request = None
        if state.mode["mode"] == "provider" and body:   # only that mode reads it
            try:
                request = json.loads(body)
            except ValueError:
                pass
        with state.lock:
            plan = state.plan_locked(request)
            state.record_locked(self.command, self.path, headers, text,
                                verified, verify_error, plan.status, plan.provider_id)
        self._answer(plan, request)

    def _answer(self, plan, request):
        kind, status, cfg = plan.kind, plan.status, plan.cfg
        if kind == "fail":
            self._send(500, error_body(500))
        elif kind == "ok":
            self._send(status, ok_body())
        elif kind in ("status", "sequence"):
            headers = ()
            if cfg.get("retry_after") is not None and status >= 300:
                headers = (("Retry-After", cfg["retry_after"]),)
            if cfg.get("body_base64") is not None:
                self._send(status, base64.b64decode(cfg["body_base64"]),
                           "application/octet-stream", headers)
            elif cfg.get("body") is not None:
                self._send(status, cfg["body"].encode(), "text/plain; charset=utf-8",
                           headers)
            else:
                self._send(status, ok_body() if status < 300 else error_body(status),
                           headers=headers)
        elif kind == "redirect":
            self._send(status, headers=(("Location", cfg["location"]),))
        elif kind == "stall":
            # Event.wait sleeps without spinning and wakes at shutdown.
            if state_stopping(self).wait(cfg["seconds"]):
                self.close_connection = True
            else:
                self._send(200, ok_body())
        elif kind == "close":
            self.close_connection = True        # no response at all
        elif kind == "garbage":
            self.wfile.write(GARBAGE)
            self.wfile.flush()
            self.close_connection = True
        elif kind == "slow":
            self._send_slow(cfg["seconds"], cfg["interval"])
        elif kind == "huge":
            self._send_huge(cfg["bytes"])
        elif kind == "provider":
            self._send(200, json.dumps(provider_body(plan, request)).encode())
        elif kind == "no_id":
            self._send_json(400, {"error": {"message": f"the request has no "
                                            f"{cfg['id_from']!r} string or number",
                                            "code": 100}})

    def _send_slow(self, seconds, interval):
        """Headers at once, then one body byte every interval until done."""
        data = slow_body(max(1, round(seconds / interval)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        stopping = state_stopping(self)
        for i in range(len(data)):
            if stopping.wait(interval):
                self.close_connection = True
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()

    def _send_huge(self, size):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        remaining = size
        while remaining > 0:
            n = min(remaining, len(HUGE_CHUNK))
            self.wfile.write(HUGE_CHUNK if n == len(HUGE_CHUNK) else HUGE_CHUNK[:n])
            remaining -= n


def state_stopping(handler):
    return handler.server.state.stopping


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True           # never wait for handler threads at exit
    request_queue_size = 1024       # many concurrent connections from benchmarks
    allow_reuse_address = True

    def __init__(self, address, handler, state):
        self.state = state
        super().__init__(address, handler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup that can
        # hang without a network; the server name is unused here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return                  # client disconnected: not worth a traceback
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def write_port_file(path, port):
    """Write the port atomically so a poller never reads a partial file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--log", help="append one JSON line per webhook request here")
    parser.add_argument("--secret", help="Standard Webhooks secret (whsec_<base64>)")
    parser.add_argument("--keep", type=int, default=50000,
                        help="requests kept in memory for /_control/requests "
                             "(between N and 2N; 0 = unlimited)")
    args = parser.parse_args(argv)

    if args.secret:
        try:
            decode_secret(args.secret)
        except ConfigError as exc:
            parser.error(f"--secret: {exc}")

    state = ReceiverState(args.log, args.secret, args.keep)
    server = ReceiverServer((args.host, args.port), Handler, state)
    port = server.server_address[1]

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())

    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"receiver listening on {args.host}:{port}", file=sys.stderr, flush=True)

    stop.wait()                     # signal handlers run here and set it
    state.stopping.set()            # wake stalled / trickling handlers
    server.shutdown()
    server.server_close()
    state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
