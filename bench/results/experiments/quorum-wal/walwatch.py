"""RabbitMQ's quorum-queue log on disk every 20 ms: a line, with the UTC ns, whenever a WAL file
appears or goes, and each second the WAL's size and the segment files' count and bytes. Runs until
SIGTERM (which ends it with the file flushed).

    walwatch.py <quorum dir, e.g. /var/lib/rabbitmq/mnesia/rabbit@vm/quorum/rabbit@vm> <out file>
"""
import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
root, path = sys.argv[1], sys.argv[2]


def scan():
    wals, segments, segment_bytes = {}, 0, 0
    for entry in os.scandir(root):
        try:
            if entry.name.endswith(".wal"):
                wals[entry.name] = entry.stat().st_size
            elif entry.is_dir():
                for inner in os.scandir(entry.path):
                    if inner.name.endswith(".segment"):
                        segments += 1
                        segment_bytes += inner.stat().st_size
        except FileNotFoundError:
            pass  # a file removed between listing and stat
    return wals, segments, segment_bytes


with open(path, "w", buffering=1) as out:
    known, last_second = {}, 0
    while True:
        now = time.time_ns()
        wals, segments, segment_bytes = scan()
        for name in sorted(set(wals) - set(known)):
            out.write(f"{now} wal-new {name}\n")
        for name in sorted(set(known) - set(wals)):
            out.write(f"{now} wal-gone {name} last size {known[name]}\n")
        known = wals
        if now // 10**9 != last_second:
            last_second = now // 10**9
            sizes = " ".join(f"{name}={size}" for name, size in sorted(wals.items()))
            out.write(f"{now} sizes {sizes} segments {segments} segment-bytes {segment_bytes}\n")
        time.sleep(0.02)
