#!/usr/bin/env python3
"""For each stall of `min_ms` or more in a run's paced phase (from `sync_trace.py report`): the
PostgreSQL and RabbitMQ log lines written from 5 s before it began to 1 s after it ended (an
autovacuum or a checkpoint logs when it ends, and says how long it took).

Usage: beside.py <run dir> [min_ms, default 100]   (its syncs-report.txt, postgresql.log, rabbitmq.log)
"""
import datetime
import os
import re
import sys

STALL = re.compile(r"^(\S*paced\S*)\.csv: stall (\S+) - (\S+), worst (\d+) ms")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\.\d+)")


def seconds_of_day(clock):
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def stamped(path):
    """(seconds of the UTC day, line) for each line that starts with a time stamp."""
    found = []
    if not os.path.exists(path):
        return found
    for line in open(path, errors="replace"):
        match = STAMP.match(line)
        if match:
            moment = datetime.datetime.fromisoformat(match.group(1).replace(" ", "T"))
            found.append((seconds_of_day(moment.strftime("%H:%M:%S.%f")), line.rstrip()))
    return found


def main(run, min_ms):
    logs = {name: stamped(os.path.join(run, f"{name}.log")) for name in ("postgresql", "rabbitmq")}
    for line in open(os.path.join(run, "syncs-report.txt")):
        stall = STALL.match(line)
        if not stall or int(stall.group(4)) < min_ms:
            continue
        start, end = seconds_of_day(stall.group(2)), seconds_of_day(stall.group(3))
        print(f"{stall.group(1)}: stall {stall.group(2)} - {stall.group(3)}, worst {stall.group(4)} ms")
        for name, lines in logs.items():
            for moment, text in lines:
                if start - 5 <= moment <= end + 1:
                    print(f"    {name}: {text[:300]}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 100)
