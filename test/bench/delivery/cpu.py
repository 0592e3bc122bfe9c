"""CPU snapshot for test/bench/delivery.sh, in clock ticks:
"busy total ours worker nginx": the machine's busy and total jiffies (all
CPUs, /proc/stat), the benchmark's own processes (the cluster's postmaster
with its live and reaped children, nginx, the script with its reaped
children), the delivery worker, nginx."""
import os
import sys

pm, ngx, me, worker = (int(x) for x in sys.argv[1:5])


def stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    # ppid, utime, stime, cutime, cstime
    return int(f[1]), int(f[11]), int(f[12]), int(f[13]), int(f[14])


def own(st):
    return st[1] + st[2] if st else 0


def total(st):
    return sum(st[1:5]) if st else 0


cpu = open("/proc/stat").readline().split()[1:]
v = [int(x) for x in cpu]
busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
tot = busy + v[3] + v[4]
ours = total(stat(pm)) + total(stat(me)) + total(stat(ngx))
for d in os.listdir("/proc"):
    if d.isdigit():
        st = stat(int(d))
        if st and st[0] in (pm, me) and int(d) != ngx:
            ours += total(st)
print(busy, tot, ours, own(stat(worker)), own(stat(ngx)))
