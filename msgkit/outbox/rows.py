"""An encoded message as an outbox row and back, byte for byte.

The key is stored as bytes with a flag saying whether it was text; headers as JSON (a list
of [name, value] pairs, so order and repeated names survive), where a bytes value is
`{"b64": ...}` and text stays text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from multidict import MultiDict

from msgkit.message import NO_PROPERTIES, HeaderValue, Key, Outgoing

COLUMNS = ("message_id", "topic", "key", "key_is_text", "value", "headers", "created_at")
"""What `send` writes, in this order; the table adds `id`, `published_at`, `error`."""


class Pending(NamedTuple):
    """A row the relay holds: its id, the key it is ordered by, and the message."""

    id: int
    key: bytes | None
    message: Outgoing


def to_columns(out: Outgoing) -> tuple[Any, ...]:
    """The values of `COLUMNS` for `out`."""
    key, is_text = _key_bytes(out.key)
    return (out.id, out.topic, key, is_text, out.value, _headers_json(out.headers),
            out.timestamp)


def from_columns(row_id: int, message_id: str, topic: str, key: bytes | None, key_is_text: Any,
                 value: bytes, headers: str, created_at: float) -> Pending:
    key = bytes(key) if key is not None else None  # memoryview (psycopg) or bytes (sqlite)
    out_key: Key | None = key.decode() if key is not None and key_is_text else key
    message = Outgoing(topic, bytes(value), out_key, _headers(headers), message_id, created_at,
                       NO_PROPERTIES)
    return Pending(row_id, key, message)


def _key_bytes(key: Key | None) -> tuple[bytes | None, bool]:
    if key is None:
        return None, False
    return (key.encode(), True) if isinstance(key, str) else (key, False)


def _headers_json(headers: Mapping[str, HeaderValue]) -> str:
    pairs = [[name, {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v]
             for name, v in headers.items()]
    return json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))


def _headers(text: str) -> Mapping[str, HeaderValue]:
    pairs = [(name, base64.b64decode(v["b64"]) if isinstance(v, dict) else v)
             for name, v in json.loads(text)]
    names = {name for name, _ in pairs}
    return dict(pairs) if len(names) == len(pairs) else MultiDict(pairs)
