"""The report of test/bench/delivery.sh, from the raw measurements in its directory."""
import os
import statistics
import sys

(d, env, elapsed, worker_mif, ep_mif, claim_batch, record_batch, lat_rate,
 lat_seconds) = sys.argv[1:10]

TARGET_TPUT = 5000
TARGET_P99_MS = 50
FLAT_KB = 1024          # private memory (RssAnon) growth still counted as flat

rows = []
for line in open(os.path.join(d, "raw")):
    f = line.split()
    kv = {}
    for x in f[2:]:
        k, _, v = x.partition("=")
        kv[k] = v
    rows.append((f[0], f[1], kv))


def get(kind):
    return [(r, kv) for k, r, kv in rows if k == kind]


out = []
p = out.append


def fmt(x):
    return f"{x:,.0f}"


def num(kv, k):
    return float(kv[k])


N = int(get("enqueue")[0][1]["n"])
quiet = {r: kv for r, kv in get("quiet")}


def cpu(kv, secs):
    hz, cpus = num(kv, "hz"), num(kv, "cpus")
    window = num(kv, "total") / cpus / hz
    return {
        "window": window,
        "busy": num(kv, "busy") / hz / window,
        "ours": num(kv, "ours") / hz / window,
        "other": (num(kv, "busy") - num(kv, "ours")) / hz / window,
        "worker_s": num(kv, "wcpu") / hz,
        "nginx_s": num(kv, "ncpu") / hz,
        "ours_s": num(kv, "ours") / hz,
    }


cpu_cost = {"w": [], "wc": [], "f": []}


def round_line(kind, r, kv):
    secs = num(kv, "end") - num(kv, "start")
    ok, recs, xids = int(kv["ok"]), int(kv["recs"]), int(kv["xids"])
    c = cpu(kv, secs)
    rate = N / secs
    name = {"w": "worker", "wdiag": "worker", "f": "floor "}[kind]
    if kind == "f":
        claims = int(kv["claims"]) - 1          # the last claim found nothing
        tx = f"{claims} claim tx (avg {ok / max(claims, 1):.0f}), {recs} record tx (avg {ok / max(recs, 1):.0f})"
        work = (f"cluster CPU {c['ours_s']:.1f} s = {c['ours_s'] / N * 1e6:.0f} us/delivery "
                f"({c['ours_s'] / secs * 100:.0f}% of a core); wall time in claim tx "
                f"{float(kv['tclaim']) / N * 1e6:.0f} us/delivery, in record tx {float(kv['trecord']) / N * 1e6:.0f}")
        cpu_cost["f"].append(c['ours_s'] / N * 1e6)
    else:
        claims = xids - recs
        tx = f"{claims} claim tx (avg {ok / max(claims, 1):.0f}), {recs} record tx (avg {ok / max(recs, 1):.0f})"
        cl = c['ours_s'] - c['nginx_s']
        work = (f"worker CPU {c['worker_s']:.1f} s = {c['worker_s'] / N * 1e6:.0f} us/delivery "
                f"({c['worker_s'] / secs * 100:.0f}% of a core), cluster CPU {cl / N * 1e6:.0f} us/delivery, "
                f"nginx {c['nginx_s'] / secs * 100:.0f}% of a core")
        if kind == "w":
            cpu_cost["w"].append(c['worker_s'] / N * 1e6)
            cpu_cost["wc"].append(cl / N * 1e6)
    q = quiet.get(f"{'worker' if kind != 'f' else 'floor'}-{r}")
    s = (f"{name} {r:>4s}: {secs:7.3f} s {fmt(rate):>7s}/s | {tx} | {work} | "
         f"other processes {c['other']:.2f} CPUs" + (f" (before: {q['other']})" if q else ""))
    checks = []
    if ok != N:
        checks.append(f"only {ok} of {N} deliveries sent")
    if int(kv["ev"]) != N:
        checks.append(f"{kv['ev']} of {N} events marked sent")
    if int(kv["a204"]) != N or int(kv["aother"]) != 0:
        checks.append(f"attempt log: {kv['a204']} sent/204 + {kv['aother']} other")
    if checks:
        s += "  CHECK FAILED: " + "; ".join(checks)
    return rate, s


