"""Kafka: msgkit against aiokafka, the asyncio client users would otherwise pick, same
broker, same run (FastStream, the other peer, is in `faststream_kafka.py`).

1. Consume and commit: msgkit's consumer as in `kafka.py` (a handler per message; its
   acknowledgement -> contiguous commits, at-least-once) against an `AIOKafkaConsumer`
   (`enable_auto_commit=False`) looping over `getmany(timeout_ms=100, max_records=1000)`,
   awaiting the same trivial handler per record and then `commit()` after each batch
   (the documented manual-commit loop; the commit is awaited, so a batch is committed
   before the next is handled). 200k messages of 100 bytes on a fresh topic of 3
   partitions, filled before the run; timed from the first to the last message handled on
   both sides, so the group join is not counted. aiokafka gets the test broker's session,
   heartbeat, poll-interval and fetch-wait settings, as msgkit's consumer does from the URL.
2. Pipelined at-least-once publishing: msgkit's `send_many` in chunks of 10k (as
   `kafka.py`) against `AIOKafkaProducer(acks="all", enable_idempotence=True)`
   - `send()` per message for a chunk of 10k, then all the chunk's futures awaited;
   - `create_batch()`/`send_batch()` (aiokafka's batch interface, its documented fast
     path): batches filled until full, each sent to the next partition in turn, the
     chunk's batch futures awaited; with aiokafka's default batch size (16 KiB) and with
     `max_batch_size` of 1 MB (librdkafka's `batch.size`, which msgkit's producer has);
     and with 1 MB batches and an id header per message, as msgkit's messages carry (the
     same bytes on the wire).
   Other producer settings are each library's defaults (linger: librdkafka's 5 ms for
   msgkit, aiokafka's 0 ms). A fresh topic per run, a warm-up send before the clock.

Quix Streams is not measured: quixstreams 3.28 (the newest) requires confluent-kafka<2.13
and pydantic<2.14, which would downgrade the confluent-kafka msgkit runs on (2.16); with
those pinned, pip falls back to quixstreams 0.5.7, a different, years-old API. Its
Application cannot share this process's confluent-kafka.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.cases.kafka import (
    BATCH,
    CHUNK,
    PAYLOAD,
    _confs,
    _create,
    _fill,
    _topic,
    msgkit_consume,
    msgkit_produce,
)
from bench.harness import Case, Countdown


def _bootstrap(url: str) -> str:
    producer, _ = _confs(url)
    return str(producer["bootstrap.servers"])


async def aiokafka_consume(url: str, n: int) -> float:
    topic = _topic()
    await _create(url, topic)
    await _fill(url, topic, n)
    _, conf = _confs(url)
    countdown = Countdown(n)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=_bootstrap(url), group_id="bench-aiokafka",
        auto_offset_reset="earliest", enable_auto_commit=False,
        session_timeout_ms=int(conf.get("session.timeout.ms", 10_000)),
        heartbeat_interval_ms=int(conf.get("heartbeat.interval.ms", 3_000)),
        fetch_max_wait_ms=int(conf.get("fetch.wait.max.ms", 500)),
        max_poll_interval_ms=int(conf.get("max.poll.interval.ms", 300_000)),
    )
    await consumer.start()
    try:
        async with asyncio.timeout(120):
            while not countdown.done.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
                for records in batches.values():
                    for record in records:
                        await countdown(record)
                if batches:
                    await consumer.commit()
    finally:
        await consumer.stop()
    return countdown.elapsed


async def _aiokafka_producer(url: str, topic: str, **options: Any) -> AIOKafkaProducer:
    """A started idempotent acks=all producer that has sent one message to `topic`."""
    producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(url), acks="all",
                                enable_idempotence=True, **options)
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")  # connects, learns the partitions
    return producer


async def aiokafka_produce(url: str, n: int) -> float:
    """`send()` per message, a chunk at a time; the chunk's futures awaited together."""
    topic = _topic()
    await _create(url, topic)
    producer = await _aiokafka_producer(url, topic)
    try:
        start = time.perf_counter()
        for i in range(0, n, CHUNK):
            futures = [await producer.send(topic, PAYLOAD) for _ in range(min(CHUNK, n - i))]
            await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def aiokafka_produce_batches(url: str, n: int, *, ids: bool = False,
                                   **options: Any) -> float:
    """`create_batch()` filled until full, `send_batch()` to the partitions in turn; the
    futures of a chunk's batches awaited together. `ids`: each message gets an id header."""
    topic = _topic()
    await _create(url, topic)
    producer = await _aiokafka_producer(url, topic, **options)
    try:
        partitions = itertools.cycle(sorted(await producer.partitions_for(topic)))
        prefix = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        for i in range(0, n, CHUNK):
            futures = []
            batch = producer.create_batch()
            for j in range(i, i + min(CHUNK, n - i)):
                headers = [("msgkit-id", f"{prefix}{j:012x}".encode())] if ids else None
                while batch.append(key=None, value=PAYLOAD, timestamp=None,
                                   headers=headers) is None:  # full
                    futures.append(await producer.send_batch(batch, topic,
                                                             partition=next(partitions)))
                    batch = producer.create_batch()
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=next(partitions)))
            await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def aiokafka_produce_big_batches(url: str, n: int) -> float:
    return await aiokafka_produce_batches(url, n, max_batch_size=1_000_000)


async def aiokafka_produce_big_batches_with_ids(url: str, n: int) -> float:
    return await aiokafka_produce_batches(url, n, ids=True, max_batch_size=1_000_000)


CASES = [
    Case("kafka consume and commit vs aiokafka", "kafka", "aiokafka",
         msgkit_consume, aiokafka_consume, messages=200_000,
         notes="handler + ack vs getmany(max_records=1000), awaited handler per record, "
               "awaited commit() per batch"),
    Case("kafka produce at-least-once (pipelined) vs aiokafka send", "kafka", "aiokafka",
         msgkit_produce, aiokafka_produce, messages=100_000,
         notes="send_many in chunks of 10k vs send() per message + the chunk's futures "
               "awaited; acks=all, idempotence on"),
    Case("kafka produce at-least-once (pipelined) vs aiokafka send_batch", "kafka",
         "aiokafka batch", msgkit_produce, aiokafka_produce_batches, messages=100_000,
         notes="send_many in chunks of 10k vs create_batch/send_batch (16 KiB batches, "
               "aiokafka's default), partitions in turn"),
    Case("kafka produce at-least-once (pipelined) vs aiokafka send_batch, 1 MB batches",
         "kafka", "aiokafka batch 1MB", msgkit_produce, aiokafka_produce_big_batches,
         messages=100_000, notes="max_batch_size=1 MB, librdkafka's batch.size"),
    Case("kafka produce at-least-once (pipelined) vs aiokafka send_batch, 1 MB batches, "
         "id headers", "kafka", "aiokafka batch 1MB+ids", msgkit_produce,
         aiokafka_produce_big_batches_with_ids, messages=100_000,
         notes="as above, an id header per message as msgkit's (same bytes on the wire)"),
]
