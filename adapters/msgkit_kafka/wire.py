"""Kafka records <-> msgkit messages, and the headers only this adapter reads."""

from __future__ import annotations

import time
from typing import Any

from msgkit.headers import ATTEMPT, IDEMPOTENCY_KEY, MESSAGE_ID
from msgkit.message import Message, attempt_of

DUE_AT = "msgkit-kafka-due-at"
"""On a copy in a retry topic: epoch seconds before which it must not be handled."""
ORIGINAL_TOPIC = "msgkit-kafka-topic"
"""On a copy in a retry topic: the topic the handler sees."""
ORIGINAL_PARTITION = "msgkit-kafka-partition"
ORIGINAL_OFFSET = "msgkit-kafka-offset"
"""On a copy in a retry topic: where the message was first stored (for dead letters)."""
_INTERNAL = (DUE_AT, ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)


def first_stored(record: Any) -> tuple[str, str]:
    """(partition, offset) where a record's message was first stored: its own, or for a
    retry copy the original's, carried in its headers."""
    found = dict.fromkeys((ORIGINAL_PARTITION, ORIGINAL_OFFSET), "")
    if record.topic().endswith(".retry"):
        for k, v in record.headers() or ():
            if k in found and v:
                found[k] = v.decode()
    return (found[ORIGINAL_PARTITION] or str(record.partition()),
            found[ORIGINAL_OFFSET] or str(record.offset()))


def due_at(record: Any) -> float:
    """The due time of a retry-topic record (0 when it has none)."""
    for k, v in record.headers() or ():
        if k == DUE_AT and v:
            try:
                return float(v)
            except ValueError:
                return 0.0
    return 0.0


def to_message(record: Any, retried: bool) -> Message:
    """A msgkit message from a confluent-kafka record; `retried`: it comes from a retry topic."""
    if not retried:
        msg = _new(KafkaMessage)
        _NATIVE(msg, record)
        return msg
    headers = _headers(record)
    topic: str = headers.get(ORIGINAL_TOPIC) or record.topic()
    for name in _INTERNAL:
        headers.pop(name, None)
    key = record.key()
    return Message.from_wire(
        topic,
        record.value() or b"",
        key.decode("utf-8", "replace") if key is not None else None,
        headers,
        timestamp=_timestamp(record),
        fallback_id="" if MESSAGE_ID in headers else _coordinates(record),
        native=record,
    )


class KafkaMessage(Message):
    """A message read from a Kafka topic (not a retry copy), decoded from its record on
    first use: most of receiving a message was building it, and many handlers read only
    its value, or nothing at all.

    Unset slots raise AttributeError, which Python turns into a `__getattr__` call that
    fills a group of them: topic, value and key together; the headers and what msgkit
    reads from them (id, idempotency key, attempt) with the timestamp. After that every
    field is a plain slot read."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        record = self.native  # only a message built by to_message has unset fields
        if name in _BODY:
            key = record.key()
            _TOPIC(self, record.topic())
            _VALUE(self, record.value() or b"")
            _KEY(self, key.decode("utf-8", "replace") if key is not None else None)
        elif name in _FROM_HEADERS:
            headers = _headers(record)
            attempt = attempt_of(headers.get(ATTEMPT))
            message_id = headers.get(MESSAGE_ID) or _coordinates(record)
            stamp = _timestamp(record)
            _HEADERS(self, headers)  # all computed first: a failure above sets nothing
            _ID(self, message_id)
            _IDEMPOTENCY_KEY(self, headers.get(IDEMPOTENCY_KEY))
            _ATTEMPT(self, attempt)
            _TIMESTAMP(self, stamp)
        else:
            raise AttributeError(name)
        return getattr(self, name)


def _headers(record: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    raw = record.headers()
    if raw:
        for k, v in raw:  # a plain loop: a comprehension costs a function call (Python 3.11)
            headers[k] = v.decode("utf-8", "replace") if v is not None else ""
    return headers


def _timestamp(record: Any) -> float:
    kind, stamp = record.timestamp()
    return stamp / 1000 if kind and stamp > 0 else time.time()


def _coordinates(record: Any) -> str:
    """The id of a message sent without one (by another client): where Kafka stored it."""
    return f"{record.topic()}-{record.partition()}-{record.offset()}"


_new = object.__new__
_BODY = frozenset(("topic", "value", "key"))
_FROM_HEADERS = frozenset(("headers", "id", "idempotency_key", "attempt", "timestamp"))
_TOPIC, _VALUE, _KEY, _HEADERS, _ID, _IDEMPOTENCY_KEY, _ATTEMPT, _TIMESTAMP, _NATIVE = (
    Message.__dict__[name].__set__ for name in (
        "topic", "value", "key", "headers", "id", "idempotency_key", "attempt", "timestamp",
        "native"))