p("delivery worker benchmark: throughput, latency, memory (test/bench/delivery.sh)")
p(env)
p(f"settings: revenue_engine.worker_max_in_flight = {worker_mif}; endpoint 'sink' max_in_flight = {ep_mif}; "
  "signing secret set (every request HMAC-SHA256 signed)")
p("          sink: nginx, 1 process, keep-alive (keepalive_requests 100000), 'return 204'; "
  "no access log for throughput")
p("          cluster: fsync off, shared_buffers 256MB, autovacuum off; each timed phase starts from the same "
  "rows, VACUUM ANALYZEd and CHECKPOINTed")
enq = get("enqueue")[0][1]
p(f"          enqueue: {fmt(N)} events in 10 transactions, endpoint disabled: {float(enq['secs']):.1f} s "
  f"({fmt(N / float(enq['secs']))} events/s)")
p("")

p(f"throughput: {fmt(N)} deliveries per round; worker and floor alternated, {len(get('w'))} round(s), medians")
p("    worker: from the commit enabling the endpoint to the last sent_at; the worker drains over HTTP")
p(f"    floor:  test/bench/delivery/floor.sql: the worker's own claim and record SQL, no HTTP, claims of "
  f"{claim_batch} and records of {record_batch} (the worker's maxima here), one transaction each")
wr, fr = [], []
for (r, w), (_, f) in zip(get("w"), get("f")):
    rate, s = round_line("w", r, w)
    wr.append(rate)
    p("    " + s)
    rate, s = round_line("f", r, f)
    fr.append(rate)
    p("    " + s)
for r, w in get("wdiag"):
    rate, s = round_line("wdiag", r, w)
    p("    " + s + "  (perf + 5 ms activity sampling running; not in the medians)")
wm, fm = statistics.median(wr), statistics.median(fr)
tput_line = (f"throughput: worker {fmt(wm)} deliveries/s | SQL floor {fmt(fm)}/s | worker/floor {wm / fm:.2f} | "
             f"target >= {fmt(TARGET_TPUT)}/s [{'MET' if wm >= TARGET_TPUT else 'NOT MET'}]")
p("    " + tput_line)
wc, wcc, fc = (statistics.median(cpu_cost[k]) for k in ("w", "wc", "f"))
p(f"    CPU cost per delivery (medians; less sensitive to other load than the rates): worker process {wc:.0f} us "
  f"-> at most {fmt(1e6 / wc)}/s with a whole core to itself; whole cluster {wcc:.0f} us with the worker, "
  f"{fc:.0f} us for the floor (floor/worker {fc / wcc:.2f})")
p("    record tx = distinct sent_at (now() of each recording transaction); worker claim tx = transaction ids "
  "used - record tx")
p("")

# latency
sent_at = {}
started = {}
recorded = {}
for line in open(os.path.join(d, "lat_events.txt")):
    f = line.split()
    if len(f) >= 2:
        sent_at[f[0]] = float(f[1])
    if len(f) == 4:
        started[f[0]] = float(f[2])
        recorded[f[0]] = float(f[3])
arrivals = {}
dups = unknown = 0
for line in open(os.path.join(d, "lat_sink.txt")):
    f = line.split()
    if len(f) != 2:
        continue
    t, wid = float(f[0]), f[1]
    if wid not in sent_at:
        unknown += 1
    elif wid in arrivals:
        dups += 1
    else:
        arrivals[wid] = t
lat = sorted((arrivals[k] - sent_at[k]) * 1000 for k in arrivals)
pickup = sorted((started[k] - sent_at[k]) * 1000 for k in arrivals if k in started)
wire = sorted((arrivals[k] - started[k]) * 1000 for k in arrivals if k in started)
record = sorted((recorded[k] - arrivals[k]) * 1000 for k in arrivals if k in recorded)


