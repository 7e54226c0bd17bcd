"""Kafka records <-> msgkit messages, and the headers only this adapter reads."""

from __future__ import annotations

import time
from typing import Any

from msgkit.headers import MESSAGE_ID
from msgkit.message import Message

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
    raw = record.headers()
    headers: dict[str, str] = {}
    if raw:
        for k, v in raw:  # a plain loop: a comprehension costs a function call (Python 3.11)
            headers[k] = v.decode("utf-8", "replace") if v is not None else ""
    topic: str = record.topic()
    if retried:
        topic = headers.get(ORIGINAL_TOPIC) or topic
        for name in _INTERNAL:
            headers.pop(name, None)
    key = record.key()
    kind, stamp = record.timestamp()
    return Message.from_wire(
        topic,
        record.value() or b"",
        key.decode("utf-8", "replace") if key is not None else None,
        headers,
        timestamp=stamp / 1000 if kind and stamp > 0 else time.time(),
        fallback_id="" if MESSAGE_ID in headers
        else f"{record.topic()}-{record.partition()}-{record.offset()}",
        native=record,
    )
