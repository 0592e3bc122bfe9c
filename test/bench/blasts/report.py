"""The report of test/bench/blasts.sh, from its raw measurements."""
import statistics
import sys

(raw, env, n, rounds, secs, size, reads, batches, batch, elapsed) = sys.argv[1:11]
n, rounds, secs, size, reads, batches, batch, elapsed = (
    int(x) for x in (n, rounds, secs, size, reads, batches, batch, elapsed))

FUNNEL_MAX_MS = 5
FUNNEL_MIN_RATIO = 100
TRIGGER_MIN_SHARE = 0.70

setup, rows = [], []
for line in open(raw):
    f = line.rstrip("\n").split(" ")
    if f[0] == "setup":
        setup.append((float(f[1]), " ".join(f[2:])))
        continue
    kv = {}
    for x in f[1:]:
        k, _, v = x.partition("=")
        kv[k] = v
    rows.append((f[0], kv))


def get(_kind, **match):
    return [kv for k, kv in rows if k == _kind and all(kv.get(a) == b for a, b in match.items())]


def med(xs):
    return statistics.median(xs)


def verdict(ok):
    return "MET" if ok else "NOT MET"


def exact(kv):
    return kv["diff"] == "0" and kv["funnel"] == kv["scan"]


def check_text(kv):
    if exact(kv):
        return f"exact (the 13 counters equal a scan; funnel = scan = {kv['funnel']})"
    return f"WRONG: {kv['diff']} of 13 counters differ from a scan; funnel {kv['funnel']} vs scan {kv['scan']}"


out = []
p = out.append
p(f"blasts benchmark: funnel counters and status ingestion on one blast of {n:,d} recipients")
p(env)
loads = [float(kv["value"]) for kv in get("load")]
p(f"1-min load average before the measurements: {min(loads):.1f} to {max(loads):.1f} (the machine may be shared; "
  "(b) keeps both CPUs busy, (a) and (c) one)")
p("")

p("setup")
for s, name in setup:
    p(f"    {s:7.1f} s  {name}")
sz = get("sizes")[0]
p(f"    blast_recipients {sz['recipients_total']} with indexes (heap {sz['recipients_heap']}), "
  f"sends {sz['sends_total']}")
sent = get("sent")
if sent:
    p("    marking the recipients sent, one UPDATE statement (and its commit) each:")
    for kv in sent:
        rows_n, secs_n = int(kv["n"]), float(kv["secs"])
        p(f"        {rows_n:9,d} rows, funnel row trigger {kv['trigger']:3s}: {secs_n:7.2f} s  {float(kv['us']):7.1f} us/row")
    on = sorted((int(kv["n"]), float(kv["us"])) for kv in sent if kv["trigger"] == "on")
    off = [float(kv["us"]) for kv in sent if kv["trigger"] == "off"]
    if len(on) >= 2 and off:
        (n0, u0), (n1, u1) = on[0], on[-1]
        p(f"        with the trigger: {u0:.1f} us/row at {n0:,d} rows, {u1:.1f} us/row at {n1:,d} rows "
          f"({u1 / u0:.1f}x: {'flat, linear' if u1 <= 1.5 * u0 else 'GROWS with the statement: quadratic'}); "
          f"without: {off[0]:.1f} us/row")
p(f"    counters after marking sent: {check_text(get('check', when='sent')[0])}")
p(f"    counters after setup: {check_text(get('check', when='setup')[0])}")
p("")

# (a)
fr = [float(kv["ms"]) for kv in get("read", kind="F")]
sr = [float(kv["ms"]) for kv in get("read", kind="S")]
f_rows = {kv["row"] for kv in get("read", kind="F")}
s_rows = {kv["row"] for kv in get("read", kind="S")}
fm, sm = med(fr), med(sr)
ratio_a = sm / fm
p(f"(a) blast_funnel for the blast vs the scan of its recipients, both warm, {reads} alternated pairs "
  "(psql \\timing: round trip, planning included)")
p(f"    funnel  median {fm:8.3f} ms  (min {min(fr):.3f}, max {max(fr):.3f})")
p(f"    scan    median {sm:8.3f} ms  (min {min(sr):.3f}, max {max(sr):.3f})")
for line in open(raw):
    if line.startswith("scanplan "):
        steps = [x.replace("_", " ").strip() for x in line.split(" ", 1)[1].strip().split(";") if x.strip()]
        p("    scan plan: " + " > ".join(steps))
