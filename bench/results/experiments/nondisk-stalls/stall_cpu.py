#!/usr/bin/env python3
"""For each stall of 40 ms or more in a paced phase: whether the disk was slow in it (its longest
fsync, from `sync_trace.py report`), and the CPUs each kind of process used in it against its
phase's mean (from `cpu_sampler.py`).

Usage: stall_cpu.py <syncs-report.txt> <cpu_sampler output> <dir of --latencies-dir>
"""
import bisect
import datetime
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import latency_timeline  # noqa: E402

KINDS = ["pg backend", "pg autovacuum", "pg other", "rabbitmq", "api", "dispatcher", "log-ingest", "load", "receiver"]
# The sampler's first form (runs 4-7) counted PostgreSQL as one kind.
FIRST_FORM_KINDS = ["postgres", "rabbitmq", "api", "dispatcher", "log-ingest", "load", "receiver"]
STALL = re.compile(r"^(\S+)\.csv: stall (\S+) - (\S+), worst (\d+) ms: \d+ calls overlap it, the longest ([\d.]+) ms")


def usage(samples, times, start, end):
    """CPUs used (machine busy, then each kind) between two UTC ns, from the samples around them."""
    a = samples[max(0, bisect.bisect_left(times, start) - 1)]
    b = samples[min(len(samples) - 1, bisect.bisect_left(times, end))]
    seconds = (b[0] - a[0]) / 1e9
    total = (b[1] - a[1]) + (b[2] - a[2])
    busy = 2 * (b[1] - a[1]) / total if total else 0.0
    return [busy] + [(b[i] - a[i]) / 100 / seconds for i in range(3, len(a))]


def main(report, cpu, latencies):
    samples = [[int(value) for value in line.split()] for line in open(cpu)]
    times = [sample[0] for sample in samples]
    longest = {}
    for line in open(report):
        found = STALL.match(line)
        if found:
            longest[(found.group(1), found.group(2))] = float(found.group(5))
    kinds = FIRST_FORM_KINDS if len(samples[0]) - 3 == len(FIRST_FORM_KINDS) else KINDS
    print("phase / stall: worst ms, longest fsync ms | CPUs: machine " + " ".join(kinds))
    for path in latency_timeline.csv_paths(latencies):
        name = os.path.basename(path)[:-4]
        if "of-max-rate" not in name and "paced-at" not in name:
            continue
        rows = latency_timeline.arrivals(path)
        mean = usage(samples, times, rows[0][0], rows[-1][0] + rows[-1][1])
        print(f"{name} (whole phase): " + " ".join(f"{value:.2f}" for value in mean))
        for stall in latency_timeline.stalls(rows):
            latency, occurred = stall["worst"]
            if latency < 40e6:
                continue
            start, end = stall["first"], stall["end"]
            sync = longest.get((name, latency_timeline.utc(start)), float("nan"))
            used = usage(samples, times, start, end)
            print(f"    {latency_timeline.utc(start)}: {latency / 1e6:.0f}, {sync:.1f} | "
                  + " ".join(f"{value:.2f}" for value in used))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
