#!/usr/bin/env python3
"""Per run: the paced phases' p99 (p50) (paced at shares of the max rate or at fixed rates), the
two yardsticks' p99 (p50), and each paced phase's stalls of 40 ms or more with the longest fsync
or fdatasync that overlapped them and whose it was (from each run's syncs-report.txt, written by
`bench/tools/sync_trace.py report`).

Usage: summary.py <experiment dir>   (its runs are the directories named <variant>-<number>)

With a run's `vmstat.txt` (UTC ns, nr_dirty, nr_writeback, pgpgout every 20 ms), also the most
dirty memory and the most written out in one 20 ms step.
"""
import glob
import itertools
import json
import os
import re
import sys

STALL = re.compile(r"^(\S+)\.csv: stall (\S+) - (\S+), worst (\d+) ms: (\d+) calls overlap it, the longest ([\d.]+) ms")
CALL = re.compile(r"^\s+\S+ - \S+\s+([\d.]+) ms  (.+) \(")


def main(root):
    runs = sorted(glob.glob(os.path.join(root, "*-[0-9]*")), key=lambda path: (path.rsplit("-", 1)[0], int(path.rsplit("-", 1)[1])))
    for run in runs:
        results = glob.glob(os.path.join(run, "*.json"))
        if not results or not os.path.exists(os.path.join(run, "syncs-report.txt")):
            continue
        report = json.load(open(results[0]))
        figures = []
        for phase in report["scenarios"]:
            pace = re.search(r"(\d+) % of max|paced at (\d+)/s", phase["name"])
            if pace:
                label = f"{pace.group(1)} %" if pace.group(1) else f"{pace.group(2)}/s"
                figures.append(f"{phase['name'].split(':')[0]} {label} "
                               f"{phase['latency']['p99_ms']:.1f} ({phase['latency']['p50_ms']:.1f})")
        for limit in report["limits"]:
            if limit.get("latency"):
                figures.append(f"{limit['name'].split(' at ')[0]} {limit['latency']['p99_ms']:.2f} "
                               f"({limit['latency']['p50_ms']:.2f})")
        lines = open(os.path.join(run, "syncs-report.txt")).read().splitlines()
        slow = lines.index(next(line for line in lines if line.startswith("calls of ")))
        slow_calls = list(itertools.takewhile(lambda line: line.startswith("    "), lines[slow + 1:]))
        figures.append(f"{len(slow_calls)} syncs of 20 ms or more")
        vmstat = os.path.join(run, "vmstat.txt")
        if os.path.exists(vmstat):
            samples = [[int(value) for value in line.split()] for line in open(vmstat)]
            dirty = max(sample[1] for sample in samples) * 4 // 1024
            burst = max(b[3] - a[3] for a, b in zip(samples, samples[1:])) // 1024
            figures.append(f"dirty at most {dirty} MiB, at most {burst} MiB written out in 20 ms")
        print(f"{os.path.basename(run)}: " + "; ".join(figures))
        for index, line in enumerate(lines):
            stall = STALL.match(line)
            if not stall or not ("of-max-rate" in stall.group(1) or "paced-at" in stall.group(1)):
                continue
            phase, start, end, worst, _, longest = stall.groups()
            whose = []
            for call in lines[index + 1:]:
                found = CALL.match(call)
                if not found:
                    break
                whose.append(f"{found.group(2)} {float(found.group(1)):.0f}")
            print(f"    {phase} {start}-{end}: worst {worst} ms, longest sync {float(longest):.1f} ms"
                  + (f" ({', '.join(whose)})" if whose else ""))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
