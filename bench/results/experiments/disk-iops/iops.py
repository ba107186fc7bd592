#!/usr/bin/env python3
"""What the disk did in each phase of an fp-bench run, from diskstats.py's file: writes
completed a second, MiB written a second, the mean write's size, its mean time in the device
queue (await), the mean number of requests in flight, the share of time the device was busy, and
cache flushes a second with their mean time; then, for each phase, its worst second by each of
busy share, write await and flush time. With --seconds, the same second by second.

Usage: iops.py <run dir> [--seconds]   (the run's fp-bench JSON and diskstats.txt)
"""
import glob
import json
import os
import sys
from datetime import datetime, timezone

SECOND = 1_000_000_000
# Field positions after the timestamp (0-based), as Documentation/admin-guide/iostats.rst lists them.
WRITES, SECTORS_WRITTEN, MS_WRITING, IO_MS, WEIGHTED_MS, FLUSHES, MS_FLUSHING = 4, 6, 7, 9, 10, 15, 16


def samples(run):
    return [[int(v) for v in line.split()] for line in open(os.path.join(run, "diskstats.txt"))]


def between(rows, start, end):
    """Counters' change from the last sample at or before start to the first at or after end."""
    a = max((r for r in rows if r[0] <= start), key=lambda r: r[0], default=rows[0])
    b = min((r for r in rows if r[0] >= end), key=lambda r: r[0], default=rows[-1])
    return a, b


def line(label, a, b):
    seconds = (b[0] - a[0]) / SECOND
    d = [y - x for x, y in zip(a[1:], b[1:])]
    writes, sectors = d[WRITES], d[SECTORS_WRITTEN]
    flushes = d[FLUSHES]
    return (f"{label:44s} {seconds:6.1f} {writes / seconds:8.0f} {sectors * 512 / 2**20 / seconds:8.1f} "
            f"{(sectors * 512 / 1024 / writes) if writes else 0:8.1f} {(d[MS_WRITING] / writes) if writes else 0:8.2f} "
            f"{d[WEIGHTED_MS] / 1000 / seconds:7.2f} {100 * d[IO_MS] / 1000 / seconds:6.0f} "
            f"{flushes / seconds:8.0f} {(d[MS_FLUSHING] / flushes) if flushes else 0:8.2f}")


def busiest(rows, start, end):
    """The highest busy share (%), mean write await (ms) and mean flush time (ms) of any whole
    second between start and end."""
    top = [0.0, 0.0, 0.0]
    for second in range(start // SECOND + 1, end // SECOND):
        a, b = between(rows, second * SECOND, (second + 1) * SECOND)
        d = [y - x for x, y in zip(a[1:], b[1:])]
        seconds = (b[0] - a[0]) / SECOND
        top[0] = max(top[0], 100 * d[IO_MS] / 1000 / seconds)
        top[1] = max(top[1], d[MS_WRITING] / d[WRITES] if d[WRITES] else 0)
        top[2] = max(top[2], d[MS_FLUSHING] / d[FLUSHES] if d[FLUSHES] else 0)
    return top


HEADER = (f"{'phase':44s} {'s':>6s} {'writes/s':>8s} {'MiB/s':>8s} {'KiB/wr':>8s} {'await':>8s} "
          f"{'queue':>7s} {'busy%':>6s} {'flush/s':>8s} {'flush ms':>8s}")


def main(run, by_second):
    rows = samples(run)
    report = json.load(open(glob.glob(os.path.join(run, "*.json"))[0]))
    print(HEADER)
    worst = []
    for scenario in report["scenarios"]:
        start, end = scenario["window_unix_ns"]
        print(line(scenario["name"][:44], *between(rows, start, end)))
        worst.append((scenario["name"][:44], *busiest(rows, start, end)))
    print(line("whole run", rows[0], rows[-1]))
    print()
    for name, busy, await_ms, flush_ms in worst:
        print(f"{name:44s} in its worst second: busy {busy:.0f} %, await {await_ms:.2f} ms, flush {flush_ms:.2f} ms")
    if by_second:
        print()
        print(HEADER.replace("phase ", "second (UTC)", 1))
        for second in range(rows[0][0] // SECOND + 1, rows[-1][0] // SECOND):
            label = datetime.fromtimestamp(second, timezone.utc).strftime("%H:%M:%S")
            print(line(label, *between(rows, second * SECOND, (second + 1) * SECOND)))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--seconds"):
        sys.exit(__doc__)
    main(sys.argv[1], len(sys.argv) == 3)
