"""Prefixes each line of stdin with the UTC time of day to the millisecond (`HH:MM:SS.mmm `), so
that a run's phases can be matched with other logs (`pg_background.py`)."""
import sys
import time

for line in sys.stdin:
    now = time.time()
    sys.stdout.write(time.strftime("%H:%M:%S", time.gmtime(now)) + ".%03d " % int(now % 1 * 1000) + line)
    sys.stdout.flush()
