"""Turns what users pass to `send` into bytes plus headers, and checks headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core
from pydantic import BaseModel

from msgkit import headers as h
from msgkit.errors import SerializationError

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


def check_headers(headers: Mapping[Any, Any]) -> dict[str, str]:
    """Returns a copy of user headers; rejects non-string and reserved names with a clear error."""
    if not isinstance(headers, Mapping):
        raise SerializationError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise SerializationError(
                f"header {name!r}: {value!r} is not str -> str; convert names and values to str"
            )
        if name.lower().startswith(h.PREFIX):  # HTTP-style names are case-insensitive
            raise SerializationError(
                f"header {name!r} uses msgkit's reserved prefix {h.PREFIX!r}; rename it"
            )
        out[name] = value
    return out
