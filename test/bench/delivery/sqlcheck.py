"""Does src/outbox/delivery.c still run the SQL that floor.sql copies?

Prints one line: "ok", or "changed: <plans>" naming the saved plans whose
source text (whitespace-normalized) differs from when floor.sql was written.
With --print, prints the current hashes (to refresh EXPECTED after updating
floor.sql)."""
import hashlib
import re
import sys

# `python3 sqlcheck.py src/outbox/delivery.c --print` at commit 8a3b692
EXPECTED = {
    "claim_event_plan": "a694703588d8",
    "record_delivery_plan": "164fe0f62028",
    "record_event_status_plan": "a44dc7aaf0b8",
    "record_attempt_plan": "621bbe281506",
    "record_health_plan": "e978a6c69aa9",
}

src = open(sys.argv[1]).read()


def plan_text(name):
    m = re.search(re.escape(name) + r"\s*=\s*re_prepare_saved\w*\((.*?)\);", src, re.S)
    if not m:
        return None
    return " ".join(m.group(1).split())


cur = {}
for name in EXPECTED:
    t = plan_text(name)
    cur[name] = hashlib.md5(t.encode()).hexdigest()[:12] if t else "missing"
if "--print" in sys.argv:
    for k, v in cur.items():
        print(f'    "{k}": "{v}",')
    sys.exit(0)
changed = [k for k in EXPECTED if EXPECTED[k] != cur[k]]
print("ok" if not changed else "changed: " + ", ".join(changed))
