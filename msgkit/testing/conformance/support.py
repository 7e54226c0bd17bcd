"""Shared pieces of the conformance contracts."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def graceful_stop(broker: msgkit.Broker, topic: str, **consumer_options: Any) -> None:
    """stop() called while the handler runs waits for it, and what it finished is
    acknowledged: a new member of the group gets the next message only."""
    release = asyncio.Event()
    started = asyncio.Event()
    handled: list[str] = []

    async def one(msg: msgkit.Message) -> None:
        await many([msg])

    async def many(msgs: list[msgkit.Message]) -> None:
        started.set()
        await release.wait()
        handled.extend(m.id for m in msgs)

    consumer = broker.consumer(topic, group="g", **consumer_options)
    await consumer.start(many if consumer.batch else one)
    sent = await broker.producer().send(topic, b"in flight")
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)
    assert not stopping.done(), "stop() returned while a handler was still running"
    release.set()
    await asyncio.wait_for(stopping, WAIT)
    assert handled == [sent]
    after = Collector()
    await broker.consumer(topic, group="g").start(after)
    sentinel = await broker.producer().send(topic, b"sentinel")
    await after.wait_for(1, timeout=WAIT)
    assert after.ids == {sentinel}, "a finished message came again"
