#!/usr/bin/env python3
"""PostgreSQL commits per delivery (or submission), phase by phase, over whole bench runs.

    bench/tools/commits_per_item.py sample <file>      # until interrupted, beside the bench
    bench/tools/commits_per_item.py report <file> <experiment dir>

`sample` appends `<unix seconds> <sum of xact_commit over all databases>` to <file> twice a second
(psql as postgres on 127.0.0.1, as `make services` sets it up; its own two commits a second are
counted too). `report` reads every run's JSON under <experiment dir> (bench/tools/ab.sh's layout),
interpolates the commit count at each phase's window and divides by the items the phase
completed. Phases shorter than a few seconds get a coarse figure: a paced phase lasts as long as
the max-rate phase before it (6-7 s for submissions with --submissions 20000), and phases of
under a second (events with --events 2000) are not worth comparing."""
import bisect
import glob
import json
import os
import subprocess
import sys
import time

QUERY = (
    "SELECT extract(epoch FROM clock_timestamp())::text || ' ' || sum(xact_commit)::text "
    "FROM pg_stat_database"
)


def sample(path):
    with open(path, "a") as out:
        while True:
            line = subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", QUERY],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            out.write(line + "\n")
            out.flush()
            time.sleep(0.5)


def report(path, experiment):
    samples = []
    with open(path) as file:
        for line in file:
            fields = line.split()
            if len(fields) == 2:
                samples.append((float(fields[0]), float(fields[1])))
    times = [time for time, _ in samples]

    def commits_at(moment):
        i = bisect.bisect_left(times, moment)
        if i == 0 or i >= len(times):
            return None
        (t0, c0), (t1, c1) = samples[i - 1], samples[i]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0)

    print("| run | phase | seconds | commits per item |")
    print("|---|---|---|---|")
    for run in sorted(glob.glob(os.path.join(experiment, "*", "*.json"))):
        with open(run) as file:
            results = json.load(file)
        for scenario in results["scenarios"]:
            start, end = (ns / 1e9 for ns in scenario["window_unix_ns"])
            first, last = commits_at(start), commits_at(end)
            if first is None or last is None:
                continue
            items = scenario["deliveries_per_second"] * (end - start)
            name = os.path.basename(os.path.dirname(run))
            print(
                f"| {name} | {scenario['name']} | {end - start:.1f} | "
                f"{(last - first) / items:.3f} |"
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sample":
        try:
            sample(sys.argv[2])
        except KeyboardInterrupt:
            pass
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
