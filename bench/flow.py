"""msgkit send -> handler on any backend: the loop the guarantee and retry cases share.

One warm-up message is sent and handled before the clock starts, so joining a group,
opening channels and declaring topology are not counted. Runs on the in-memory backend
remove their topic from the hub afterwards: retained messages of earlier runs would
otherwise stay alive and make every later garbage collection slower.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgkit
from bench.harness import Countdown
from msgkit.instrument import Instrument
from msgkit.testing.collect import eventually
from msgkit_memory.hub import Hub

BODY = b"x" * 100
CHUNK = 1000
TIMEOUT = 300.0
"""Seconds a run may take before it fails (a stuck run must not hang `make bench`)."""


def fresh_topic() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def forget(broker: msgkit.Broker, topic: str) -> None:
    """Drop `topic` from an in-memory broker's hub (no-op on other backends)."""
    if isinstance(broker.native, Hub):
        broker.native.topics.pop(topic, None)


async def send_to_handler(
    url: str,
    n: int,
    handler: Countdown,
    *,
    producer: dict[str, Any] | None = None,
    consumer: dict[str, Any] | None = None,
    chunk: int = CHUNK,
    instruments: Sequence[Instrument] = (),
) -> float:
    """Seconds from the first send to the `n`th handled message; `handler` is a
    `Countdown(n + 1)` (the warm-up message counts). Sends are pipelined `send_many` chunks."""
    topic = fresh_topic()
    async with msgkit.connect(url, instruments=instruments) as broker:
        try:
            reader = broker.consumer(topic, group="g", **(consumer or {}))
            await reader.start(handler)
            writer = broker.producer(**(producer or {}))
            await writer.send(topic, BODY)
            await eventually(lambda: handler.count >= 1, timeout=60, message="warm-up handled")
            start = time.perf_counter()
            for first in range(0, n, chunk):
                await writer.send_many(topic, [BODY] * min(chunk, n - first))
            await asyncio.wait_for(handler.done.wait(), TIMEOUT)
            elapsed = time.perf_counter() - start
            await reader.stop()
            return elapsed
        finally:
            forget(broker, topic)


async def awaited_sends_to_handler(url: str, n: int, **consumer: Any) -> float:
    """Seconds from the first send to the `n`th handled message, each `send` awaited alone
    (as a service publishing events does), to a consumer made with `consumer` options."""
    topic = fresh_topic()
    async with msgkit.connect(url) as broker:
        try:
            handler = Countdown(n)
            await broker.consumer(topic, group="g", **consumer).start(handler)
            producer = broker.producer()
            start = time.perf_counter()
            for _ in range(n):
                await producer.send(topic, BODY)
            await handler.done.wait()
            return time.perf_counter() - start
        finally:
            forget(broker, topic)


def runner(
    make_handler: Callable[[int], Countdown], **options: Any
) -> Callable[[str, int], Awaitable[float]]:
    """A case run: `send_to_handler` with a fresh `make_handler(n + 1)` each time."""

    async def run(url: str, n: int) -> float:
        return await send_to_handler(url, n, make_handler(n + 1), **options)

    return run
