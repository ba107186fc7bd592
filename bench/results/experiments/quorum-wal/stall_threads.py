#!/usr/bin/env python3
"""What threads.py saw in a window, in 100 ms bins: for each program (each thread of the
dispatcher apart), the CPU it used and its time waiting to run (ms of the bin, summed over its
threads), and the kernel functions its sleeping threads were seen in (D-state ones with their
stack), other than the idle waits (epoll, futex, nanosleep, sockets' reads).

Usage: stall_threads.py <threads.txt> <from HH:MM:SS.f> <to HH:MM:SS.f>   (UTC)
"""
import collections
import sys
from datetime import datetime, timezone

IDLE = {"do_epoll_wait", "ep_poll", "futex_wait_queue", "futex_wait", "hrtimer_nanosleep",
        "do_nanosleep", "do_select", "do_sys_poll", "unix_stream_read_generic", "sk_wait_data",
        "wait_woken", "0", "-", "__skb_wait_for_more_packets", "do_sigtimedwait", "pipe_read",
        "syslog_print", "worker_thread"}
BIN = 100_000_000


def hms(ns):
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%H:%M:%S.%f")[:10]


def parse(t, day):
    h, m, s = t.split(":")
    return int((day + int(h) * 3600 + int(m) * 60 + float(s)) * 1e9)


def main(path, start, end):
    rows = [line.split() for line in open(path)]
    day = int(rows[0][0]) // 10**9 // 86400 * 86400
    lo, hi = parse(start, day), parse(end, day)
    last = {}  # (pid, tid) -> (cpu, wait) at the previous sample
    bins = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0, collections.Counter()]))
    for row in rows:
        if row[1] == "machine":
            continue
        now, pid, tid, program, name, state, where, cpu, wait = row[:9]
        now, cpu, wait = int(now), int(cpu), int(wait)
        before = last.get((pid, tid))
        last[(pid, tid)] = (cpu, wait)
        if not lo <= now < hi or before is None:
            continue
        key = program if program != "fp-dispatcher" else f"dispatcher:{name}"
        cell = bins[now // BIN][key]
        cell[0] += cpu - before[0]
        cell[1] += wait - before[1]
        if where not in IDLE and state != "R":
            cell[2][f"{state}:{where}"] += 1
    for b in sorted(bins):
        print(hms(b * BIN))
        for key, (cpu, wait, seen) in sorted(bins[b].items()):
            shown = ", ".join(f"{w} x{n}" for w, n in seen.most_common(4))
            print(f"    {key:28s} cpu {cpu / 1e6:6.1f} ms  waiting to run {wait / 1e6:6.1f} ms  {shown}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
