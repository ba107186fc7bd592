"""The disk's own counters (/proc/diskstats) every 100 ms, a line each: the UTC ns, then the
device's 17 fields (reads, writes, sectors, milliseconds, in flight, flushes...), until <seconds>
have passed or SIGTERM (which ends it with the file flushed).

    diskstats.py <device> <out file> <seconds>
"""
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
device, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(path, "w") as out:
    end = time.time() + seconds
    while time.time() < end:
        for line in open("/proc/diskstats"):
            fields = line.split()
            if fields[2] == device:
                out.write(f"{time.time_ns()} {' '.join(fields[3:])}\n")
        time.sleep(0.1)
