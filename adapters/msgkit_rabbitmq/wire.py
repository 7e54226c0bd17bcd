"""msgkit messages <-> AMQP: routing key, properties and headers.

Out: key -> routing key; headers -> AMQP headers (`bytes` as byte arrays, other values as
the client encodes them); id -> `message_id`; timestamp -> `timestamp` (whole seconds, AMQP's
resolution); content-type header -> `content_type`; the message's `properties` (those of a
message received from another client) as they were; delivery mode 2 (persistent) for
confirmed publishing.
In: the same (header values as typed by the sender; byte arrays as `bytes`), the standard
properties other than those msgkit maps or decides per copy (`CARRIED`), plus the attempt:
`msgkit-attempt` (copies made by `redeliver`) plus the broker's own redeliveries (quorum
`x-delivery-count` / `x-acquired-count`, or classic `redelivered`).
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
from multidict import MultiDict
from pamqp.commands import Basic

from msgkit import headers as h
from msgkit.errors import SerializationError
from msgkit.message import (
    NO_PROPERTIES,
    HeaderValue,
    Key,
    Message,
    Outgoing,
    Properties,
    attempt_of,
    text_of,
    text_or_bytes,
)

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
CARRIED = ("content_type", "content_encoding", "priority", "correlation_id", "reply_to",
           "type", "app_id", "timestamp")
"""The standard properties a message's `properties` hold and its copies keep (`timestamp`
too: a dead letter is stamped when it is stored, but the property keeps the send time).
Not among them: `message_id` (the message's id), `delivery_mode` (each publish's guarantee
decides), `expiration` (a copy must not expire in a retry or dead-letter
queue) and `user_id` (the broker refuses it unless it names the publishing connection's user)."""
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


def routing_key(key: Key | None) -> tuple[str, HeaderValue | None]:
    """The routing key for `key`, and the key header to add (None if not needed): an empty,
    long or non-UTF-8 key travels whole in the header, its digest as the routing key."""
    if key is None:
        return "", None
    if isinstance(key, bytes):
        text = text_of(key)
        if text is None:
            return hashlib.sha256(key).hexdigest(), key
        key = text
    if key and (len(key) <= 63 or len(key.encode()) <= _MAX_ROUTING_KEY):
        return key, None
    if not key:
        return "", ""
    return hashlib.sha256(key.encode()).hexdigest(), key


def properties(
    out: Outgoing, *, persistent: bool, key_header: HeaderValue | None = None,
    headers: Mapping[str, HeaderValue] | None = None,
) -> Basic.Properties:
    hdrs = _table(out.headers if headers is None else headers)
    if key_header is not None:
        hdrs[KEY_HEADER] = _amqp(key_header)
    props = out.properties
    return Basic.Properties(
        content_type=props.get("content_type") or text_of(hdrs.get(h.CONTENT_TYPE)),
        content_encoding=props.get("content_encoding"),
        headers=hdrs,
        delivery_mode=2 if persistent else 1,
        priority=props.get("priority"),
        correlation_id=props.get("correlation_id"),
        reply_to=props.get("reply_to"),
        message_id=out.id or None,
        timestamp=props.get("timestamp") or (_timestamp(out.timestamp) if out.timestamp else None),
        message_type=props.get("type"),
        app_id=props.get("app_id"),
    ) if props else Basic.Properties(
        content_type=text_of(hdrs.get(h.CONTENT_TYPE)),
        headers=hdrs,
        delivery_mode=2 if persistent else 1,
        message_id=out.id or None,
        timestamp=_timestamp(out.timestamp) if out.timestamp else None,
    )


def _table(headers: Mapping[str, HeaderValue]) -> dict[str, Any]:
    """Headers as an AMQP table (the client sends only `bytearray` as bytes, a byte array)."""
    table: dict[str, Any] = {}
    for name, value in headers.items():
        if name in table:
            raise SerializationError(
                f"header {name!r} is given more than once; an AMQP message holds one value per "
                "header name: join the values or use distinct names"
            )
        table[name] = value if type(value) is str else _amqp(value)
    return table


def _amqp(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: _amqp(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_amqp(v) for v in value]
    return value


def first_route(incoming: AbstractIncomingMessage) -> tuple[str, str]:
    """(exchange, routing key) the message was first published with, through every copy."""
    raw = incoming.headers
    exchange, key = text_of(raw.get(FIRST_EXCHANGE)), text_of(raw.get(FIRST_ROUTING_KEY))
    if exchange is not None and key is not None:
        return exchange, key
    return incoming.exchange or "", incoming.routing_key or ""


def retried_in(incoming: AbstractIncomingMessage) -> str | None:
    """The retry queue a delayed copy waited in (None for anything else)."""
    if FIRST_EXCHANGE not in incoming.headers:
        return None  # not a copy: a dead-lettering by the user's own topology
    return text_of(incoming.headers.get(RETRIED_IN))


def to_message(topic: str, incoming: AbstractIncomingMessage) -> Message:
    raw = incoming.headers
    headers: MultiDict[HeaderValue] = MultiDict()
    add = headers.add
    count: object = None
    key: Key | None = None
    for name, value in raw.items():
        if type(value) is str:
            add(name, value)
        elif name in _BROKER_HEADERS:
            continue
        else:
            add(name, _python(value))
    annotated = _BROKER_HEADERS.intersection(raw)
    if annotated:
        for name in annotated:
            headers.popall(name, None)
        count, key = _annotations(raw)
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
        fallback_id=incoming.message_id or "", attempt=attempt,
        properties=_properties(incoming), native=incoming,
    )


def _python(value: Any) -> Any:
    """An AMQP field value as msgkit shows it: byte arrays (and long strings that are not
    UTF-8, which the client gives as bytes) as `bytes`, everywhere in tables and arrays."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


def _properties(incoming: AbstractIncomingMessage) -> Properties:
    found = {name: value for name in CARRIED if (value := getattr(incoming, name)) is not None}
    return found or NO_PROPERTIES


def _annotations(raw: Mapping[str, Any]) -> tuple[object, Key | None]:
    """The broker's redelivery count and the key this adapter put in a header."""
    key = raw.get(KEY_HEADER)
    # 3.x counts every return in x-delivery-count; 4.x counts failed deliveries there and
    # every return in x-acquired-count (4.3+).
    counts = [c for c in (raw.get("x-delivery-count"), raw.get("x-acquired-count"))
              if type(c) is int]
    if isinstance(key, bytes | bytearray):
        key = text_or_bytes(bytes(key))
    return max(counts) if counts else None, key if isinstance(key, str | bytes) else None
