#!/usr/bin/env python3
"""Context switches per item of work, by process and by thread name, over a window of a running
bench.

    bench/tools/context_switches.py <seconds> <items per second>

Reads every thread's voluntary and involuntary switches in /proc at the start and the end of the
window and divides the difference by the items (deliveries, submissions) the phase paces, e.g.
started one second into `submissions: paced at 800/s`: `context_switches.py 5 800`. Threads are
told apart by id and named as they are at the end (a kernel worker's name follows its work); one
that starts inside the window counts from zero, one that ends inside it is left out. Prints the
total, the twelve processes and the twenty thread names that switched most (threads of the same
name in a process, such as an actix server's workers, are added up)."""
import collections
import os
import sys
import time


def read(path):
    with open(path) as file:
        return file.read()


def switches():
    """(pid, tid) -> (process name, thread name, switches so far)."""
    threads = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            process = read(f"/proc/{pid}/comm").strip()
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                status = read(f"/proc/{pid}/task/{tid}/status")
                thread = read(f"/proc/{pid}/task/{tid}/comm").strip()
            except OSError:
                # The thread ended while being read.
                continue
            total = sum(
                int(line.split()[1])
                for line in status.splitlines()
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            )
            threads[(pid, tid)] = (process, thread, total)
    return threads


def main(seconds, rate):
    before = switches()
    time.sleep(seconds)
    after = switches()
    items = seconds * rate
    per_process = collections.Counter()
    per_thread_name = collections.Counter()
    for key, (process, thread, total) in after.items():
        started = before[key][2] if key in before else 0
        per_item = (total - started) / items
        per_process[process] += per_item
        per_thread_name[(process, thread)] += per_item
    print(f"{'all':20s} {sum(per_process.values()):6.2f} switches per item")
    for process, value in per_process.most_common(12):
        print(f"{process:20s} {value:6.2f} switches per item")
    print("--- threads, by name")
    for (process, thread), value in per_thread_name.most_common(20):
        print(f"{process:16s} {thread:22s} {value:6.2f}")


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]))
