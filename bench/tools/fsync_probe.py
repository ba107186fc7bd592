#!/usr/bin/env python3
"""How long an fsync takes on a disk, while something else runs: writes 8 KiB and `fdatasync`s it,
sleeps 10 ms, and again, for a while. Lists every fsync that took longer than 20 ms, with the UTC
time it ended, and at the end a line with the count, p50, p99 and max.

Usage: fsync_probe.py <seconds> <report file> <probe file on the disk to watch>

The probe file is written in place (16 MiB, allocated before the first measurement), so each
fdatasync writes data and no metadata: what it waits on is the disk and whatever else is queued
there, such as PostgreSQL's or RabbitMQ's write-ahead logs.
"""
import datetime
import os
import sys
import time

BLOCK = 8192
BLOCKS = 2048


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    seconds, report_path, probe_path = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    if seconds <= 0:
        sys.exit("seconds must be positive")
    block = b"x" * BLOCK
    fd = os.open(probe_path, os.O_WRONLY | os.O_CREAT, 0o644)
    for index in range(BLOCKS):
        os.pwrite(fd, block, index * BLOCK)
    os.fsync(fd)
    durations = []
    end = time.time() + seconds
    with open(report_path, "w") as report:
        while time.time() < end:
            os.pwrite(fd, block, (len(durations) % BLOCKS) * BLOCK)
            started = time.perf_counter()
            os.fdatasync(fd)
            took = time.perf_counter() - started
            durations.append(took)
            if took > 0.02:
                report.write(f"{utc_now()} {took * 1e3:.1f} ms\n")
                report.flush()
            time.sleep(0.01)
        durations.sort()
        report.write(
            f"n={len(durations)} p50={durations[len(durations) // 2] * 1e3:.2f} "
            f"p99={durations[int(0.99 * len(durations))] * 1e3:.2f} max={durations[-1] * 1e3:.1f} ms\n"
        )
    os.close(fd)


if __name__ == "__main__":
    main()
