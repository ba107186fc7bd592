#!/usr/bin/env python3
"""Per run of a long paced phase: its p50/p99, and second by second (by the event's time) the
deliveries' p99 beside what the kernel wrote out in that second (from vmstat.txt's pgpgout),
for every second whose p99 was 30 ms or more or whose write-out was 100 MiB or more (only what
was written out during the phase counts, so its first and last seconds are partial); then how
many deliveries of 50 ms or more were made within a second of such a write-out, and how many
elsewhere.

Usage: steady.py <experiment dir>   (runs: <variant>-<number>, each with its JSON, vmstat.txt and
latencies/ of fp-bench --latencies-dir)
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../tools"))
from latency_timeline import arrivals, nearest_rank, utc  # noqa: E402

SECOND = 1_000_000_000


def main(root):
    for run in sorted(glob.glob(os.path.join(root, "*-[0-9]*"))):
        csvs = glob.glob(os.path.join(run, "latencies", "*paced*.csv"))
        if not csvs:
            continue
        report = json.load(open(glob.glob(os.path.join(run, "*.json"))[0]))
        paced = next(s for s in report["scenarios"] if s["target_rate_per_second"])
        start, end = paced["window_unix_ns"]
        samples = [[int(v) for v in line.split()] for line in open(os.path.join(run, "vmstat.txt"))]
        written_kib = {}
        for a, b in zip(samples, samples[1:]):
            if start <= b[0] <= end:
                written_kib[b[0] // SECOND] = written_kib.get(b[0] // SECOND, 0) + b[3] - a[3]
        written = {second: kib // 1024 for second, kib in written_kib.items()}
        rows = arrivals(csvs[0])
        by_second = {}
        for occurred, latency in rows:
            by_second.setdefault(occurred // SECOND, []).append(latency)
        print(f"{os.path.basename(run)}: {paced['name']}, p50 {paced['latency']['p50_ms']:.1f} ms, "
              f"p99 {paced['latency']['p99_ms']:.1f} ms, max {paced['latency']['max_ms']:.1f} ms")
        bursts = {s for s in range(start // SECOND, end // SECOND + 1) if written.get(s, 0) >= 100}
        for second in range(start // SECOND, end // SECOND + 1):
            latencies = sorted(by_second.get(second, []))
            p99 = nearest_rank(latencies, 0.99) / 1e6 if latencies else 0
            if p99 >= 30 or second in bursts:
                print(f"    {utc(second * SECOND)[:8]}  p99 {p99:7.1f} ms  written out {written.get(second, 0):4d} MiB")
        slow = [occurred for occurred, latency in rows if latency >= 50_000_000]
        near = sum(1 for occurred in slow if any(abs(occurred // SECOND - s) <= 1 for s in bursts))
        print(f"    deliveries of 50 ms or more: {len(slow)}, {near} of them made within a second of a "
              f"write-out of 100 MiB or more ({len(bursts)} such seconds)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
