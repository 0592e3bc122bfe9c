#!/usr/bin/env python3
"""A fake messaging provider for the campaign end-to-end test (test/t/060_campaigns_e2e.pl).

Accepts every POST/PUT/PATCH to a non-control path, answers 200 with a
provider message id ({"messages": [{"id": "prov.<n>"}]}, the shape the
channel's message_id_path '{messages,0,id}' reads) after an optional delay,
and records every request: its arrival and answer times, path, the
Idempotency-Key header, every header, and the body.  The record is what the
test compares with its own expectation, so it keeps everything, in memory
and (one JSON line per request) in --log.

    python3 test/lib/fake_provider.py --port 0 --port-file F --log L

Control API (JSON):
    GET  /_control/stats                 {"requests": n, "keys": distinct idempotency keys}
    GET  /_control/requests?since=N      the records with seq > N, oldest first
                                         (headers=1: with every header)
    POST /_control/delay  {"min": s, "max": s}   each answer waits uniform(min, max) seconds

The delay makes requests overlap, so a kill -9 of the worker finds some in
flight.  Python 3 standard library only.
"""

import argparse
import json
import os
import random
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CONTROL = "/_control/"


class State:
    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.records = []
        self.keys = set()
        self.delay = (0.0, 0.0)
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None

    def record(self, rec):
        with self.lock:
            rec["seq"] = len(self.records) + 1
            rec["provider_id"] = f"prov.{rec['seq']}"
            self.records.append(rec)
            if rec["idempotency_key"] is not None:
                self.keys.add(rec["idempotency_key"])
            if self.log:
                self.log.write(json.dumps(rec) + "\n")
                self.log.flush()
            return rec["provider_id"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120

    def log_message(self, format, *args):  # noqa: A002
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        url = urlsplit(self.path)
        st = self.server.state
        if url.path == CONTROL + "stats":
            with st.lock:
                self._json(200, {"requests": len(st.records), "keys": len(st.keys)})
        elif url.path == CONTROL + "requests":
            query = parse_qs(url.query)
            since = int(query.get("since", ["0"])[0])
            with st.lock:
                recs = st.records[since:]
            if query.get("headers", ["0"])[0] != "1":   # the log file has them all
                recs = [{k: v for k, v in r.items() if k != "headers"} for r in recs]
            self._json(200, recs)
        else:
            self._json(200, {"ok": True})

    def do_POST(self):
        t_in = time.time()
        url = urlsplit(self.path)
        body = self._body()
        st = self.server.state
        if url.path.startswith(CONTROL):
            spec = json.loads(body or b"{}")
            if url.path == CONTROL + "delay":
                lo, hi = float(spec.get("min", 0)), float(spec.get("max", spec.get("min", 0)))
                st.delay = (lo, max(lo, hi))
                self._json(200, {"ok": True, "delay": st.delay})
            else:
                self._json(404, {"error": "unknown control endpoint"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = {"time": t_in, "method": self.command, "path": url.path,
               "idempotency_key": headers.get("idempotency-key"),
               "headers": headers, "body": body.decode("utf-8", "replace")}
        lo, hi = st.delay
        if hi > 0:
            time.sleep(random.uniform(lo, hi))
        rec["answered_at"] = time.time()
        pid = st.record(rec)
        self._json(200, {"messages": [{"id": pid}]})

    do_PUT = do_POST
    do_PATCH = do_POST


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)    # no getfqdn() lookup
        self.server_name, self.server_port = self.server_address[:2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--log")
    a = p.parse_args()
    srv = Server(("127.0.0.1", a.port), Handler)
    srv.state = State(a.log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    if a.port_file:
        tmp = f"{a.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{srv.server_address[1]}\n")
        os.replace(tmp, a.port_file)
    stop.wait()
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
