"""A dead-letter outage on any backend: publishes to `*.dlq` topics fail while it lasts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import msgkit
from msgkit.backend import Publisher
from msgkit.guarantee import Guarantee
from msgkit.message import Outgoing


class DeadLetterOutage:
    """Wraps every publisher `broker.backend` makes from now on; while `active`, a publish
    that includes a dead-letter topic raises `PublishError` (and counts in `refused`)."""

    def __init__(self, broker: msgkit.Broker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active = True
        self.refused = 0
        make = broker.backend.publisher

        async def publisher(guarantee: Guarantee, *, required_groups: Sequence[str] = (),
                            options: Mapping[str, Any]) -> Publisher:
            real = await make(guarantee, required_groups=required_groups, options=options)
            return _Refusing(real, self)

        monkeypatch.setattr(broker.backend, "publisher", publisher)


class _Refusing(Publisher):
    def __init__(self, real: Publisher, outage: DeadLetterOutage) -> None:
        self._real = real
        self._outage = outage

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self._outage.active and any(out.topic.endswith(".dlq") for out in messages):
            self._outage.refused += 1
            raise msgkit.PublishError("dead-letter topic unavailable", reason="injected outage")
        await self._real.publish(messages)

    async def publish_to_group(self, group: str, messages: Sequence[Outgoing]) -> None:
        await self._real.publish_to_group(group, messages)

    async def close(self) -> None:
        await self._real.close()

    @property
    def native(self) -> Any:
        return self._real.native
