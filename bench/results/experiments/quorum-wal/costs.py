#!/usr/bin/env python3
"""Each run's phases from its fp-bench JSON: deliveries a second, p50 and p99, and RabbitMQ's and
all processes' CPU seconds per 1,000 deliveries.   costs.py <sitting dir>"""
import glob
import json
import os
import sys

for run in sorted(glob.glob(os.path.join(sys.argv[1], "*", "*.json"))):
    for s in json.load(open(run))["scenarios"]:
        per = {p["label"]: p["cpu_seconds_per_1000_deliveries"] for p in s["processes"]}
        print(f"{run.split('/')[-2]:5s} {s['name'][:34]:34s} {s['deliveries_per_second']:7.0f}/s  p50 "
              f"{s['latency']['p50_ms']:8.1f}  p99 {s['latency']['p99_ms']:8.1f}  RabbitMQ "
              f"{per['rabbitmq (server)']:.3f}  all {sum(per.values()):.3f}")
