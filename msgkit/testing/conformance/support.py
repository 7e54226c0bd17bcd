"""Shared pieces of the conformance contracts."""

from __future__ import annotations

import pytest

import msgkit
from msgkit.consumer import DLQ_GROUP
from msgkit.testing.collect import Collector

WAIT = 30.0
"""Generous deadline for anything crossing a real broker (group joins, redeliveries)."""


def requires(broker: msgkit.Broker, capability: str) -> None:
    if not getattr(broker.capabilities, capability):
        pytest.skip(f"backend does not declare capability {capability!r}")


def fast_retries(max_attempts: int = 3) -> msgkit.FailurePolicy:
    return msgkit.FailurePolicy(max_attempts=max_attempts, delays=(0.0,))


async def dead_letters(broker: msgkit.Broker, topic: str, group: str | None) -> Collector:
    """A collector of what `group` of `topic` dead-letters (read as the `dlq` group does)."""
    dead = Collector()
    dlq = msgkit.dead_letter_topic(topic, group)
    await broker.consumer(dlq, group=DLQ_GROUP, start="earliest").start(dead)
    return dead
