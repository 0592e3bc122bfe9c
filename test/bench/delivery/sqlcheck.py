"""Does src/outbox/delivery.c still run the SQL that floor.sql copies?

Prints one line: "ok", or "changed: <plans>" naming the saved plans whose
source text (whitespace-normalized) differs from when floor.sql was written.
With --print, prints the current hashes (to refresh EXPECTED after updating
floor.sql)."""
import hashlib
import re
import sys

# `python3 sqlcheck.py src/outbox/delivery.c --print` after issue 10 (schema-
# qualified statements, one claim statement for many targets)
EXPECTED = {
    "claim_event_plan": "22acabfdebc4",
    "record_delivery_plan": "2fecdb38a6bc",
    "record_event_status_plan": "5576af57e0a6",
    "record_attempt_plan": "b37a8bb2c76e",
    "record_health_plan": "3b366428f348",
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
