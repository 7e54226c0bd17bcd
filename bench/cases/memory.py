"""The in-memory backend on its own: send to handler, one core (goal: >= 100,000 msg/s).

Each `send` is awaited, one message at a time, as a service publishing events does. The
figure depends on the core being free: the harness reports `cpu_per_wall` (the process's
CPU time over wall time); well under 1.0 means other processes took the core meanwhile.
"""

from __future__ import annotations

import time

import msgkit
from bench.flow import BODY, forget, fresh_topic
from bench.harness import Case, Countdown


async def send_to_handler(url: str, n: int) -> float:
    topic = fresh_topic()
    async with msgkit.connect(url) as broker:
        try:
            handler = Countdown(n)
            consumer = broker.consumer(topic, group="g")
            await consumer.start(handler)
            producer = broker.producer()
            start = time.perf_counter()
            for _ in range(n):
                await producer.send(topic, BODY)
            await handler.done.wait()
            return time.perf_counter() - start
        finally:
            forget(broker, topic)


CASES = [
    Case("memory send->handler", "memory", "", send_to_handler, None, messages=200_000,
         notes="awaited send per message, concurrency 1"),
]
