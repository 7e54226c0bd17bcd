"""Message payloads as AsyncAPI messages: a name, a content type and a JSON schema."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from msgkit import headers as h

SCHEMAS = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Payload:
    name: str
    content_type: str
    schema: dict[str, Any]
    """The payload's schema, a `$ref` into `definitions` for a named type."""
    definitions: dict[str, dict[str, Any]]


def payload(kind: Any, name: str | None = None) -> Payload:
    """`kind` as the handler or declaration gave it: None (any bytes), bytes, str, or a type
    pydantic describes (a model, a dataclass, a TypedDict, `list[int]`, ...). `name`: its
    schema's name, when its own is taken by another type."""
    if kind is None or kind is bytes:
        return Payload("Bytes", "application/octet-stream", {"type": "string", "format": "binary"},
                       {})
    if kind is str:
        return Payload("Text", h.TEXT, {"type": "string"}, {})
    schema = TypeAdapter(kind).json_schema(ref_template=SCHEMAS, mode="serialization")
    definitions: dict[str, dict[str, Any]] = schema.pop("$defs", {})
    name = name or _name(kind)
    if isinstance(kind, type):
        definitions[name] = schema
        schema = {"$ref": SCHEMAS.format(model=name)}
    return Payload(name, h.JSON, schema, definitions)


def component_key(text: str) -> str:
    """`text` as an AsyncAPI component or channel key (letters, digits, `.`, `-`, `_`)."""
    return re.sub(r"[^\w.\-]+", "_", text).strip("_") or "_"


def _name(kind: Any) -> str:
    return component_key(kind.__name__ if isinstance(kind, type) else repr(kind))