def pct(q, xs=None):
    xs = lat if xs is None else xs
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, -(-len(xs) * q // 100) - 1))     # nearest rank
    return xs[int(k)]


pg = open(os.path.join(d, "pgbench.log")).read()


def grab(prefix):
    i = pg.find(prefix)
    if i < 0:
        return "?"
    return pg[i + len(prefix):].split()[0]


lk = get("lat")[0][1]
lc = cpu(lk, 0)
p(f"latency: {lat_rate} events/s offered for {lat_seconds} s (pgbench -n -R {lat_rate} -T {lat_seconds} -c 4 -j 2, "
  "one enqueue_event per transaction)")
p("    commit -> received = nginx $msec of the request (ms resolution, truncated: up to 1 ms low, hence")
p("    small negative values) - the event's clock_timestamp(),")
p("    taken in the enqueueing transaction just before its commit; joined on webhook-id = event id")
p(f"    pgbench: {grab('number of transactions actually processed: ')} transactions, tps "
  f"{float(grab('tps = ')):.0f}, latency avg {grab('latency average = ')} ms, "
  f"schedule lag avg {grab('rate limit schedule lag: avg ')} ms; "
  f"worker CPU {lc['worker_s'] / lc['window'] * 100:.0f}% of a core, machine {lc['busy']:.2f} CPUs busy "
  f"(other processes {lc['other']:.2f})")
missing = len(sent_at) - len(arrivals)
p(f"    {len(sent_at)} events enqueued, {len(arrivals)} received"
  + (f", {missing} NOT received" if missing else ", none missing")
  + (f", {dups} duplicate requests" if dups else "")
  + (f", {unknown} requests with an unknown webhook-id" if unknown else ""))
if lat:
    p(f"    p50 {pct(50):.1f} | p90 {pct(90):.1f} | p99 {pct(99):.1f} | p99.9 {pct(99.9):.1f} | "
      f"max {lat[-1]:.1f} | min {lat[0]:.1f} | mean {statistics.mean(lat):.1f} ms; "
      f"{sum(x >= TARGET_P99_MS for x in lat)} over {TARGET_P99_MS} ms")
if pickup:
    p(f"    split: commit -> worker starts the request (attempt started_at): p50 {pct(50, pickup):.1f} | "
      f"p90 {pct(90, pickup):.1f} | p99 {pct(99, pickup):.1f} | max {pickup[-1]:.1f} ms")
    p(f"           request start -> arrival at nginx:                   p50 {pct(50, wire):.1f} | "
      f"p90 {pct(90, wire):.1f} | p99 {pct(99, wire):.1f} | max {wire[-1]:.1f} ms")
    p(f"           arrival -> outcome recorded (sent_at, tx start):     p50 {pct(50, record):.1f} | "
      f"p90 {pct(90, record):.1f} | p99 {pct(99, record):.1f} | max {record[-1]:.1f} ms")
    lclaims = int(lk["xids"]) - len(sent_at) - int(lk["recs"])
    p(f"           worker transactions: {lclaims} claims (avg {len(sent_at) / max(lclaims, 1):.1f} events), "
      f"{lk['recs']} records (avg {len(sent_at) / max(int(lk['recs']), 1):.1f})")
met = bool(lat) and pct(99) < TARGET_P99_MS and not missing
lat_line = (f"latency: p50 {pct(50):.1f} ms | p90 {pct(90):.1f} ms | p99 {pct(99):.1f} ms | max "
            f"{(lat[-1] if lat else float('nan')):.1f} ms | {len(arrivals)}/{len(sent_at)} received | "
            f"target p99 < {TARGET_P99_MS} ms [{'MET' if met else 'NOT MET'}]")
p("    " + lat_line)
p("")

# memory
rss = get("rss")
p("memory: the delivery worker after N deliveries: RSS (kB; RssAnon private, RssShmem = shared buffers "
  "touched) and its memory contexts")
p("    after                 sent     VmRSS   RssAnon  RssShmem   contexts kB")
for label, kv in rss:
    p(f"    {label:18s} {int(kv['sent']):8,d}  {int(kv['vmrss']):8d}  {int(kv['anon']):8d}  {int(kv['shmem']):8d}"
      f"  {int(kv['ctx']) / 1024:12.1f}")
first = rss[0][1]
second = next((kv for lb, kv in rss if lb == "after-round-1"), rss[-1][1])
last = rss[-1][1]
d_vm = int(second["vmrss"]) - int(first["vmrss"])
d_shm = int(second["shmem"]) - int(first["shmem"])
d_anon = int(second["anon"]) - int(first["anon"])
d_anon_late = int(last["anon"]) - int(second["anon"])
d_ctx = (int(second["ctx"]) - int(first["ctx"])) / 1024
d_ctx_late = (int(last["ctx"]) - int(second["ctx"])) / 1024
n1, n2, n3 = int(first["sent"]), int(second["sent"]), int(last["sent"])
# flat: palloc'd memory does not grow, and private memory does not grow with
# deliveries once warm (from after the first 100,000 to the end of the run)
flat = abs(d_ctx) <= 256 and abs(d_ctx_late) <= 256 and d_anon_late <= FLAT_KB
p(f"    {n1:,d} -> {n2:,d} deliveries: VmRSS {d_vm:+d} kB, of which shared buffers mapped {d_shm:+d} kB "
  f"(bounded by shared_buffers) and private RssAnon {d_anon:+d} kB; memory contexts {d_ctx:+.1f} kB")
p(f"    {n2:,d} -> {n3:,d} deliveries: private RssAnon {d_anon_late:+d} kB; memory contexts {d_ctx_late:+.1f} kB")
mem_line = (f"memory: worker VmRSS {first['vmrss']} kB after {n1:,d} -> {second['vmrss']} kB after {n2:,d} "
            f"({d_vm:+d} kB: shared buffers {d_shm:+d}, private {d_anon:+d}); private {d_anon_late:+d} kB "
            f"more by {n3:,d}; memory contexts {d_ctx:+.0f} / {d_ctx_late:+.0f} kB | target flat "
            f"(contexts flat, private growth <= {FLAT_KB} kB after round 1) [{'MET' if flat else 'NOT MET'}]")
p("    " + mem_line)
p("")

act = []
for line in open(os.path.join(d, "activity.txt")):
    f = line.rstrip("\n").split(" ", 2)
    if len(f) == 3:
        act.append((int(f[1]), f[2]))
if act:
    tot = sum(n for n, _ in act)
    p(f"where the worker's time goes (diagnostic round: its pg_stat_activity sampled every 5 ms, {tot} samples;")
    p("  'idle | <last activity>' = outside any transaction after that step: building/signing/starting requests")
    p("  after a claim, curl clean-up after a record; 'requests in flight' = in curl_multi_perform/poll)")
    diag = get("wdiag")
    dsecs = (num(diag[0][1], "end") - num(diag[0][1], "start")) if diag else 0
    for n, k in sorted(act, reverse=True):
        if n / tot >= 0.005:
            p(f"    {n / tot * 100:5.1f}%  {k:62s} ~{n / tot * dsecs / N * 1e6:4.0f} us/delivery")
    fl = [kv for _, kv in get("f")]
    if fl:
        tc = statistics.median(float(kv["tclaim"]) / N * 1e6 for kv in fl)
        tr = statistics.median(float(kv["trecord"]) / N * 1e6 for kv in fl)
        p(f"    the floor, for comparison (median): {tc:.0f} us/delivery in claim transactions, "
          f"{tr:.0f} us/delivery in record transactions")
    p("")
top = open(os.path.join(d, "perf-top.txt")).read().rstrip()
dso = open(os.path.join(d, "perf-dso.txt")).read().rstrip()
if top:
    p("where the worker's CPU goes (diagnostic round: perf record -F 999 -p <worker>; self time)")
    p("  by object:")
    for line in dso.splitlines():
        p("    " + line.strip())
    p("  by symbol:")
    for line in top.splitlines():
        p("    " + line.strip())
    p("")

p("summary")
p("    " + tput_line)
p("    " + lat_line)
p("    " + mem_line)
p(f"    run took {elapsed} s")
print("\n".join(out))
