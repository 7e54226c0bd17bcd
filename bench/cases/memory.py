"""The in-memory backend on its own: send to handler, one core."""

from __future__ import annotations

import time
import uuid

import msgkit
from bench.harness import Case, Countdown


async def send_to_handler(url: str, n: int) -> float:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    async with msgkit.connect(url) as broker:
        handler = Countdown(n)

        consumer = broker.consumer(topic, group="g")
        await consumer.start(handler)
        producer = broker.producer()
        start = time.perf_counter()
        for _ in range(n):
            await producer.send(topic, b"x" * 100)
        await handler.done.wait()
        return time.perf_counter() - start


CASES = [
    Case("memory send->handler", "memory", "", send_to_handler, None, messages=200_000),
]
