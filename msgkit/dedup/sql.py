"""What the SQL stores and the outbox share: table names checked before they go into
statements."""

from __future__ import annotations

import re

from msgkit.errors import ConfigurationError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str) -> str:
    """`name` if it is a plain SQL identifier (letters, digits, underscores); else raises."""
    if not _IDENTIFIER.match(name):
        raise ConfigurationError(
            f"{name!r} is not a valid SQL table or schema name: use letters, digits and "
            "underscores, starting with a letter or underscore, at most 63 characters"
        )
    return name
