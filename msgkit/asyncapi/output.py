"""An AsyncAPI document as YAML or JSON text."""

from __future__ import annotations

import json
from typing import Any

from msgkit.errors import ConfigurationError

FORMATS = ("yaml", "json")


def render(document: dict[str, Any], fmt: str = "yaml") -> str:
    """`document` as YAML (needs PyYAML: the `asyncapi` extra) or JSON (`fmt="json"`)."""
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    if fmt != "yaml":
        raise ConfigurationError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    try:
        import yaml
    except ImportError:
        raise ConfigurationError("YAML output needs PyYAML: pip install 'msgkit[asyncapi]', "
                                 "or ask for JSON") from None

    class Plain(yaml.SafeDumper):
        """Writes a shared header schema out each time: readers need no YAML anchors."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None  # docstrings stay readable
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Plain.add_representer(str, text)
    written: str = yaml.dump(document, Dumper=Plain, sort_keys=False, allow_unicode=True)
    return written
