#!/usr/bin/env python3
"""PostgreSQL's WAL per delivery in each phase, from walsample.sh's file: records, full-page
images and bytes (pg_stat_wal, differenced between the samples nearest each phase's ends; a
phase whose ends lie more than 3 s from any sample is reported as not covered).

Usage: walphases.py <wal.txt> <run dir>...
"""
import glob
import json
import os
import sys


SAMPLED_WITHIN_NS = 3_000_000_000


def nearest(samples, ns):
    return min(samples, key=lambda s: abs(s[0] - ns))


def main(path, runs):
    samples = [[int(v) for v in line.split()] for line in open(path) if len(line.split()) == 4]
    for run in runs:
        report = json.load(open(glob.glob(os.path.join(run, "*.json"))[0]))
        for phase in report["scenarios"]:
            start, end = phase["window_unix_ns"]
            a, b = nearest(samples, start), nearest(samples, end)
            # A phase the sampling did not cover at both ends (it began late, or ended early) is
            # left out rather than divided by all its deliveries.
            if a is b or abs(a[0] - start) > SAMPLED_WITHIN_NS or abs(b[0] - end) > SAMPLED_WITHIN_NS:
                print(f"{os.path.basename(run)} {phase['name'].split(',')[0]}: not covered by the samples")
                continue
            n = phase["completeness"]["delivered"]
            print(f"{os.path.basename(run)} {phase['name'].split(',')[0]}: {(b[1] - a[1]) / n:.1f} records, "
                  f"{(b[2] - a[2]) / n:.2f} full-page images, {(b[3] - a[3]) / n / 1024:.1f} KiB a delivery "
                  f"({(b[3] - a[3]) / 2**20:,.0f} MiB)")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
