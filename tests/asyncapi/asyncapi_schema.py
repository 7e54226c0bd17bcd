"""The official AsyncAPI 3.0.0 JSON schema (`schemas/3.0.0-without-$id.json` of the npm
package @asyncapi/specs 6.11.1, Apache-2.0), and checks of a document against it."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = Path(__file__).with_name("asyncapi-3.0.0.schema.json.gz")


@cache
def validator() -> Any:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    return jsonschema.validators.validator_for(schema)(schema)


def errors(document: dict[str, Any]) -> list[str]:
    """What the official schema finds wrong, plus every `$ref` that points nowhere (the
    schema checks their form, not their targets)."""
    found = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
             for e in validator().iter_errors(document)]
    return found + [f"unresolved $ref {ref}" for ref in refs(document)
                    if not resolves(document, ref)]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolves(document: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def payload_errors(document: dict[str, Any], message: dict[str, Any], value: Any) -> list[str]:
    """What is wrong with `value` as the payload of `message` (a components message)."""
    schema = {**message["payload"], "components": document["components"]}
    checker = jsonschema.Draft202012Validator(schema)
    return [e.message for e in checker.iter_errors(value)]
