#!/usr/bin/env python3
"""Issue 17's targets against `make bench` JSONs (all phases, limits measured), as a markdown
table: for one run, each figure in full; for several, one row a run with the figures alone.

    targets.py <fp-bench JSON> [<fp-bench JSON>...]

The baselines are the figures of the run quoted in the issue's text (2026-12-02, a faster day of
this kind of machine): RabbitMQ's CPU per delivery there is what "halved at every rate" halves.
"""

import json
import re
import sys

RABBITMQ_BASELINE = {"max": 0.122, "50": 0.250, "25": 0.475}


def scenario(report, source, share):
    """The phase of `source` ("events", "submissions") at `share` ("max", "50", "25")."""
    for phase in report["scenarios"]:
        name = phase["name"]
        if not name.startswith(f"{source}: ") or phase.get("dispatchers", 1) != 1:
            continue
        if share == "max" and "max rate" in name:
            return phase
        if share != "max" and re.search(rf"\b{share} % of max rate", name):
            return phase
    return None


def cpu(phase, prefix):
    return sum(
        process["cpu_seconds_per_1000_deliveries"]
        for process in phase["processes"]
        if process["label"].startswith(prefix)
    )


def rows_of(report):
    """(figure, value in full, target, met or None, the figure alone) for each target."""
    model = report.get("model")
    rows = []
    events_max = scenario(report, "events", "max")
    if model and events_max:
        share = model["ours_deliveries_per_second"] / model["model_deliveries_per_second"]
        # Issue 17 made the model's broker hops batched; the old one stays beside it.
        old_rate = model.get("unbatched_model_deliveries_per_second")
        old_cpu = model.get("unbatched_model_cpu_seconds_per_1000")
        rows.append((
            "events, max rate, 1 dispatcher",
            f"{model['ours_deliveries_per_second']:,.0f}/s = {share:.0%} of the model "
            f"({model['model_deliveries_per_second']:,.0f}/s)"
            + (
                f"; {model['ours_deliveries_per_second'] / old_rate:.0%} of the unbatched one ({old_rate:,.0f}/s)"
                if old_rate
                else ""
            ),
            ">= 85 % of the model",
            share >= 0.85,
            f"{model['ours_deliveries_per_second']:,.0f}/s = {share:.0%}",
        ))
        rows.append((
            "CPU per delivery, all processes",
            f"{model['ours_cpu_seconds_per_1000']:.3f} CPU s/1,000 = {model['cpu_multiple']:.2f}x "
            f"the model ({model['model_cpu_seconds_per_1000']:.3f})"
            + (
                f"; {model['ours_cpu_seconds_per_1000'] / old_cpu:.2f}x the unbatched one ({old_cpu:.3f})"
                if old_cpu
                else ""
            ),
            "<= 1.1x the model",
            model["cpu_multiple"] <= 1.1,
            f"{model['cpu_multiple']:.2f}x",
        ))
    for share in ("max", "50", "25"):
        phase = scenario(report, "events", share)
        if phase:
            value = cpu(phase, "rabbitmq")
            half = RABBITMQ_BASELINE[share] / 2
            rows.append((
                f"RabbitMQ CPU s/1,000, events at {share if share == 'max' else share + ' %'}",
                f"{value:.3f} (issue's run: {RABBITMQ_BASELINE[share]:.3f})",
                f"<= {half:.3f}",
                value <= half,
                f"{value:.3f}",
            ))
    submissions = scenario(report, "submissions", "max")
    if submissions:
        rows.append((
            "submissions through the api, max rate",
            f"{submissions['deliveries_per_second']:,.0f}/s; PostgreSQL {cpu(submissions, 'postgresql'):.3f}, "
            f"api {cpu(submissions, 'fp-api'):.3f} CPU s/1,000",
            ">= 2,500/s; PostgreSQL <= 0.25",
            submissions["deliveries_per_second"] >= 2500 and cpu(submissions, "postgresql") <= 0.25,
            f"{submissions['deliveries_per_second']:,.0f}/s; {cpu(submissions, 'postgresql'):.3f}",
        ))
    for source, limits in (("events", (8, 5)), ("submissions", (10, 6))):
        for share, limit in zip(("50", "25"), limits):
            phase = scenario(report, source, share)
            if phase:
                p99 = phase["latency"]["p99_ms"]
                rows.append((
                    f"e2e p99, {source} at {share} % of max",
                    f"{p99:.1f} ms (at {phase['deliveries_per_second']:,.0f}/s; p50 "
                    f"{phase['latency']['p50_ms']:.1f} ms)",
                    f"< {limit} ms",
                    p99 < limit,
                    f"{p99:.1f}",
                ))
    # The yardsticks of the p99 targets, measured in the same run at the 50 % events pace.
    for limit in report.get("limits", []):
        for prefix, what in (("rabbitmq one hop at ", "one bare broker hop"), ("postgresql commit at ", "one durable commit")):
            if limit["name"].startswith(prefix) and limit.get("latency"):
                rate = limit["name"][len(prefix):]
                rows.append((
                    f"{what} at {rate}, p99 (p50)",
                    f"{limit['latency']['p99_ms']:.1f} ({limit['latency']['p50_ms']:.1f}) ms",
                    "-",
                    None,
                    f"{limit['latency']['p99_ms']:.1f}",
                ))
    return rows


def one_run(report):
    print("| figure | this run | target | met? |")
    print("|---|---|---|---|")
    for figure, value, target, met, _ in rows_of(report):
        print(f"| {figure} | {value} | {target} | {'-' if met is None else 'yes' if met else 'no'} |")


def side_by_side(paths, reports):
    """A row a run, named by its JSON and machine, under a row of the targets; a met target in
    bold. The columns are the figures in the order they first appear; a run without one (an older
    JSON) shows a dash."""
    targets, rows = {}, []
    for report in reports:
        row = {}
        for figure, _, target, met, short in rows_of(report):
            # The yardsticks' rate differs from run to run: one column for each kind.
            key = figure.split(" at ")[0] + ", p99 ms" if met is None else figure
            targets.setdefault(key, target)
            row[key] = f"**{short}**" if met else short
        rows.append(row)
    print("| run | " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    print("| target | " + " | ".join(targets.values()) + " |")
    for path, report, row in zip(paths, reports, rows):
        machine = report["machine"]["cpu_model"].replace("(R)", "").removesuffix(" Processor")
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
        print(f"| {name} ({machine}) | " + " | ".join(row.get(key, "-") for key in targets) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reports = [json.load(open(path)) for path in sys.argv[1:]]
    if len(reports) == 1:
        one_run(reports[0])
    else:
        side_by_side(sys.argv[1:], reports)
