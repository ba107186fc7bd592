#!/usr/bin/env python3
"""One line a run of a sitting: the max rate, the paced phase's p50 and p99, the machine's CPUs
busy and RabbitMQ's (beam.smp's schedulers) CPU over the paced phase, RabbitMQ's quorum WAL
rollovers in the run and in the paced phase, and the paced phase's stalls of 200 ms or more
(latency_timeline.py's stalls.txt) with, for each, the program whose CPU rose most in the 5 s
from 1 s before its start against its mean over the phase.

Usage: summary.py <sitting dir>   (run dirs holding the fp-bench JSON, threads.txt, wal.txt, stalls.txt)
"""
import collections
import glob
import json
import os
import re
import sys
from datetime import datetime, timezone

SECOND = 10**9
STALL = re.compile(r"stall (\S+) - (\S+): \d+ of the slowest, worst (\d+) ms")


def per_second(path):
    """{second: {program or postgres kind: CPU ns}}, and {second: machine busy jiffies}."""
    last, cpu, machine, machine_last = {}, collections.defaultdict(collections.Counter), collections.Counter(), None
    for line in open(path):
        parts = line.split()
        second = int(parts[0]) // SECOND
        if parts[1] == "machine":
            if machine_last is not None:
                machine[second] += int(parts[3]) - machine_last
            machine_last = int(parts[3])
            continue
        pid, tid, program, name = parts[1:5]
        c = int(parts[7])
        before = last.get((pid, tid))
        last[(pid, tid)] = c
        if before is not None:
            key = f"postgres {name}" if program == "postgres" and name != "postgres" else program
            cpu[second][key] += c - before
    return cpu, machine


def clock(second):
    return datetime.fromtimestamp(second, timezone.utc).strftime("%H:%M:%S")


def main(sitting):
    for run in sorted(d for d in glob.glob(os.path.join(sitting, "*")) if os.path.isdir(d)):
        reports = glob.glob(os.path.join(run, "*.json"))
        if not reports:
            continue
        report = json.load(open(reports[0]))
        top = next(s for s in report["scenarios"] if not s["target_rate_per_second"])
        paced = next(s for s in report["scenarios"] if s["target_rate_per_second"])
        start, end = (t // SECOND for t in paced["window_unix_ns"])
        cpu, machine = per_second(os.path.join(run, "threads.txt"))
        seconds = [s for s in range(start, end) if s in cpu]
        mean = collections.Counter()
        for s in seconds:
            mean.update(cpu[s])
        busy = sum(machine[s] for s in seconds) / 100 / max(len(seconds), 1)
        beam = mean["beam.smp"] / 1e9 / max(len(seconds), 1)
        rollovers = [int(line.split()[0]) // SECOND for line in open(os.path.join(run, "wal.txt"))
                     if " wal-new " in line]
        rollovers = rollovers[1:]  # the first is the file already open when walwatch.py started
        in_paced = [r for r in rollovers if start <= r < end]
        print(f"{os.path.basename(run)}: max rate {top['deliveries_per_second']:.0f}/s; paced "
              f"{paced['target_rate_per_second']:.0f}/s p50 {paced['latency']['p50_ms']:.1f} ms, p99 "
              f"{paced['latency']['p99_ms']:.1f} ms; machine {f'{busy:.2f} CPUs' if machine else '- (not sampled)'}, "
              f"RabbitMQ {beam:.2f}; WAL "
              f"rollovers {len(rollovers)} ({len(in_paced)} in the paced phase: "
              f"{', '.join(clock(r) for r in in_paced) or '-'})")
        in_phase = False
        for line in open(os.path.join(run, "stalls.txt")):
            if line.startswith("events-paced"):
                in_phase = True
            elif not line.startswith(" "):
                in_phase = False
            found = STALL.search(line)
            if not (in_phase and found) or int(found.group(3)) < 200:
                continue
            day = start // 86400 * 86400
            h, m, s = found.group(1).split(":")
            at = day + int(h) * 3600 + int(m) * 60 + int(float(s))
            window = [cpu[t] for t in range(at - 1, at + 4) if t in cpu]
            rise = {k: sum(w[k] for w in window) / len(window) - mean[k] / len(seconds) for k in mean}
            k = max(rise, key=rise.get)
            near = [r for r in rollovers if at - 10 <= r <= at]
            print(f"    stall {found.group(1)[:12]} worst {found.group(3)} ms: {k} +{rise[k] / 1e6:.0f} ms/s over "
                  f"its phase mean ({mean[k] / len(seconds) / 1e6:.0f})"
                  + (f"; a WAL rollover {at - near[-1]} s before" if near else ""))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
