#!/usr/bin/env python3
"""A delivery's two stages from the dispatcher's log, in 100 ms bins of the event's time (the
UUIDv7 event id's millisecond prefix, set by the load generator as it publishes):
- before the POST: from the event's time to the POST's start (the log line's time less the POST's
  duration_ms): the broker hop, the dispatcher's consume and the claim;
- the POST: duration_ms, as the dispatcher measured it.
Each bin: deliveries, the largest of each stage, and the latest log time.

Usage: stages.py <fp-dispatcher log> <from HH:MM:SS> <to HH:MM:SS>   (event times, UTC)
"""
import re
import sys
from datetime import datetime, timezone

LINE = re.compile(r'^(\S+)Z .*fp\.event_id="([0-9a-f-]+)".*: delivered .*duration_ms=(\d+)')


def main(path, start, end):
    bins = {}
    for line in open(path, errors="replace"):
        found = LINE.match(line)
        if not found:
            continue
        logged = datetime.fromisoformat(found.group(1)).replace(tzinfo=timezone.utc).timestamp() * 1000
        event_ms = int(found.group(2).replace("-", "")[:12], 16)
        clock = datetime.fromtimestamp(event_ms / 1000, timezone.utc).strftime("%H:%M:%S.%f")
        if not start <= clock[:8] <= end:
            continue
        post = int(found.group(3))
        before = logged - post - event_ms
        key = event_ms // 100
        n, worst_before, worst_post, last = bins.get(key, (0, 0, 0, 0))
        bins[key] = (n + 1, max(worst_before, before), max(worst_post, post), max(last, logged))
    print("event time (100 ms)   n   worst before POST ms   worst POST ms   last logged")
    for key in sorted(bins):
        n, before, post, last = bins[key]
        print(f"{datetime.fromtimestamp(key / 10, timezone.utc).strftime('%H:%M:%S.%f')[:10]}  {n:5d}  "
              f"{before:20.0f}  {post:14d}   {datetime.fromtimestamp(last / 1000, timezone.utc).strftime('%H:%M:%S.%f')[:12]}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
