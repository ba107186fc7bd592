#!/usr/bin/env python3
"""Where in a phase its slow deliveries fall, from the CSVs of `fp-bench --latencies-dir`.

Usage: latency_timeline.py <phase.csv or directory of them> [min_worst_ms]

For each phase: its p50/p99 (nearest rank, as fp-bench computes them), how many 100 ms bins hold
its slowest 1 % (every delivery at or above the p99), and those deliveries grouped into stalls
(slow ones whose events were made less than 200 ms apart), each with its UTC window (the first
slow event's time to the worst one's arrival), to set beside other logs. Stalls whose worst delivery
took less than `min_worst_ms` (default 0) are left out. A tail made of a few stalls shows as a few
full bins; a tail spread over the phase as many bins holding one or two each.
"""
import csv
import datetime
import math
import os
import sys

BIN_NS = 100_000_000
STALL_GAP_NS = 200_000_000


def utc(ns):
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def nearest_rank(sorted_values, share):
    return sorted_values[min(len(sorted_values), max(1, math.ceil(share * len(sorted_values)))) - 1]


def arrivals(path):
    """A CSV's (occurred_ns, latency_ns) rows, in the order the events were made."""
    with open(path, newline="") as handle:
        return [(int(r["occurred_ns"]), int(r["latency_ns"])) for r in csv.DictReader(handle)]


def slowest(rows):
    """The p50, the p99 and the deliveries at or above the p99 (none of a phase with no arrivals)."""
    if not rows:
        return 0, 0, []
    latencies = sorted(latency for _, latency in rows)
    p50, p99 = nearest_rank(latencies, 0.50), nearest_rank(latencies, 0.99)
    return p50, p99, [(occurred, latency) for occurred, latency in rows if latency >= p99]


def stalls(rows):
    """The slowest 1 % grouped into stalls: slow deliveries whose events were made less than
    200 ms apart. Each has its first and last slow event's time, a count, its worst delivery as
    (latency, occurred), and its end: the latest arrival among them."""
    found = []
    for occurred, latency in slowest(rows)[2]:
        if found and occurred - found[-1]["last"] < STALL_GAP_NS:
            stall = found[-1]
            stall["last"] = occurred
            stall["count"] += 1
            stall["end"] = max(stall["end"], occurred + latency)
            if latency > stall["worst"][0]:
                stall["worst"] = (latency, occurred)
        else:
            found.append({"first": occurred, "last": occurred, "count": 1, "worst": (latency, occurred),
                          "end": occurred + latency})
    return found


def report(path, min_worst_ms):
    rows = arrivals(path)
    if not rows:
        print(f"{path}: no arrivals")
        return
    p50, p99, slow = slowest(rows)
    start = rows[0][0]
    span_ns = rows[-1][0] - start
    bins = {(occurred - start) // BIN_NS for occurred, _ in slow}
    print(f"{os.path.basename(path)}: {len(rows)} deliveries, {utc(start)} to {utc(rows[-1][0])}, "
          f"p50 {p50 / 1e6:.1f} ms, p99 {p99 / 1e6:.1f} ms; the slowest 1 % ({len(slow)}) in "
          f"{len(bins)} of {span_ns // BIN_NS + 1} bins of 100 ms")
    for stall in stalls(rows):
        latency, occurred = stall["worst"]
        if latency / 1e6 >= min_worst_ms:
            print(f"    stall {utc(stall['first'])} - {utc(occurred + latency)}: {stall['count']} of the "
                  f"slowest, worst {latency / 1e6:.0f} ms")


def csv_paths(target):
    """The CSV `target` names, or those in the directory it names."""
    if os.path.isdir(target):
        return sorted(os.path.join(target, name) for name in os.listdir(target) if name.endswith(".csv"))
    return [target]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    target = sys.argv[1]
    min_worst_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    for path in csv_paths(target):
        report(path, min_worst_ms)


if __name__ == "__main__":
    main()
