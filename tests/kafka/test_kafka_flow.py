"""Backpressure: a slow handler never makes the consumer hold more than it may."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgkit
from msgkit.testing import Collector, eventually
from msgkit_kafka.subscription import KafkaSubscription

SubOf = Callable[[msgkit.Consumer], KafkaSubscription]


async def test_slow_handler_pauses_partitions_and_bounds_what_is_held(
    kafka: msgkit.Broker, unique_name: str, sub_of: SubOf
) -> None:
    got = Collector()

    async def slow(msg: msgkit.Message) -> None:
        await asyncio.sleep(0.06)
        await got(msg)

    # Draining half the buffer takes 10 x 0.06 s, longer than PAUSE_AFTER (0.5 s).
    consumer = kafka.consumer(unique_name, group="g", concurrency=1, prefetch=4,
                              buffer_messages=20)
    await consumer.start(slow)
    sub = sub_of(consumer)
    peak_in_flight = peak_backlog = 0
    paused = False
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_in_flight, peak_backlog, paused
        while not stop.is_set():
            peak_in_flight = max(peak_in_flight, consumer.in_flight)
            peak_backlog = max(peak_backlog, sub.backlog)
            paused = paused or sub.paused
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    ids = set(await kafka.producer().send_many(unique_name, [b"x"] * 60))
    await got.wait_for(60, timeout=30)
    stop.set()
    await watcher
    assert got.ids == ids
    assert peak_in_flight <= 4 and peak_backlog >= 10, f"consumer held {peak_in_flight} > prefetch"
    assert peak_backlog <= 20, f"{peak_backlog} records buffered > buffer_messages"
    assert paused, "the partitions were never paused although the handler was slow"
    assert not sub.paused, "partitions stay paused after the backlog drained"
    await consumer.stop()


async def test_large_messages_are_bounded_by_buffer_bytes(
    kafka: msgkit.Broker, unique_name: str, sub_of: SubOf
) -> None:
    """200 kB messages with buffer_bytes=1 MB: at most 5 held, though buffer_messages
    (2048 by default) would take all 30."""
    gate = asyncio.Event()
    got = Collector()

    async def held(msg: msgkit.Message) -> None:
        await gate.wait()
        await got(msg)

    consumer = kafka.consumer(unique_name, group="g", concurrency=1, prefetch=2,
                              buffer_bytes=1_000_000)
    await consumer.start(held)
    sub = sub_of(consumer)
    peak_backlog = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_backlog
        while not stop.is_set():
            peak_backlog = max(peak_backlog, sub.backlog)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    ids = set(await kafka.producer().send_many(unique_name, [b"x" * 200_000] * 30))
    await eventually(lambda: sub.paused, timeout=15,
                     message="a full byte budget never paused the partitions")
    gate.set()
    await got.wait_for(30, timeout=30)
    stop.set()
    await watcher
    assert got.ids == ids
    assert peak_backlog == 5, f"{peak_backlog} records of 200 kB held at most; 1 MB fits 5"
    assert consumer.describe()["client"]["buffer_bytes"] == 1_000_000
    await consumer.stop()


async def test_fast_handler_is_not_paused(
    kafka: msgkit.Broker, unique_name: str, sub_of: SubOf
) -> None:
    got = Collector()
    consumer = kafka.consumer(unique_name, group="g", buffer_messages=50)
    await consumer.start(got)
    await kafka.producer().send_many(unique_name, [b"x"] * 2000)
    await got.wait_for(2000, timeout=30)
    assert not sub_of(consumer).paused
    await consumer.stop()
