"""Shared pieces of the conformance contracts."""

from __future__ import annotations

import asyncio

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


async def stop_while_handling(consumer: msgkit.Consumer, release: asyncio.Event) -> None:
    """Stop `consumer` while its handler waits for `release`: stop() must wait for it."""
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)
    assert not stopping.done(), "stop() returned while a handler was still running"
    release.set()
    await asyncio.wait_for(stopping, WAIT)


async def next_member_gets_only_new(broker: msgkit.Broker, topic: str) -> None:
    """What the group finished is acknowledged: a new member gets the next message only."""
    after = Collector()
    await broker.consumer(topic, group="g").start(after)
    sentinel = await broker.producer().send(topic, b"sentinel")
    await after.wait_for(1, timeout=WAIT)
    assert after.ids == {sentinel}, "a finished message came again"
