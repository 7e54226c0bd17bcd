"""msgkit messages <-> AMQP: routing key, properties and headers.

Out: key -> routing key; headers -> AMQP headers (strings); id -> `message_id`;
timestamp -> `timestamp` (whole seconds, AMQP's resolution); content-type header ->
`content_type`; delivery mode 2 (persistent) for confirmed publishing.
In: the same, plus the attempt: `msgkit-attempt` (copies made by `redeliver`) plus the
broker's own redeliveries (quorum `x-delivery-count` / `x-acquired-count`, or classic
`redelivered`).
Copies made by `redeliver` also carry the route the message was first published with
(`msgkit-rabbitmq-exchange` / `-routing-key`): the copy's own route is the default exchange
and the group queue, which says nothing about where it came from. `Delivery.origin` reports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from msgkit import headers as h
from msgkit.message import Message, Outgoing, attempt_of

KEY_HEADER = "msgkit-key"
"""Carries the key where the routing key cannot: copies sent to a queue by `redeliver`
(the routing key is then the queue name), keys over 255 bytes, and the empty key."""

FIRST_EXCHANGE = "msgkit-rabbitmq-exchange"
"""On a copy: the exchange the message was first published to."""
FIRST_ROUTING_KEY = "msgkit-rabbitmq-routing-key"
"""On a copy: the routing key the message was first published with."""
RETRIED_IN = "x-first-death-queue"
"""Set by the broker on a delayed copy: the retry queue whose TTL brought it back."""

_MAX_ROUTING_KEY = 255
# Broker annotations and this adapter's own headers: not the user's headers, never shown to
# the handler, and never sent back on a copy as they are.
_BROKER_HEADERS = frozenset({
    "x-death", "x-delivery-count", "x-first-death-exchange", "x-first-death-queue",
    "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
    "x-last-death-reason", "x-acquired-count", KEY_HEADER, FIRST_EXCHANGE, FIRST_ROUTING_KEY,
})

_stamp: tuple[int, datetime] = (0, datetime.fromtimestamp(0, UTC))


def _timestamp(seconds: float) -> datetime:
    global _stamp
    whole = int(seconds)
    if _stamp[0] != whole:  # one datetime per second, not per message
        _stamp = (whole, datetime.fromtimestamp(whole, UTC))
    return _stamp[1]


def routing_key(key: str | None) -> tuple[str, str | None]:
    """The routing key for `key`, and the key header to add (None if not needed)."""
    if key is None:
        return "", None
    if key and (len(key) <= 63 or len(key.encode()) <= _MAX_ROUTING_KEY):
        return key, None
    if not key:
        return "", ""
    return hashlib.sha256(key.encode()).hexdigest(), key


def properties(
    out: Outgoing, *, persistent: bool, key_header: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Basic.Properties:
    hdrs: dict[str, Any] = dict(out.headers if headers is None else headers)
    if key_header is not None:
        hdrs[KEY_HEADER] = key_header
    return Basic.Properties(
        content_type=hdrs.get(h.CONTENT_TYPE),
        headers=hdrs,
        delivery_mode=2 if persistent else 1,
        message_id=out.id,
        timestamp=_timestamp(out.timestamp),
    )


def first_route(incoming: AbstractIncomingMessage) -> tuple[str, str]:
    """(exchange, routing key) the message was first published with, through every copy."""
    raw = incoming.headers
    exchange, key = _text(raw.get(FIRST_EXCHANGE)), _text(raw.get(FIRST_ROUTING_KEY))
    if exchange is not None and key is not None:
        return exchange, key
    return incoming.exchange or "", incoming.routing_key or ""


def retried_in(incoming: AbstractIncomingMessage) -> str | None:
    """The retry queue a delayed copy waited in (None for anything else)."""
    if FIRST_EXCHANGE not in incoming.headers:
        return None  # not a copy: a dead-lettering by the user's own topology
    return _text(incoming.headers.get(RETRIED_IN))


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def to_message(topic: str, incoming: AbstractIncomingMessage) -> Message:
    raw = incoming.headers
    headers: Mapping[str, str] = raw  # type: ignore[assignment]
    count: object = None
    key: str | None = None
    for name, value in raw.items():
        if type(value) is not str or name in _BROKER_HEADERS:
            headers, count, key = _clean(raw)
            break
    if key is None and incoming.exchange == topic:
        key = incoming.routing_key or None
    attempt = attempt_of(headers.get(h.ATTEMPT))
    if type(count) is int:
        attempt += count
    elif incoming.redelivered:
        attempt += 1
    stamp = incoming.timestamp
    return Message.from_wire(
        topic, incoming.body, key, headers,
        timestamp=stamp.timestamp() if stamp is not None else 0.0,
        fallback_id=incoming.message_id or "", attempt=attempt, native=incoming,
    )


def _clean(raw: Mapping[str, Any]) -> tuple[dict[str, str], object, str | None]:
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if name in _BROKER_HEADERS:
            continue
        if isinstance(value, str):
            headers[name] = value
        elif isinstance(value, bytes):
            headers[name] = value.decode("utf-8", "replace")
        elif isinstance(value, datetime):
            headers[name] = value.isoformat()
        elif isinstance(value, (bool, int, float)):
            headers[name] = str(value)
        # arrays and tables from other producers have no str form msgkit could promise
    key = raw.get(KEY_HEADER)
    # 3.x counts every return in x-delivery-count; 4.x counts failed deliveries there and
    # every return in x-acquired-count (4.3+).
    counts = [c for c in (raw.get("x-delivery-count"), raw.get("x-acquired-count"))
              if type(c) is int]
    return headers, max(counts) if counts else None, key if isinstance(key, str) else None