same = len(f_rows) == 1 and f_rows == s_rows
p(f"    rows: funnel {', '.join(sorted(f_rows))}; scan {', '.join(sorted(s_rows))} "
  f"({'equal' if same else 'DIFFERENT'}; total,sent,delivered,read,replied,closed,failed)")
p(f"    scan / funnel = {ratio_a:,.0f}x  [target funnel < {FUNNEL_MAX_MS} ms: {verdict(fm < FUNNEL_MAX_MS)}; "
  f"target >= {FUNNEL_MIN_RATIO}x: {verdict(ratio_a >= FUNNEL_MIN_RATIO)}]")
p("")

# (b)
b = get("b")
p(f"(b) record_message_status(id, 'delivered' or 'read', now(), 'webhook'), pgbench -n -M prepared -c 4 -j 2 -T {secs}, "
  f"{rounds} rounds, variants alternated (ABBA); each run {size:,d} sent recipients of its own, moved -> delivered, then -> read")
names = {"trig": "with funnel triggers   ", "notrig": "without (trigger off)  "}
for kv in b:
    ntx, changed = int(kv["ntx"]), int(kv["changed"])
    real = "each a real change" if ntx == changed else f"ONLY {changed:,d} REAL CHANGES"
    p(f"    round {kv['round']} {names[kv['variant']]} {float(kv['tps']):8.0f} tps  latency {float(kv['lat']):6.3f} ms  "
      f"{ntx:7,d} tx ({kv['fail']} failed; {real}; {int(kv['delivered']):,d} delivered, {int(kv['read']):,d} read)  "
      f"server CPU {float(kv['cpu']) / max(ntx, 1) * 1e6:4.0f} us/tx  "
      f"counters after: {'exact' if exact(kv) else 'WRONG: ' + kv['diff'] + ' differ'}")
tps = {v: med([float(kv["tps"]) for kv in b if kv["variant"] == v]) for v in ("trig", "notrig")}
cpu = {v: med([float(kv["cpu"]) / int(kv["ntx"]) * 1e6 for kv in b if kv["variant"] == v]) for v in ("trig", "notrig")}
share = tps["trig"] / tps["notrig"]
all_real = all(int(kv["ntx"]) == int(kv["changed"]) for kv in b)
all_exact = all(exact(kv) for kv in b)
p(f"    median: with triggers {tps['trig']:,.0f} updates/s, without {tps['notrig']:,.0f} updates/s: "
  f"{share * 100:.0f}%  [target >= {TRIGGER_MIN_SHARE * 100:.0f}%: {verdict(share >= TRIGGER_MIN_SHARE)}]")
p(f"    server CPU per update (median): with triggers {cpu['trig']:.0f} us, without {cpu['notrig']:.0f} us "
  f"(+{cpu['trig'] - cpu['notrig']:.0f} us for the counters)")
p("    the runs without the trigger leave the counters behind by what they changed; after each, that change "
  "(a scan of the run's range before and after) is added to the counters, nothing else: "
  "every check after a run with the trigger tests the trigger")
p("")

# (c)
cprobe = get("cprobe")
full = bool(cprobe) and cprobe[0]["result"] == "applied"
c = [kv for kv in get("c") if kv["k"] != "0"]		# batch 0: warm-up
ing = [kv for kv in c if kv["kind"] == "I"]
cal = [kv for kv in c if kv["kind"] == "C"]
ing_rate = [int(kv["n"]) / float(kv["ms"]) * 1000 for kv in ing]
cal_rate = [int(kv["n"]) / float(kv["ms"]) * 1000 for kv in cal]
p(f"(c) {batches} WhatsApp Cloud API callbacks of {batch:,d} statuses (signed, X-Hub-Signature-256) vs the same "
  f"{batch:,d} statuses as record_message_status calls in one transaction, alternated after a warm-up pair, "
  "each batch on its own recipients, every status sent -> delivered")
if full:
    p("    status items as WhatsApp sends them: id, status, timestamp, recipient_id, conversation, pricing")
