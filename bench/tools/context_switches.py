#!/usr/bin/env python3
"""Context switches per item of work, by process and by thread, over a window of a running bench.

    bench/tools/context_switches.py <seconds> <items per second>

Reads every thread's voluntary and involuntary switches in /proc at the start and the end of the
window and divides the difference by the items (deliveries, submissions) the phase paces, e.g.
started one second into `submissions: paced at 800/s`: `context_switches.py 5 800`. A process
that starts or ends inside the window counts only its part of it."""
import collections
import os
import sys
import time


def switches():
    counts = collections.Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            process = open(f"/proc/{pid}/comm").read().strip()
            for tid in os.listdir(f"/proc/{pid}/task"):
                status = open(f"/proc/{pid}/task/{tid}/status").read()
                total = sum(
                    int(line.split()[1])
                    for line in status.splitlines()
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
                )
                thread = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                counts[(process, thread)] += total
        except OSError:
            # The thread ended while being read.
            continue
    return counts


def main(seconds, rate):
    before = switches()
    time.sleep(seconds)
    after = switches()
    items = seconds * rate
    per_thread = {key: (after[key] - before.get(key, 0)) / items for key in after}
    per_process = collections.Counter()
    for (process, _), value in per_thread.items():
        per_process[process] += value
    for process, value in per_process.most_common(12):
        print(f"{process:20s} {value:6.2f} switches per item")
    print("--- threads")
    for (process, thread), value in sorted(per_thread.items(), key=lambda kv: -kv[1])[:20]:
        print(f"{process:16s} {thread:22s} {value:6.2f}")


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]))
