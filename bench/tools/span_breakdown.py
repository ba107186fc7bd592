#!/usr/bin/env python3
"""Where a delivery's time goes, phase by phase, from the spans the services exported during an
fp-bench run.

    span_breakdown.py <fp-bench JSON> <timings file of fp-otlp-receiver>

Run the receiver with a timings file (`fp-otlp-receiver 127.0.0.1:47318 http/protobuf
spans.jsonl`) and the bench with the services exporting every span to it (the `OTEL_` variables in
bench/README.md). Each phase's window (`window_unix_ns` in the JSON) picks the dispatcher's
`process` spans that started in it; each one is cut into stages at its children:

  consumed -> record handed over   decoding, the config lookup (and, before the first attempt's
                                   claim carried its pending row, that claim)
  record handed over -> POST       the pending record's batch, publish and confirm; for a first
                                   attempt, its claim, which stores the pending row with it
  POST                             the HTTPS request, until the response
  POST end -> process end          the outcome: for a first attempt (or a copy's taken send) its
                                   linger and statement, else its record's confirm; then the ack

For submissions, whose traces start at the api's request, three more stages come before it:

  api request                      the request, including the group commit
  request end -> relay publish     until the outbox relay picked the event up
  relay publish -> consumed        the publish, its confirm and the broker's hop to the dispatcher

The events phases' broker hop (publish to consume) is not in any span: the load generator
publishes without one. Its share is the bench's end-to-end figure less the stages above.
"""

import json
import sys
from collections import defaultdict


def percentile(values, share):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load_spans(path):
    spans = {}
    children = defaultdict(list)
    for line in open(path):
        span = json.loads(line)
        spans[span["span"]] = span
        if span["parent"]:
            children[span["parent"]].append(span)
    return spans, children


def stages_of(process, spans, children):
    """The stages of one `process` span, in ms; None when it lacks a POST (not an attempt)."""
    kids = children.get(process["span"], [])
    posts = [kid for kid in kids if kid["name"] == "POST"]
    # The pending record is handed over to the broker (`create`), or to the database with the
    # first attempt's claim.
    creates = sorted(
        (
            kid
            for kid in kids
            if kid["name"].startswith("create ") or kid["name"] == "INSERT delivery_claims"
        ),
        key=lambda kid: kid["start"],
    )
    if not posts or not creates:
        return None
    post = posts[0]
    ms = 1e-6
    stages = {
        "consumed -> record handed over": (creates[0]["start"] - process["start"]) * ms,
        "record handed over -> POST": (post["start"] - creates[0]["start"]) * ms,
        "POST": (post["end"] - post["start"]) * ms,
        "POST end -> process end": (process["end"] - post["end"]) * ms,
    }
    relay = spans.get(process["parent"])
    request = spans.get(relay["parent"]) if relay else None
    if relay and request and relay["service"] == "fp-api" and request["service"] == "fp-api":
        stages = {
            "api request": (request["end"] - request["start"]) * ms,
            "request end -> relay publish": (relay["start"] - request["end"]) * ms,
            "relay publish -> consumed": (process["start"] - relay["start"]) * ms,
            **stages,
        }
    stages["total in spans"] = sum(stages.values())
    stages["sent -> POST (in spans)"] = stages["total in spans"] - stages["POST"] - stages[
        "POST end -> process end"
    ]
    return stages


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report = json.load(open(sys.argv[1]))
    spans, children = load_spans(sys.argv[2])
    processes = sorted(
        (
            span
            for span in spans.values()
            if span["service"] == "fp-dispatcher" and span["name"].startswith("process ")
        ),
        key=lambda span: span["start"],
    )
    for scenario in report["scenarios"]:
        window = scenario.get("window_unix_ns")
        if not window:
            continue
        rows = [
            stages
            for process in processes
            if window[0] <= process["start"] <= window[1]
            for stages in [stages_of(process, spans, children)]
            if stages is not None
        ]
        latency = scenario["latency"]
        print(f"\n### {scenario['name']}\n")
        print(
            f"{len(rows)} attempts with spans; end to end (bench): p50 {latency['p50_ms']:.1f} ms, "
            f"p99 {latency['p99_ms']:.1f} ms\n"
        )
        if not rows:
            continue
        print("| stage | p50 ms | p90 ms | p99 ms | mean ms |")
        print("|---|---|---|---|---|")
        for stage in rows[0]:
            values = [row[stage] for row in rows if stage in row]
            print(
                f"| {stage} | {percentile(values, 0.5):.2f} | {percentile(values, 0.9):.2f} | "
                f"{percentile(values, 0.99):.2f} | {sum(values) / len(values):.2f} |"
            )
        # What the slowest attempts (by the time before their POST) waited on.
        slowest = sorted(rows, key=lambda row: row["sent -> POST (in spans)"])[
            -max(1, len(rows) // 100) :
        ]
        waits = [
            stage
            for stage in rows[0]
            if stage not in ("total in spans", "sent -> POST (in spans)", "POST", "POST end -> process end")
        ]
        print(
            "\nThe slowest 1 % before their POST, mean ms per stage: "
            + ", ".join(
                f"{stage} {sum(row[stage] for row in slowest) / len(slowest):.2f}"
                for stage in waits
            )
        )


if __name__ == "__main__":
    main()
