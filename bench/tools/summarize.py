#!/usr/bin/env python3
"""Prints one markdown table per phase from the fp-bench JSONs under a folder (as bench/tools/ab.sh
leaves them: <folder>/<variant>-<round>/<timestamp>.json), a row per run, so A and B sit side by side."""
import json
import re
import pathlib
import sys

COLUMNS = [
    ("fp-api", "api"),
    ("postgresql", "PostgreSQL"),
    ("rabbitmq", "RabbitMQ"),
    ("fp-dispatcher", "dispatcher"),
    ("fp-log-ingest", "log-ingest"),
]


def cpu(processes, prefix):
    values = [p["cpu_seconds_per_1000_deliveries"] for p in processes if p["label"].startswith(prefix)]
    return sum(values) if values else None


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def main(folder):
    runs = sorted(pathlib.Path(folder).glob("*/*.json"), key=lambda path: (path.parent.name.split("-")[-1], path.parent.name))
    phases = {}
    for path in runs:
        report = json.loads(path.read_text())
        for scenario in report["scenarios"]:
            # A paced phase's name holds its rate, which differs from run to run.
            name = re.sub(r" \(\d+/s\)$", "", scenario["name"])
            phases.setdefault(name, []).append((path.parent.name, scenario))
    for name, rows in phases.items():
        print(f"\n{name}\n")
        header = ["run", "paced at/s", "deliveries/s", "publish/s", "p50 ms", "p99 ms"] + [f"{title} CPU s/1000" for _, title in COLUMNS] + ["all CPU s/1000", "ack frames/delivery", "parked", "complete"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for run, scenario in rows:
            processes = scenario["processes"]
            total = sum(p["cpu_seconds_per_1000_deliveries"] for p in processes)
            latency = scenario["latency"]
            cells = [
                run,
                "max" if scenario["target_rate_per_second"] is None else f"{scenario['target_rate_per_second']:,.0f}",
                f"{scenario['deliveries_per_second']:,.0f}",
                f"{scenario['publish_rate_per_second']:,.0f}",
                fmt(latency["p50_ms"], 1),
                fmt(latency["p99_ms"], 1),
            ]
            # Builds that ack each input alone do not count their frames (one per input).
            frames = scenario.get("settle_frames") or None
            delivered = scenario["completeness"]["delivered"]
            per_delivery = frames / delivered if frames and delivered else None
            # Builds before the parked count was kept show "-".
            parked = scenario.get("parked")
            cells += [fmt(cpu(processes, prefix)) for prefix, _ in COLUMNS] + [fmt(total), fmt(per_delivery, 2), "-" if parked is None else f"{parked:,}", str(scenario["completeness"]["complete"])]
            print("| " + " | ".join(cells) + " |")
        by_variant(rows)


def spread(values, digits):
    """Median (min-max): a variant's spread, to set beside another's before claiming a difference."""
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    return f"{middle:,.{digits}f} ({ordered[0]:,.{digits}f}-{ordered[-1]:,.{digits}f})"


def by_variant(rows):
    """Each variant's median and range over its rounds: two variants differ only where the ranges do
    not overlap (the same bytes have differed by 15 % between rounds on this machine)."""
    variants = {}
    for run, scenario in rows:
        variants.setdefault(run.rsplit("-", 1)[0], []).append(scenario)
    if all(len(scenarios) < 2 for scenarios in variants.values()):
        return
    print("\n| variant | rounds | deliveries/s | p99 ms | all CPU s/1000 |")
    print("|---|---|---|---|---|")
    for variant, scenarios in variants.items():
        rates = [scenario["deliveries_per_second"] for scenario in scenarios]
        p99s = [scenario["latency"]["p99_ms"] for scenario in scenarios]
        totals = [sum(p["cpu_seconds_per_1000_deliveries"] for p in scenario["processes"]) for scenario in scenarios]
        print(f"| {variant} | {len(scenarios)} | {spread(rates, 0)} | {spread(p99s, 1)} | {spread(totals, 3)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/experiments")
