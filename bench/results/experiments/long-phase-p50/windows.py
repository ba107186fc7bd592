#!/usr/bin/env python3
"""A paced phase in windows of five seconds (by the event's time): deliveries, p50, p99, the CPU
each kind of process used (from ../nondisk-stalls/cpu_sampler.py's file), where the run has a
vmstat.txt (../writeback-paced/vmsample.py) the most the kernel wrote out in one second of the
window and the most that was dirty, and what PostgreSQL's log says ended in the window
(checkpoints, autovacuum and autoanalyze, with how long each ran).

Usage: windows.py <run dir>   (the run's fp-bench JSON, latencies/, cpu.txt, postgresql.log)
"""
import glob
import json
import os
import re
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../tools"))
from latency_timeline import arrivals, nearest_rank, utc  # noqa: E402

SECOND = 1_000_000_000
WINDOW = 5 * SECOND
SHOWN = ["pg backend", "pg autovacuum", "pg other", "beam.smp", "fp-dispatcher", "fp-log-ingest"]
KINDS = ["pg backend", "pg autovacuum", "pg other", "beam.smp", "fp-api", "fp-dispatcher",
         "fp-log-ingest", "fp-bench", "fp-bench-receiver"]
LOGGED = re.compile(r"^(\S+ \S+) UTC \[\d+\] LOG:  (automatic (?:vacuum|analyze) of table \"[^.]+\.public\.(\S+)\"|"
                    r"checkpoint (?:starting|complete)[^;\n]*)")
ELAPSED = re.compile(r"elapsed: ([0-9.]+) s")


def log_events(path):
    """(end ns, text) for each checkpoint and autovacuum/analyze line, with its elapsed time."""
    events, last = [], None
    for line in open(path, errors="replace"):
        found = LOGGED.match(line)
        if found:
            when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
            text = found.group(2)
            if found.group(3):
                text = text.split(" of table")[0].replace("automatic ", "") + " " + found.group(3).rstrip('":')
            last = [int(when.timestamp() * SECOND), text]
            events.append(last)
        elif last and ELAPSED.search(line):
            last[1] += f" ({ELAPSED.search(line).group(1)} s)"
            # The next "elapsed" may belong to an entry not matched (a catalog's vacuum).
            last = None
    return events


def cpu_at(samples, ns):
    """The sample nearest before ns."""
    best = samples[0]
    for sample in samples:
        if sample[0] > ns:
            break
        best = sample
    return best


def writeback(run):
    """{second: (KiB written out in it, most pages dirty in it)} from vmstat.txt, or {}."""
    path = os.path.join(run, "vmstat.txt")
    if not os.path.exists(path):
        return {}
    samples = [[int(v) for v in line.split()] for line in open(path)]
    seconds = {}
    for a, b in zip(samples, samples[1:]):
        written, dirty = seconds.get(b[0] // SECOND, (0, 0))
        seconds[b[0] // SECOND] = (written + b[3] - a[3], max(dirty, b[1]))
    return seconds


def main(run):
    report = json.load(open(glob.glob(os.path.join(run, "*.json"))[0]))
    paced = next(s for s in report["scenarios"] if s["target_rate_per_second"])
    start, end = paced["window_unix_ns"]
    rows = arrivals(glob.glob(os.path.join(run, "latencies", "*paced*.csv"))[0])
    samples = [[int(v) for v in line.split()] for line in open(os.path.join(run, "cpu.txt"))]
    events = log_events(os.path.join(run, "postgresql.log"))
    written = writeback(run)
    print(f"{os.path.basename(run)}: {paced['name']}, p50 {paced['latency']['p50_ms']:.1f} ms, "
          f"p99 {paced['latency']['p99_ms']:.1f} ms")
    print("  window    n      p50     p99   CPUs: " + "  ".join(f"{k:>13}" for k in SHOWN)
          + ("   MiB/s out  MiB dirty" if written else ""))
    for window in range(start, end, WINDOW):
        latencies = sorted(latency for occurred, latency in rows if window <= occurred < window + WINDOW)
        if not latencies:
            continue
        a, b = cpu_at(samples, window), cpu_at(samples, window + WINDOW)
        seconds = (b[0] - a[0]) / SECOND or 1
        cpus = [(b[3 + KINDS.index(k)] - a[3 + KINDS.index(k)]) / 100 / seconds for k in SHOWN]
        in_window = [written[s] for s in range(window // SECOND, (window + WINDOW) // SECOND) if s in written]
        out = max((kib for kib, _ in in_window), default=0) / 1024
        dirty = max((pages for _, pages in in_window), default=0) * 4 / 1024
        print(f"  {utc(window)[:8]} {len(latencies):5d} {nearest_rank(latencies, 0.5) / 1e6:7.1f} "
              f"{nearest_rank(latencies, 0.99) / 1e6:7.1f}         " + "  ".join(f"{c:13.2f}" for c in cpus)
              + (f"  {out:10.0f}  {dirty:9.0f}" if written else ""))
        for when, text in events:
            if window <= when < window + WINDOW:
                print(f"      {utc(when)[:12]} {text}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
