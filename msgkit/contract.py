"""What a service declares about itself beyond its subscribers: the messages it publishes.

Read by `msgkit asyncapi` to describe the service's contract; nothing else depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msgkit.handler import Handler


@dataclass(frozen=True, slots=True)
class Publication:
    """`payload` messages sent to `topic`: by `handler` when one is named, else by the
    service itself (e.g. through its outbox). `payload` None: any bytes."""

    topic: str
    payload: Any = None
    summary: str | None = None
    handler: Handler | None = None
