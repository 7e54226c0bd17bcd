"""Kafka records <-> msgkit messages, and the headers only this adapter reads."""

from __future__ import annotations

import contextlib
import time
from dataclasses import fields
from typing import Any

from multidict import MultiDict

from msgkit.headers import ATTEMPT, IDEMPOTENCY_KEY, MESSAGE_ID
from msgkit.message import (
    NO_PROPERTIES,
    Headers,
    HeaderValue,
    Key,
    Message,
    Properties,
    attempt_of,
    text_of,
    text_or_bytes,
)

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
                found[k] = text_of(v) or ""
    return (found[ORIGINAL_PARTITION] or str(record.partition()),
            found[ORIGINAL_OFFSET] or str(record.offset()))


def due_at(record: Any) -> float:
    """The due time of a retry-topic record (0 when it has none)."""
    for k, v in record.headers() or ():
        if k == DUE_AT and v is not None:
            try:
                return float(v)
            except ValueError:
                return 0.0
    return 0.0


def to_message(record: Any, retried: bool) -> Message:
    """A msgkit message from a confluent-kafka record; `retried`: it comes from a retry topic."""
    if not retried:
        return new_message(record)
    headers = _headers(record)
    topic = text_of(headers.get(ORIGINAL_TOPIC)) or record.topic()
    for name in _INTERNAL:
        headers.popall(name, None)
    key = record.key()
    return Message.from_wire(
        topic,
        record.value() or b"",
        None if key is None else text_or_bytes(key),
        headers,
        timestamp=_timestamp(record),
        fallback_id="" if MESSAGE_ID in headers else _coordinates(record),
        native=record,
    )


def new_message(record: Any) -> Message:
    """The message of a record read from its own topic (not a retry copy)."""
    msg = _new(KafkaMessage)
    set_native(msg, record)  # the rest is read from the record when used
    return msg


class KafkaMessage(Message):
    """A message read from a Kafka topic (not a retry copy), backed by its record: most of
    receiving a message was building it, and many handlers read only its value.

    Its fields are read from the record when used (the client keeps topic, value and key
    as Python objects); the headers are decoded once, on first use of them or of a field
    msgkit reads from them (id, idempotency key, attempt). Built only by `to_message`;
    calling the class (as `dataclasses.replace` does) gives a plain `Message`."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Message:  # type: ignore[misc]
        return Message(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        """Copies and pickles are plain `Message`s, like `dataclasses.replace`'s."""
        return (Message, tuple(getattr(self, name) for name in _FIELDS))

    def __eq__(self, other: object) -> bool:
        """Equal to any `Message` with the same fields (the dataclass's own `__eq__`
        compares only messages of one class)."""
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _COMPARED)

    __hash__ = Message.__hash__

    @property
    def topic(self) -> str:
        return self.native.topic()  # type: ignore[no-any-return]

    @property
    def value(self) -> bytes:
        return self.native.value() or b""

    @property
    def key(self) -> Key | None:
        key = self.native.key()
        return None if key is None else text_or_bytes(key)

    @property
    def headers(self) -> Headers:
        try:
            return _GET_HEADERS(self)  # type: ignore[no-any-return]
        except AttributeError:  # first read: decoded once
            headers = _headers(self.native)
            _HEADERS(self, headers)
            return headers

    @property
    def id(self) -> str:
        return text_of(self.headers.get(MESSAGE_ID)) or _coordinates(self.native)

    @property
    def idempotency_key(self) -> str | None:
        return text_of(self.headers.get(IDEMPOTENCY_KEY))

    @property
    def attempt(self) -> int:
        return attempt_of(self.headers.get(ATTEMPT))

    @property
    def properties(self) -> Properties:
        return NO_PROPERTIES

    @property
    def timestamp(self) -> float:
        try:
            return _GET_TIMESTAMP(self)  # type: ignore[no-any-return]
        except AttributeError:  # first read: kept, as a record without one falls back to now
            stamp = _timestamp(self.native)
            _TIMESTAMP(self, stamp)
            return stamp


def _headers(record: Any) -> MultiDict[HeaderValue]:
    """The record's headers in order, repeated and null ones included; values as text when
    they are UTF-8, else as the bytes themselves."""
    headers: MultiDict[HeaderValue] = MultiDict()
    raw = record.headers()
    if raw:
        add = headers.add
        for k, v in raw:  # a plain loop: a comprehension costs a function call (Python 3.11)
            if v is not None:
                with contextlib.suppress(UnicodeDecodeError):
                    v = v.decode()
            add(k, v)
    return headers


def _timestamp(record: Any) -> float:
    kind, stamp = record.timestamp()
    return stamp / 1000 if kind and stamp > 0 else time.time()


def _coordinates(record: Any) -> str:
    """The id of a message sent without one (by another client): where Kafka stored it."""
    return f"{record.topic()}-{record.partition()}-{record.offset()}"


_new = object.__new__
_slot = Message.__dict__.__getitem__
_HEADERS, _TIMESTAMP, set_native = (
    _slot(name).__set__ for name in ("headers", "timestamp", "native"))
_GET_HEADERS, _GET_TIMESTAMP = (_slot(name).__get__ for name in ("headers", "timestamp"))
_FIELDS = tuple(f.name for f in fields(Message))
_COMPARED = tuple(f.name for f in fields(Message) if f.compare)
