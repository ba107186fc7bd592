#!/usr/bin/env python3
"""Per run: the largest write-out of the kernel within 100 ms (from vmstat.txt's pgpgout) and when
it came, counted from the end of the events' max-rate phase; the paced phases' p99 and the two
yardsticks' p99 (from the run's JSON); with bgwriter-before.txt and -after.txt (sittings that
kept them), what PostgreSQL's backends wrote and how many buffers it allocated during the run.

Usage: bursts.py <experiment dir>   (its runs are the directories named <variant>-<number>)
"""
import glob
import json
import os
import sys

# pg_stat_bgwriter's columns in PostgreSQL 15, after the now() the sitting put first.
BGWRITER = ["now", "checkpoints_timed", "checkpoints_req", "checkpoint_write_time", "checkpoint_sync_time",
            "buffers_checkpoint", "buffers_clean", "maxwritten_clean", "buffers_backend",
            "buffers_backend_fsync", "buffers_alloc", "stats_reset"]


def main(root):
    for run in sorted(glob.glob(os.path.join(root, "*-[0-9]*"))):
        results = glob.glob(os.path.join(run, "*.json"))
        vmstat = os.path.join(run, "vmstat.txt")
        if not results or not os.path.exists(vmstat):
            continue
        report = json.load(open(results[0]))
        events_max = next(s for s in report["scenarios"] if s["name"].startswith("events: max rate"))
        end_ns = events_max["window_unix_ns"][1]
        samples = [[int(value) for value in line.split()] for line in open(vmstat)]
        burst, at = 0, None
        for i, first in enumerate(samples):
            later = [s for s in samples[i:] if s[0] - first[0] <= 100_000_000]
            written = (later[-1][3] - first[3]) // 1024
            if written > burst:
                burst, at = written, (first[0] - end_ns) / 1e9
        figures = [f"largest write-out {burst} MiB in 100 ms, {at:+.1f} s after the events' max-rate phase"]
        figures += [f"{s['name'].split(':')[0]} {s['name'].split(':')[1].strip()} p99 {s['latency']['p99_ms']:.1f}"
                    for s in report["scenarios"] if s["target_rate_per_second"]]
        figures += [f"{limit['name'].split(' at ')[0]} p99 {limit['latency']['p99_ms']:.1f}"
                    for limit in report["limits"] if limit.get("latency")]
        before, after = (os.path.join(run, f"bgwriter-{when}.txt") for when in ("before", "after"))
        if os.path.exists(before) and os.path.exists(after):
            delta = {name: int(b) - int(a) for name, a, b in
                     zip(BGWRITER, open(before).read().split("|"), open(after).read().split("|"))
                     if name in ("buffers_backend", "buffers_alloc", "buffers_checkpoint", "buffers_clean")}
            figures.append(", ".join(f"{name} {value}" for name, value in delta.items()))
        print(f"{os.path.basename(run)}: " + "; ".join(figures))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
