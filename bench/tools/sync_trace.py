#!/usr/bin/env python3
"""Every fsync and fdatasync on the machine, with how long it took and whose it was, beside a run.

Usage:
    sync_trace.py record <seconds> <dir>
    sync_trace.py report <dir> [min_ms] [latencies dir]

`record` (as root, with Debian's linux-perf; SIGTERM or Ctrl-C ends it early) traces the two system calls' entries and exits on
every CPU with `perf record` (kernel tracepoints, so the processes traced are not stopped), and
reads `ps` every second so that each call can be put down to its process: PostgreSQL's WAL writer
or checkpointer, one of its backends, RabbitMQ, or anything else. It writes `perf.data`,
`clock.txt` (what the monotonic clock, perf's, reads at a UTC time) and `processes.txt` to `dir`.

`report` prints, per process kind, how many calls there were and their p50, p99 and max; then
every call of `min_ms` or more (default 20) with the UTC time it ended. Given the CSVs of
`fp-bench --latencies-dir`, it also lists for each stall of 40 ms or more (as
`latency_timeline.py` finds them) the calls that overlapped it, from its first slow event to its
last slow delivery's arrival.
"""
import collections
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import latency_timeline  # noqa: E402

EVENTS = ",".join(
    f"syscalls:sys_{side}_{call}" for call in ("fsync", "fdatasync") for side in ("enter", "exit")
)
STALL_MIN_MS = 40
CALL_LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+(\d+)\.(\d+):\s+syscalls:sys_(enter|exit)_")


def record(seconds, directory):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "clock.txt"), "w") as clock:
        clock.write(f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC)} {time.time_ns()}\n")
    perf = subprocess.Popen(
        ["perf", "record", "-q", "-a", "--clockid", "CLOCK_MONOTONIC", "-e", EVENTS,
         "-o", os.path.join(directory, "perf.data"), "--", "sleep", str(seconds)]
    )
    # SIGTERM or SIGINT (Ctrl-C, which perf gets too) ends the recording early, as perf itself
    # ends on SIGINT: with its data written, and then the process list.
    for ending in (signal.SIGTERM, signal.SIGINT):
        signal.signal(ending, lambda *_: perf.send_signal(signal.SIGINT))
    processes = {}
    while perf.poll() is None:
        listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            pid, _, args = line.strip().partition(" ")
            processes.setdefault(pid, args.strip())
        time.sleep(1)
    with open(os.path.join(directory, "processes.txt"), "w") as out:
        for pid, args in processes.items():
            out.write(f"{pid} {args}\n")
    # Ended by a signal (SIGINT from the handler above, or SIGTERM sent to it too), perf still
    # writes its data; only a failure to start leaves none.
    if perf.returncode not in (0, -signal.SIGINT, -signal.SIGTERM):
        sys.exit(f"perf record failed ({perf.returncode})")


def kind_of(args):
    """A process's kind, from its command line as `ps` showed it."""
    if args.startswith("postgres: "):
        role = args.split(":", 2)[-1].strip()
        for background in ("walwriter", "checkpointer", "background writer", "autovacuum"):
            if role.startswith(background):
                return f"postgresql {background}"
        return "postgresql backend"
    if "beam.smp" in args or "rabbitmq" in args:
        return "rabbitmq"
    return args.split(" ", 1)[0].rsplit("/", 1)[-1] or "unknown"


def calls(directory):
    """(start_ns, end_ns UTC, pid, thread name) of every traced call that both began and ended."""
    with open(os.path.join(directory, "clock.txt")) as clock:
        monotonic, utc = (int(value) for value in clock.read().split())
    offset = utc - monotonic
    script = subprocess.run(
        ["perf", "script", "-i", os.path.join(directory, "perf.data"), "-F", "comm,pid,tid,time,event", "--ns"],
        capture_output=True, text=True, check=True,
    ).stdout
    entered, done = {}, []
    for line in script.splitlines():
        # "         postgres  3245/3245   1234.567890123:  syscalls:sys_exit_fdatasync: "
        match = CALL_LINE.match(line)
        if not match:
            continue
        comm, pid, tid, seconds, nanos, side = match.groups()
        at = int(seconds) * 1_000_000_000 + int(nanos.ljust(9, "0")[:9]) + offset
        if side == "enter":
            entered[tid] = at
        elif tid in entered:
            done.append((entered.pop(tid), at, pid, comm))
    return done


def report(directory, min_ms, latencies):
    kinds = {}
    with open(os.path.join(directory, "processes.txt")) as listing:
        for line in listing:
            pid, _, args = line.rstrip("\n").partition(" ")
            kinds[pid] = kind_of(args)
    done = calls(directory)
    by_kind = collections.defaultdict(list)
    for start, end, pid, _ in done:
        by_kind[kinds.get(pid, "unknown")].append(end - start)
    for kind, durations in sorted(by_kind.items()):
        durations.sort()
        rank = latency_timeline.nearest_rank
        print(f"{kind}: {len(durations)} calls, p50 {rank(durations, 0.5) / 1e6:.2f} ms, "
              f"p99 {rank(durations, 0.99) / 1e6:.2f} ms, max {durations[-1] / 1e6:.2f} ms")
    print(f"calls of {min_ms:g} ms or more, by the time they ended:")
    for start, end, pid, comm in sorted(done, key=lambda call: call[1]):
        if end - start >= min_ms * 1e6:
            print(f"    {latency_timeline.utc(end)} {(end - start) / 1e6:7.1f} ms  "
                  f"{kinds.get(pid, 'unknown')} ({comm}, pid {pid})")
    if latencies:
        for path in latency_timeline.csv_paths(latencies):
            rows = latency_timeline.arrivals(path)
            for stall in latency_timeline.stalls(rows):
                latency, _ = stall["worst"]
                if latency < STALL_MIN_MS * 1e6:
                    continue
                window = (stall["first"], stall["end"])
                inside = [call for call in done if call[0] < window[1] and call[1] > window[0]]
                longest = max((end - start for start, end, _, _ in inside), default=0)
                print(f"{os.path.basename(path)}: stall {latency_timeline.utc(window[0])} - "
                      f"{latency_timeline.utc(window[1])}, worst {latency / 1e6:.0f} ms: "
                      f"{len(inside)} calls overlap it, the longest {longest / 1e6:.1f} ms")
                for start, end, pid, comm in inside:
                    if end - start >= min_ms * 1e6:
                        print(f"        {latency_timeline.utc(start)} - {latency_timeline.utc(end)} "
                              f"{(end - start) / 1e6:6.1f} ms  {kinds.get(pid, 'unknown')} ({comm})")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "record":
        record(float(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        min_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
        report(sys.argv[2], min_ms, sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
