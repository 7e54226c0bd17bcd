"""Names and declarations: topic -> exchange, group -> queue, delay -> retry queue.

    topic "orders"            durable topic exchange "orders"
    group "billing"           durable queue "orders.billing" bound to it with "#"
                              (quorum by default; `x-single-active-consumer` when ordered)
    group None                exclusive auto-delete queue "orders@<random>" ('@' is never in
                              a topic or group name, so it cannot clash with a group queue)
    redeliver(delay=0.5)      durable queue "orders.billing.retry.500": x-message-ttl=500,
                              dead-lettered to "" / "orders.billing" (no plugin needed)

Every declaration is idempotent; `track` lets the test kit delete what a session created.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from msgkit.errors import InvalidTopicError
from msgkit_rabbitmq.settings import Settings

MAX_NAME = 255
RETRY_SUFFIX_ROOM = len(".retry.") + 10  # milliseconds take at most 10 digits
MAX_QUEUE = MAX_NAME - RETRY_SUFFIX_ROOM

_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")

track: Callable[[str, str], None] | None = None
"""Set by the test kit: called with ("exchange" | "queue", name) on each declaration."""


def validate(name: str) -> None:
    """The naming rule for topics and groups: checked before any network call."""
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise InvalidTopicError(
            f"topic or group {name!r} is invalid for RabbitMQ: use 1-255 letters, digits, "
            "'.', '_', ':' or '-' (it names an exchange or a queue)"
        )
    if name.startswith("amq."):
        raise InvalidTopicError(
            f"topic or group {name!r} starts with 'amq.', which RabbitMQ reserves; rename it"
        )
    if name in (".", ".."):
        raise InvalidTopicError(f"topic or group {name!r} is invalid: use a real name")


def group_queue(topic: str, group: str) -> str:
    name = f"{topic}.{group}"
    if len(name) > MAX_QUEUE:
        raise InvalidTopicError(
            f"queue name {name!r} (<topic>.<group>) is {len(name)} characters; RabbitMQ allows "
            f"{MAX_NAME} and msgkit keeps {RETRY_SUFFIX_ROOM} for '.retry.<ms>', so shorten "
            f"the topic or the group to {MAX_QUEUE} together"
        )
    return name


def private_queue(topic: str) -> str:
    suffix = f"@{uuid.uuid4().hex[:12]}"
    return topic[: MAX_QUEUE - len(suffix)] + suffix


def retry_queue(queue: str, delay: float) -> tuple[str, int]:
    ms = max(1, round(delay * 1000))
    return f"{queue}.retry.{ms}", ms


def exchange_arguments(settings: Settings) -> dict[str, Any] | None:
    return dict(settings.exchange_arguments) or None


def group_arguments(
    settings: Settings, server_major: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    args: dict[str, Any] = {"x-queue-type": settings.queue_type}
    if settings.ordered_per_key:
        args["x-single-active-consumer"] = True
    if settings.queue_type == "quorum" and server_major >= 4:
        # RabbitMQ 4 drops a message after 20 requeues by default; msgkit counts attempts
        # itself and never loses a message, so keep 3.x's unlimited requeues.
        args["x-delivery-limit"] = -1
    args.update(settings.queue_arguments)
    if extra:
        args.update(extra)
    return args


def private_arguments(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"x-queue-type": "classic"}
    if extra:
        args.update(extra)
    return args


def retry_arguments(
    queue_type: str, queue: str, ms: int, *, private: bool
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "x-message-ttl": ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }
    if private:
        # Gone with the connection (exclusive) or after an idle minute; redeclared on demand.
        args.update({"x-queue-type": "classic", "x-expires": ms + 60_000})
    elif queue_type == "quorum":
        # At-least-once dead-lettering (3.10+) keeps a message until the group queue has it.
        args.update({
            "x-queue-type": "quorum",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        })
    else:
        args["x-queue-type"] = "classic"
    return args


def note(kind: str, name: str) -> None:
    if track is not None:
        track(kind, name)
