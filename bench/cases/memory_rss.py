"""Resident memory while one million messages go through the in-memory backend with
deduplication on (`Dedup("memory://")`, its default bound of 100,000 remembered keys).

Reported in `extra`: RSS at the start (consumer running, nothing sent), after every
100,000 handled messages, and at the end, in MB. The producer stays at most `LAG`
messages ahead of the handler, so a backlog does not count as growth. Expected: growth
until the store holds its 100,000 keys, flat after that (the hub's topic keeps its last
10,000 messages; the store evicts its oldest keys). Measured while building this case
(3M messages): tracked objects flat at ~243,000 from 250k messages on, RSS 97 MB at 250k,
111.5 MB from 1M to 3M: the store's keys plus the allocator's high-water mark, no leak.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import msgkit
from bench.flow import BODY, CHUNK, forget, fresh_topic
from bench.harness import Case, Countdown, Sample
from msgkit.dedup import Dedup
from msgkit.testing.collect import eventually

LAG = 10_000
EVERY = 100_000
_PAGE = 4096


def rss_mb() -> float:
    """This process's resident set size now (Linux /proc), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * _PAGE / 1e6, 1)


class Sampler(Countdown):
    """Counts messages and records RSS and the number of live objects the garbage collector
    tracks every `EVERY` of them (RSS growing while objects stay flat is the allocator
    keeping freed memory, not a leak)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.rss: list[float] = []
        self.objects: list[int] = []

    async def __call__(self, msg: object) -> None:
        await super().__call__(msg)
        if self.count % EVERY == 0:
            self.rss.append(rss_mb())
            self.objects.append(len(gc.get_objects()))


async def dedup_million(url: str, n: int) -> Sample:
    topic = fresh_topic()
    async with msgkit.connect(url) as broker, Dedup("memory://") as dedup:
        try:
            handler = Sampler(n)
            consumer = broker.consumer(topic, group="g", dedup=dedup)
            await consumer.start(handler)
            producer = broker.producer()
            start_rss = rss_mb()
            start = time.perf_counter()
            for first in range(0, n, CHUNK):
                await producer.send_many(topic, [BODY] * min(CHUNK, n - first))
                ahead = first + CHUNK - LAG
                if ahead > handler.count:
                    await eventually(lambda: handler.count >= ahead, timeout=60,  # noqa: B023
                                     interval=0.001, message="handler keeping up")
            await handler.done.wait()
            elapsed = time.perf_counter() - start
            await consumer.stop()
            return Sample(elapsed, extra={"rss_start_mb": start_rss, "rss_end_mb": rss_mb(),
                                          f"rss_every_{EVERY}_mb": handler.rss,
                                          f"objects_every_{EVERY}": handler.objects})
        finally:
            forget(broker, topic)


CASES = [
    Case("memory rss, 1M messages with dedup", "memory", "", dedup_million, None,
         messages=1_000_000, rounds=1,
         notes="one round; RSS start/end and every 100k messages in extra"),
]
