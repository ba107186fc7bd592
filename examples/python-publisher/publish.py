#!/usr/bin/env python3
"""Publishes one FeedbackPulse event to RabbitMQ as docs/publishing-events.md describes, and exits
0 only once the broker has confirmed it.

`feedbackpulse.v1.events_pb2` is generated from proto/feedbackpulse/v1/events.proto (README.md).

    AMQP_URL=amqp://guest:guest@localhost:5672/%2f python publish.py \\
        --tenant-id 0190c6a2-0000-7000-8000-000000000001 --event-type submission.created \\
        --submission-id 42 --campaign-id 1 --star-rating 5 --text-feedback "Love it" \\
        --status pending
"""

import argparse
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pika
import pika.exceptions
from feedbackpulse.v1 import events_pb2

EVENTS_EXCHANGE = "fp.events"
# The AMQP `type` of every event message: the schema of its body, not the event type.
MESSAGE_TYPE = "feedbackpulse.v1.EventEnvelope"
STATUSES = ("pending", "approved", "rejected", "archived")
SUBMISSION_FIELDS = ["submission_id", "campaign_id", "star_rating", "text_feedback", "status"]
# The arguments each event type needs; the routing key is the event type. (`webhook.test` is the
# dashboard's own: other services never publish it.)
EVENT_TYPES = {
    "submission.created": SUBMISSION_FIELDS,
    "submission.status_changed": SUBMISSION_FIELDS + ["previous_status"],
}


class PublishError(Exception):
    """The broker did not confirm the event; the message says why."""