else:
    kv = cprobe[0] if cprobe else {}
    p("    BUG: a callback with ONE status item as WhatsApp sends it (id, status, timestamp, recipient_id, "
      "conversation, pricing) failed: " + kv.get("psql", "?").replace("_", " ")
      + "; server log: " + kv.get("server", "none").replace("_", " "))
    p("    so the batches carry minimal status items (id, status, timestamp) and the figures below are for those")
for x, y in zip(ing, cal):
    p(f"    batch {x['k']}: ingest_status_webhook {float(x['ms']):7.1f} ms ({x['applied']}/{x['n']} applied)  |  "
      f"{y['n']} calls {float(y['ms']):7.1f} ms ({y['applied']}/{y['n']} applied)")
ir, cr = med(ing_rate), med(cal_rate)
c_real = all(kv["applied"] == kv["n"] == str(batch) for kv in c)
p(f"    median: ingest {ir:,.0f} statuses/s, calls {cr:,.0f} statuses/s: ingest / calls = {ir / cr:.2f}"
  f"{'' if c_real else '  (NOT every status applied: see the batches)'}")
hwm = [int(kv["kb"]) for kv in get("chwm")]
if len(hwm) >= 3:
    p(f"    backend peak memory (VmHWM): {hwm[0] / 1024:.0f} MB at the start, {hwm[1] / 1024:.0f} MB after {batch:,d} calls "
      f"in one transaction, {hwm[2] / 1024:.0f} MB after one {batch:,d}-status callback "
      f"(+{(hwm[2] - hwm[1]) / batch:.1f} kB per status held until the callback ends)")
cmeta = get("cmeta")
meta_ok = bool(cmeta) and not cmeta[0]["value"].startswith("ERROR")
if cmeta:
    p("    status_history rows written by the callbacks, metadata (the status item) read back: "
      + ("ok, " + cmeta[0]["value"].replace("/", " rows, ") + " characters" if meta_ok
         else "FAILS: " + cmeta[0]["value"].replace("_", " ")))
final = get("check", when="final")[0]
p(f"    counters at the end, triggers enabled: {check_text(final)}")
wc = get("worker")
if wc:
    p(f"    the delivery worker used {float(wc[0]['cpu']):.1f} s of CPU in the whole run (it has nothing due)")
p("")

p("summary")
p(f"    recipients {n:,d}; run took {elapsed} s; setup {sum(s for s, _ in setup) + sum(float(kv['secs']) for kv in sent):.0f} s")
p(f"    (a) funnel read     {fm:9.3f} ms   | scan {sm:9.1f} ms            | {ratio_a:,.0f}x faster"
  f"   [< {FUNNEL_MAX_MS} ms {verdict(fm < FUNNEL_MAX_MS)}; >= {FUNNEL_MIN_RATIO}x {verdict(ratio_a >= FUNNEL_MIN_RATIO)}]")
p(f"    (b) status updates  {tps['trig']:9,.0f} /s   | without triggers {tps['notrig']:9,.0f} /s | {share * 100:.0f}%"
  f"   [>= {TRIGGER_MIN_SHARE * 100:.0f}% {verdict(share >= TRIGGER_MIN_SHARE)}]"
  f"{'' if all_real else '  (some transactions were no-ops)'}")
p(f"    (c) WhatsApp ingest {ir:9,.0f} statuses/s | {batch:,d} calls in one txn {cr:9,.0f} /s | {ir / cr:.2f}x"
  + ("" if full else "   (minimal items: full WhatsApp status items CRASH the server, see (c))"))
if cmeta and not meta_ok:
    p("        status_history metadata written by ingest_status_webhook cannot be read back: "
      + cmeta[0]["value"].replace("_", " "))
p(f"    counters exact: after marking sent {'yes' if exact(get('check', when='sent')[0]) else 'NO'}, "
  f"after setup {'yes' if exact(get('check', when='setup')[0]) else 'NO'}, "
  f"after every (b) run {'yes' if all_exact else 'NO'}, at the end {'yes' if exact(final) else 'NO'}")
if sent and len(on) >= 2 and off:
    p(f"    marking sent in one UPDATE with the row trigger: {u0:.1f} us/row at {n0:,d} rows, {u1:.1f} us/row at "
      f"{n1:,d} rows (without the trigger {off[0]:.1f} us/row)")
print("\n".join(out))
