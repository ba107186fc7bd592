"""/proc/vmstat's nr_dirty, nr_writeback and pgpgout every 20 ms, a line each with the UTC ns,
until <seconds> have passed or SIGTERM (which ends it with the file flushed).

    vmsample.py <out file> <seconds>
"""
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
KEYS = ("nr_dirty", "nr_writeback", "pgpgout")
with open(sys.argv[1], "w") as out:
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        values = {}
        for line in open("/proc/vmstat"):
            key, _, number = line.partition(" ")
            if key in KEYS:
                values[key] = number.strip()
        out.write(f"{time.time_ns()} {values['nr_dirty']} {values['nr_writeback']} {values['pgpgout']}\n")
        time.sleep(0.02)
