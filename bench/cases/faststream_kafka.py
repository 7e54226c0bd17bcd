"""msgkit against FastStream on Kafka (`faststream[confluent]`), same broker, same run.

The same two cases as `faststream.py` runs on RabbitMQ, and a batch-handler one:
1. Awaited single sends: one `send`/`publish` at a time, each waiting for the broker's
   acknowledgement (acks=all and idempotence on both, as msgkit's at-least-once). Other
   producer settings are each library's defaults: librdkafka's `linger.ms` of 5 ms for
   msgkit, FastStream's 0 ms; a second row gives msgkit `linger.ms=0` too (a producer
   option), the same settings on both sides.
2. Consume and commit: a fresh topic (3 partitions) filled with n messages, drained by a
   group consumer; FastStream with `AckPolicy.ACK` (commit after the handler, as msgkit).
   Timed from the first to the last message handled: the group join is not counted.
   FastStream's consumer gets the test broker's session and fetch-wait settings, as
   msgkit's does from the URL.
3. Consume and commit with a batch handler: msgkit's `batch=1000` handler against
   FastStream's batch subscriber (`batch=True, max_records=1000`, `AckPolicy.ACK`: a commit
   after each batch handled), both a list of messages per call. Same topic, same timing.

FastStream's logging is off (`logger=None`), as msgkit logs nothing per message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from faststream import AckPolicy
from faststream.confluent import KafkaBroker

import msgkit
from bench.cases.kafka import (
    BATCH,
    PAYLOAD,
    _confs,
    _create,
    _fill,
    _topic,
    msgkit_consume,
    msgkit_consume_batch,
)
from bench.harness import Case, Countdown


async def msgkit_awaited_sends(url: str, n: int, **options: Any) -> float:
    topic = _topic()
    await _create(url, topic)
    async with msgkit.connect(url) as broker:
        producer = broker.producer(**options)
        await producer.send(topic, PAYLOAD)  # connects, learns the partitions
        start = time.perf_counter()
        for _ in range(n):
            await producer.send(topic, PAYLOAD)
        return time.perf_counter() - start


def _faststream(url: str) -> KafkaBroker:
    producer, _ = _confs(url)
    return KafkaBroker(producer["bootstrap.servers"], acks="all", enable_idempotence=True,
                       logger=None)


async def faststream_awaited_sends(url: str, n: int) -> float:
    topic = _topic()
    await _create(url, topic)
    broker = _faststream(url)
    await broker.connect()
    try:
        await broker.publish(PAYLOAD, topic=topic)
        start = time.perf_counter()
        for _ in range(n):
            await broker.publish(PAYLOAD, topic=topic)
        return time.perf_counter() - start
    finally:
        await broker.stop()


async def faststream_consume(url: str, n: int) -> float:
    return await _faststream_consume(url, n, batch=False)


async def faststream_consume_batch(url: str, n: int) -> float:
    return await _faststream_consume(url, n, batch=True)


async def _faststream_consume(url: str, n: int, *, batch: bool) -> float:
    """`batch`: a batch subscriber (up to `BATCH` bodies per call), else one per message."""
    topic = _topic()
    await _create(url, topic)
    await _fill(url, topic, n)
    _, conf = _confs(url)
    broker = _faststream(url)
    countdown = Countdown(n)
    session = int(conf.get("session.timeout.ms", 10_000))
    heartbeat = int(conf.get("heartbeat.interval.ms", 3_000))
    fetch_wait = int(conf.get("fetch.wait.max.ms", 500))
    poll_interval = int(conf.get("max.poll.interval.ms", 300_000))
    if batch:
        @broker.subscriber(
            topic, group_id="bench-faststream", auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK, session_timeout_ms=session, heartbeat_interval_ms=heartbeat,
            fetch_max_wait_ms=fetch_wait, max_poll_interval_ms=poll_interval,
            batch=True, max_records=BATCH,
        )
        async def handle_many(bodies: list[bytes]) -> None:
            await countdown.many(bodies)
    else:
        @broker.subscriber(
            topic, group_id="bench-faststream", auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK, session_timeout_ms=session, heartbeat_interval_ms=heartbeat,
            fetch_max_wait_ms=fetch_wait, max_poll_interval_ms=poll_interval,
        )
        async def handle(body: bytes) -> None:
            await countdown(body)

    await broker.start()
    try:
        await asyncio.wait_for(countdown.done.wait(), 300)
        return countdown.elapsed
    finally:
        await broker.stop()


CASES = [
    Case("kafka awaited single sends vs FastStream", "kafka", "faststream",
         msgkit_awaited_sends, faststream_awaited_sends, messages=500,
         notes="one send at a time, acks=all; linger.ms: library defaults (5 vs 0 ms)"),
    Case("kafka awaited single sends vs FastStream, linger.ms=0 both", "kafka", "faststream",
         lambda url, n: msgkit_awaited_sends(url, n, **{"linger.ms": 0}),
         faststream_awaited_sends, messages=1_000, notes="one send at a time, acks=all"),
    # 5,000: with 20,000, FastStream's consumer outlived the test broker's 3 s session
    # timeout (its commits held back its heartbeats), rejoined over and over at 171-213
    # msg/s and took 6 of the Kafka bench's 14 minutes; 5,000 finish before that
    # (1,749-3,578 msg/s on 2026-12-07).
    Case("kafka consume and commit vs FastStream", "kafka", "faststream",
         msgkit_consume, faststream_consume, messages=5_000,
         notes="3 partitions, commit after handler; timed first to last message"),
    Case("kafka consume and commit, batch handler vs FastStream batch", "kafka",
         "faststream batch", msgkit_consume_batch, faststream_consume_batch, messages=100_000,
         notes=f"batch={BATCH} handler vs batch=True, max_records={BATCH}; commit per batch"),
]
