"""Turns what users pass to `send` into bytes plus headers, and checks headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import pydantic_core
from multidict import MultiDict
from pydantic import BaseModel

from msgkit import headers as h
from msgkit.errors import SerializationError
from msgkit.message import Key, text_or_bytes

SendValue: TypeAlias = str | bytes | None
SendHeaders: TypeAlias = Mapping[str, SendValue] | list[tuple[str, SendValue]]
"""Headers for `send`: a mapping, or a list of (name, value) pairs when a name repeats."""

SUPPORTED = "bytes, str, a dict or list (sent as JSON) or a pydantic model"


def encode(value: object) -> tuple[bytes, str | None]:
    """Returns the payload and its content type (None for raw bytes)."""
    if isinstance(value, bytes):
        return value, None
    if isinstance(value, str):
        return value.encode(), h.TEXT
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode(), h.JSON
    if isinstance(value, dict | list):
        try:
            return pydantic_core.to_json(value), h.JSON
        except pydantic_core.PydanticSerializationError as exc:
            raise SerializationError(f"value is not JSON-serialisable ({exc}); send {SUPPORTED}") from exc
    if isinstance(value, bytearray | memoryview):
        return bytes(value), None
    raise SerializationError(f"msgkit cannot send a value of type {type(value).__name__}; send {SUPPORTED}")


def check_key(key: object) -> Key | None:
    """A key as msgkit sends it: text, or bytes when it is not UTF-8 (bytes that are UTF-8
    become text, as every broker hands them back)."""
    if key is None or type(key) is str:
        return key
    if isinstance(key, bytes):
        return text_or_bytes(key)
    raise SerializationError(f"key must be str or bytes, not {type(key).__name__}")


def check_headers(headers: object) -> dict[str, SendValue] | MultiDict[SendValue]:
    """A checked copy of user headers (a dict, or a multi-dict when a name repeats); rejects
    other types and reserved names with a clear error."""
    if isinstance(headers, Mapping):
        pairs: Any = headers.items()
    elif isinstance(headers, list | tuple):
        pairs = headers
    else:
        raise SerializationError(
            f"headers must be a mapping of str to str, bytes or None (or a list of such pairs), "
            f"not {type(headers).__name__}"
        )
    out: dict[str, SendValue] = {}
    repeated: MultiDict[SendValue] | None = None
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise SerializationError(f"header {pair!r} is not a (name, value) pair")
        name, value = pair
        if not isinstance(name, str) or not (value is None or isinstance(value, str | bytes)):
            raise SerializationError(
                f"header {name!r}: {value!r} is not str -> str, bytes or None; convert it"
            )
        if name.lower().startswith(h.PREFIX):  # HTTP-style names are case-insensitive
            raise SerializationError(
                f"header {name!r} uses msgkit's reserved prefix {h.PREFIX!r}; rename it"
            )
        if name in out and repeated is None:
            repeated = MultiDict(out)
        if repeated is not None:
            repeated.add(name, value)
        else:
            out[name] = value
    return out if repeated is None else repeated
