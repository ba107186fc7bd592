#!/usr/bin/env python3
"""What each run wrote to the disk: per phase, the kernel's write-out (vmstat.txt's pgpgout, in
KiB) per delivery; over the whole run, the buffers PostgreSQL's backends, background writer and
checkpoints wrote (pg_stat_bgwriter before and after the run).

Usage: written.py <sitting dir>   (runs: <variant>-<number>, each with its JSON, vmstat.txt and
bgwriter-{before,after}.txt)
"""
import glob
import json
import os
import sys

COLUMNS = ["checkpoints_timed", "checkpoints_req", "checkpoint_write_time", "checkpoint_sync_time",
           "buffers_checkpoint", "buffers_clean", "maxwritten_clean", "buffers_backend",
           "buffers_backend_fsync", "buffers_alloc"]


def bgwriter(run):
    before, after = ([int(v) for v in open(os.path.join(run, name)).read().split("|")[1:11]]
                     for name in ("bgwriter-before.txt", "bgwriter-after.txt"))
    return {column: b - a for column, a, b in zip(COLUMNS, before, after)}


def main(root):
    for run in sorted(glob.glob(os.path.join(root, "*-[0-9]*")), key=lambda r: int(r.rsplit("-", 1)[1])):
        report = json.load(open(glob.glob(os.path.join(run, "*.json"))[0]))
        samples = [[int(v) for v in line.split()] for line in open(os.path.join(run, "vmstat.txt"))]
        phases = []
        for phase in report["scenarios"]:
            start, end = phase["window_unix_ns"]
            inside = [s for s in samples if start <= s[0] <= end]
            kib = inside[-1][3] - inside[0][3] if len(inside) > 1 else 0
            delivered = phase["completeness"]["delivered"]
            phases.append(f"{phase['name'].split(',')[0]}: {kib / 1024:,.0f} MiB, {kib / delivered:.1f} KiB a delivery")
        written = bgwriter(run)
        print(f"{os.path.basename(run)}: whole run {(samples[-1][3] - samples[0][3]) / 1024:,.0f} MiB written out; "
              + "; ".join(phases))
        print(f"    PostgreSQL's buffers written: backends {written['buffers_backend']:,}, background writer "
              f"{written['buffers_clean']:,}, checkpoints {written['buffers_checkpoint']:,} "
              f"({written['checkpoints_req']} requested, {written['checkpoints_timed']} timed); "
              f"allocated {written['buffers_alloc']:,}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
