#!/usr/bin/env python3
"""How long the dispatcher's claim and outcome statements took in PostgreSQL, phase by phase.

    statement_times.py <run dir holding one fp-bench JSON> <PostgreSQL log excerpt>

Run the bench with every statement's duration logged and its parameters left out (as the
superuser: `ALTER SYSTEM SET log_min_duration_statement = 0`, `ALTER SYSTEM SET
log_parameter_max_length = 0`, `SELECT pg_reload_conf()`; reset both after), and cut the server's
log from the run's start (e.g. `tail -c +<size before + 1> postgresql-15-main.log`). The log lines
must start with `%m [%p]` (Debian's default `log_line_prefix`) in UTC (`log_timezone`). Each phase's window
(`window_unix_ns` in the JSON) picks the statements logged in it; for each kind it prints how many
ran, how many deliveries one served on average, their `execute` times (the commit is not in them:
it comes with the protocol's Sync) and their mean `bind` time, and the share of the window the
backends spent executing them (summed: with several dispatchers it can pass 100 %).
"""

import datetime
import json
import pathlib
import re
import statistics
import sys

LINE = re.compile(r"^(\S+ \S+) UTC \[\d+\].*duration: ([0-9.]+) ms  (bind|execute) s\d+: (.{0,30})")
KINDS = [("claim", "WITH claimed"), ("outcome", "UPDATE delivery_attempts")]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def logged(path):
    """(unix seconds, ms, bind or execute, the statement's first characters) per logged step."""
    for line in open(path, errors="replace"):
        match = LINE.match(line)
        if match:
            when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
            seconds = when.replace(tzinfo=datetime.timezone.utc).timestamp()
            yield seconds, float(match.group(2)), match.group(3), match.group(4)


def main(run_dir, log_path):
    report = json.loads(next(pathlib.Path(run_dir).glob("*.json")).read_text())
    steps = list(logged(log_path))
    if not steps:
        sys.exit(f"no statement durations in {log_path} (log_line_prefix '%m [%p]', log_timezone UTC?)")
    for scenario in report["scenarios"]:
        start, end = (ns / 1e9 for ns in scenario["window_unix_ns"])
        seconds = end - start
        if seconds <= 0:
            continue
        rate = scenario["deliveries_per_second"]
        print(f"## {scenario['name']} ({rate:.0f} deliveries/s, {seconds:.1f} s)")
        for kind, prefix in KINDS:
            inside = [step for step in steps if start <= step[0] <= end and step[3].startswith(prefix)]
            executes = [step[1] for step in inside if step[2] == "execute"]
            binds = [step[1] for step in inside if step[2] == "bind"]
            if not executes:
                continue
            print(
                f"  {kind}: {len(executes)} statements ({len(executes) / seconds:.0f}/s, about"
                f" {rate * seconds / len(executes):.0f} deliveries each); execute ms p50"
                f" {percentile(executes, 0.5):.2f} p90 {percentile(executes, 0.9):.2f} p99"
                f" {percentile(executes, 0.99):.2f} mean {statistics.mean(executes):.2f}; bind mean"
                f" {statistics.mean(binds) if binds else float('nan'):.2f}; executing"
                f" {sum(executes) / 1000 / seconds:.0%} of the window"
            )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