def uuid7() -> str:
    """A new time-ordered UUIDv7, the form of an event id."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def build_envelope(args: argparse.Namespace) -> events_pb2.EventEnvelope:
    envelope = events_pb2.EventEnvelope(
        id=args.event_id, tenant_id=args.tenant_id, event_type=args.event_type
    )
    envelope.occurred_at.FromDatetime(args.occurred_at)
    submission = events_pb2.Submission(
        id=args.submission_id,
        campaign_id=args.campaign_id,
        star_rating=args.star_rating,
        text_feedback=args.text_feedback,
        customer_name=args.customer_name,  # optional: None leaves it absent
        status=args.status,
    )
    if args.event_type == "submission.created":
        envelope.submission_created.submission.CopyFrom(submission)
    else:
        envelope.submission_status_changed.submission.CopyFrom(submission)
        envelope.submission_status_changed.previous_status = args.previous_status
    return envelope


def publish(
    amqp_url: str,
    exchange: str,
    envelope: events_pb2.EventEnvelope,
    traceparent: str | None = None,
    attempts: int = 5,
) -> None:
    """Returns once the broker has confirmed the event; raises PublishError otherwise.

    A failed or lost connection is tried again with the same message id: if the event did arrive
    before the connection broke, the dispatcher drops the second copy as a duplicate.
    """
    try:
        if urlsplit(amqp_url).scheme not in ("amqp", "amqps"):
            raise ValueError("it must start with amqp:// or amqps://")
        parameters = pika.URLParameters(amqp_url)
    except ValueError as error:
        raise PublishError(f"{without_password(amqp_url)} is not an AMQP URL: {error}") from error
    # A broker short of memory or disk blocks publishers: give up on that connection and retry.
    parameters.blocked_connection_timeout = 30
    properties = pika.BasicProperties(
        message_id=envelope.id,  # the dispatcher deduplicates on it
        content_type="application/x-protobuf",
        type=MESSAGE_TYPE,
        delivery_mode=pika.DeliveryMode.Persistent,
        headers={"traceparent": traceparent} if traceparent else None,
    )
    body = envelope.SerializeToString()
    for attempt in range(1, attempts + 1):
        try:
            with pika.BlockingConnection(parameters) as connection:
                channel = connection.channel()
                channel.confirm_delivery()
                # Returns once the broker has the event, raises otherwise. Mandatory: an event
                # no queue takes comes back (UnroutableError) instead of vanishing.
                channel.basic_publish(
                    exchange, envelope.event_type, body, properties, mandatory=True
                )
            return
        except (
            pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.ProbableAccessDeniedError,
        ) as error:
            raise PublishError(
                f"RabbitMQ at {without_password(amqp_url)} refused the connection: "
                f"{describe(error)}"
            ) from error
        except pika.exceptions.UnroutableError as error:
            raise PublishError(
                f"no queue is bound to exchange {exchange!r} for routing key "
                f"{envelope.event_type!r}: the broker returned the event"
            ) from error
        except pika.exceptions.NackError as error:
            raise PublishError(f"RabbitMQ refused the event (nack) on {exchange!r}") from error
        except pika.exceptions.ChannelClosedByBroker as error:
            raise PublishError(
                f"RabbitMQ refused the publish ({error.reply_code}): {error.reply_text}"
            ) from error
        except (pika.exceptions.AMQPConnectionError, OSError) as error:
            if attempt == attempts:
                raise PublishError(
                    f"cannot reach RabbitMQ at {without_password(amqp_url)} "
                    f"(attempts: {attempts}): {describe(error)}"
                ) from error
            delay = min(0.5 * 2 ** (attempt - 1), 5.0)
            print(f"connection failed ({describe(error)}); retry in {delay} s", file=sys.stderr)
            time.sleep(delay)


def describe(error: Exception) -> str:
    # Some of pika's errors have no text of their own and carry their cause as arguments.
    return str(error) or "; ".join(map(repr, error.args)) or type(error).__name__


def without_password(amqp_url: str) -> str:
    """The URL as it may be printed."""
    parts = urlsplit(amqp_url)
    if parts.password is None:
        return amqp_url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def uuid_text(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"not a time with a zone (2024-03-15T10:30Z): {text!r}")
    return moment


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Publish one FeedbackPulse event to RabbitMQ.")
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL"), help="default: $AMQP_URL")
    parser.add_argument("--exchange", default=EVENTS_EXCHANGE, help=f"default: {EVENTS_EXCHANGE}")
    parser.add_argument("--attempts", type=int, default=5, help="connection attempts (default: 5)")
    parser.add_argument("--traceparent", help="W3C trace context of the work that publishes")
    parser.add_argument("--tenant-id", type=uuid_text, required=True)
    parser.add_argument("--event-type", choices=EVENT_TYPES, required=True)
    parser.add_argument("--event-id", type=uuid_text, default=uuid7(), help="default: a new UUIDv7")
    parser.add_argument(
        "--occurred-at",
        type=aware_time,
        default=datetime.now(timezone.utc),
        help="ISO 8601 with a time zone (default: now)",
    )
    submission = parser.add_argument_group("submission events")
    submission.add_argument("--submission-id", type=int)
    submission.add_argument("--campaign-id", type=int)
    submission.add_argument("--star-rating", type=int)
    submission.add_argument("--text-feedback")
    submission.add_argument("--customer-name")
    submission.add_argument("--status", choices=STATUSES)
    submission.add_argument("--previous-status", choices=STATUSES)
    args = parser.parse_args(argv)
    if not args.amqp_url:
        parser.error("give --amqp-url or set AMQP_URL")
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    needed = EVENT_TYPES[args.event_type]
    missing = ["--" + name.replace("_", "-") for name in needed if getattr(args, name) is None]
    if missing:
        parser.error(f"{args.event_type} needs {', '.join(missing)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_arguments(argv)
    envelope = build_envelope(args)
    try:
        publish(args.amqp_url, args.exchange, envelope, args.traceparent, args.attempts)
    except PublishError as error:
        print(f"error: event {envelope.id} was not published: {error}", file=sys.stderr)
        return 1
    print(f"published {envelope.event_type} event {envelope.id} to {args.exchange}: confirmed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
