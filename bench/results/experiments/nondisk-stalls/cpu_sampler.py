#!/usr/bin/env python3
"""Which processes use the CPUs, every 10 ms, beside a run (a diagnostic of this sitting).

Usage: cpu_sampler.py <seconds> <out file>

Each line: UTC ns, the machine's busy and idle ticks since boot (/proc/stat; iowait counts as
idle), then the CPU ticks (utime + stime, 1/100 s) each kind of process has used since the
sampler started: PostgreSQL's backends, its autovacuum (launcher and workers), its other
processes (checkpointer, WAL writer, ...), rabbitmq (beam.smp), fp-api, fp-dispatcher,
fp-log-ingest, fp-bench (the load generator), fp-bench-receiver. The processes are looked up
again every 0.5 s, PostgreSQL's children (short-lived autovacuum workers) at every sample, and
each child's kind from its command line every 0.5 s (just after its fork a backend still shows
the postmaster's); a process that ends keeps what it used.
"""
import os
import sys
import time

KINDS = ["pg backend", "pg autovacuum", "pg other", "beam.smp", "fp-api", "fp-dispatcher",
         "fp-log-ingest", "fp-bench", "fp-bench-receiver"]


def comm_of(pid):
    with open(f"/proc/{pid}/comm") as comm:
        return comm.read().strip()


def postgres_kind(pid):
    with open(f"/proc/{pid}/cmdline") as cmdline:
        args = cmdline.read().replace("\0", " ")
    if "autovacuum" in args:
        return KINDS.index("pg autovacuum")
    if any(role in args for role in ("checkpointer", "background writer", "walwriter", "logical replication",
                                     "stats collector", "archiver", "-D ")):
        return KINDS.index("pg other")
    return KINDS.index("pg backend")


def others():
    """Our services' and the broker's processes (a comm is cut to 15 characters), and the postmaster."""
    pids, postmaster = {}, None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name = comm_of(entry)
            if name == "postgres" and postgres_kind(entry) == KINDS.index("pg other") and postmaster is None:
                with open(f"/proc/{entry}/cmdline") as cmdline:
                    if "-D" in cmdline.read():
                        postmaster = entry
        except OSError:
            continue
        for kind, known in enumerate(KINDS[3:], start=3):
            if name == known[:15]:
                pids[entry] = kind
    return pids, postmaster


def main():
    seconds, out = float(sys.argv[1]), open(sys.argv[2], "w")
    end = time.time() + seconds
    pids, postmaster = others()
    looked = time.time()
    kinds_of = {}
    last = {}
    used = [0] * len(KINDS)
    while time.time() < end:
        if time.time() - looked > 0.5:
            pids, postmaster = others()
            # A backend seen just after its fork still shows the postmaster's command line.
            kinds_of = {}
            looked = time.time()
        current = dict(pids)
        if postmaster:
            current[postmaster] = KINDS.index("pg other")
            try:
                with open(f"/proc/{postmaster}/task/{postmaster}/children") as children:
                    for child in children.read().split():
                        if child not in kinds_of:
                            try:
                                kinds_of[child] = postgres_kind(child)
                            except OSError:
                                continue
                        current[child] = kinds_of[child]
            except OSError:
                pass
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]
        busy = sum(fields[:8]) - idle
        for pid, kind in current.items():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    parts = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks = int(parts[11]) + int(parts[12])
            used[kind] += ticks - last.get(pid, ticks)
            last[pid] = ticks
        out.write(f"{time.time_ns()} {busy} {idle} " + " ".join(map(str, used)) + "\n")
        time.sleep(0.01)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main()
