"""Kafka: msgkit against raw confluent-kafka written the fast way, same broker, same run.

1. Pipelined at-least-once publishing: `send_many` in chunks vs `produce` with delivery
   callbacks and one `flush` (both acks=all, idempotence on).
2. Consume and commit: a msgkit consumer whose handler returns (ack -> contiguous commit)
   vs a raw loop of `consume` batches with asynchronous commits. Timed from the first to
   the last message handled, so the group join is not counted on either side.

3. Consume and commit with a batch handler (`batch=`): one call and one acknowledgement
   pass per fetch, against the same raw loops.

Raw confluent-kafka is measured three ways: written the fast way (no headers, reading
nothing; `produce` with positional arguments), doing msgkit's per-message work (an id
header; reading key, value and headers), and as an asyncio service uses it (a thread beside
the event loop, an awaited handler per record, a future per chunk of sends, `produce` with
keywords as its documentation shows).

Every run uses a fresh topic (3 partitions, msgkit's default).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

import msgkit
from bench.harness import Case, Countdown
from msgkit.url import URL
from msgkit_kafka.backend import CONSUMER_DEFAULTS
from msgkit_kafka.config import split_options

PAYLOAD = b"x" * 100
CHUNK = 10_000
BATCH = 1000
"""Messages per batch-handler call, as many as the raw loops take per `consume` call."""


def _confs(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same librdkafka settings msgkit's clients get from `url` (producer, consumer)."""
    _, configs = split_options(URL.parse(url), URL.parse(url).query)
    producer = configs.for_kind("producer")
    consumer = {**CONSUMER_DEFAULTS, **configs.for_kind("consumer")}
    for conf in (producer, consumer):
        conf.pop("logger", None)
    return producer, consumer


def _topic() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


async def _create(url: str, topic: str) -> None:
    async with msgkit.connect(url) as broker:
        consumer = broker.consumer(topic, group="bench-create")  # creates the topic
        await consumer.start(_ignore)
        await consumer.stop()


async def _ignore(msg: msgkit.Message) -> None:
    return None


async def msgkit_produce(url: str, n: int) -> float:
    topic = _topic()
    await _create(url, topic)
    async with msgkit.connect(url) as broker:
        producer = broker.producer()
        await producer.send_many(topic, [b"warm-up"])  # opens the pipelining client
        start = time.perf_counter()
        for i in range(0, n, CHUNK):
            await producer.send_many(topic, [PAYLOAD] * min(CHUNK, n - i))
        return time.perf_counter() - start


async def raw_produce(url: str, n: int) -> float:
    return await _raw_produce(url, n, with_headers=False)


async def raw_produce_with_ids(url: str, n: int) -> float:
    return await _raw_produce(url, n, with_headers=True)


async def _raw_produce(url: str, n: int, *, with_headers: bool) -> float:
    """`with_headers`: each message gets an id header, as msgkit's do (same bytes on the wire)."""
    topic = _topic()
    await _create(url, topic)
    conf, _ = _confs(url)
    conf.update({"acks": "all", "enable.idempotence": True})
    producer = Producer(conf)
    failed = 0

    def report(err: Any, msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer.produce(topic, b"warm-up", on_delivery=report)
    await asyncio.to_thread(producer.flush, 30)
    start = time.perf_counter()
    produce = producer.produce
    prefix = uuid.uuid4().hex[:16]
    for i in range(n):
        headers: list[tuple[str, str | bytes | None]] | None = (
            [("msgkit-id", f"{prefix}{i:012x}".encode())] if with_headers else None
        )
        while True:
            try:
                # positional: keyword parsing costs produce() 0.6 us (msgkit avoids it too)
                produce(topic, PAYLOAD, None, -1, report, None, 0, headers)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    await asyncio.to_thread(producer.flush, 60)
    elapsed = time.perf_counter() - start
    assert failed == 0, f"{failed} raw sends failed"
    return elapsed


async def _fill(url: str, topic: str, n: int) -> None:
    async with msgkit.connect(url) as broker:
        producer = broker.producer()
        for i in range(0, n, CHUNK):
            await producer.send_many(topic, [PAYLOAD] * min(CHUNK, n - i))


async def msgkit_consume(url: str, n: int) -> float:
    return await _msgkit_consume(url, n, lambda countdown: countdown)


async def msgkit_consume_batch(url: str, n: int) -> float:
    return await _msgkit_consume(url, n, lambda countdown: countdown.many, batch=BATCH)


async def msgkit_consume_batch_reading(url: str, n: int) -> float:
    """The batch handler reads each message's key, value and headers, as the raw loop
    reading records does."""
    def reading(countdown: Countdown) -> Any:
        async def handler(msgs: list[msgkit.Message]) -> None:
            for msg in msgs:
                msg.key, msg.value, msg.headers  # noqa: B018 - read, as the raw loop does
            await countdown.many(msgs)
        return handler
    return await _msgkit_consume(url, n, reading, batch=BATCH)


async def _msgkit_consume(url: str, n: int, handler: Callable[[Countdown], Any],
                          **options: Any) -> float:
    """`n` messages through a msgkit consumer running `handler(countdown)`; first to last."""
    topic = _topic()
    await _create(url, topic)
    await _fill(url, topic, n)
    countdown = Countdown(n)
    async with msgkit.connect(url) as broker:
        consumer = broker.consumer(topic, group="bench", start="earliest", **options)
        await consumer.start(handler(countdown))
        await asyncio.wait_for(countdown.done.wait(), 120)
        await consumer.stop()
        return countdown.elapsed


async def raw_consume(url: str, n: int) -> float:
    return await _raw_consume(url, n, read=False)


async def raw_consume_reading(url: str, n: int) -> float:
    return await _raw_consume(url, n, read=True)


async def _filled_for_raw(url: str, n: int, group: str) -> tuple[str, dict[str, Any]]:
    """A fresh topic holding `n` messages, and consumer settings for a raw `group`."""
    topic = _topic()
    await _create(url, topic)
    await _fill(url, topic, n)
    _, conf = _confs(url)
    conf.update({"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    return topic, conf


async def _raw_consume(url: str, n: int, *, read: bool) -> float:
    """`read`: the loop reads each record's key, value and headers, as a real handler does."""
    topic, conf = await _filled_for_raw(url, n, "bench-raw")
    return await asyncio.to_thread(_raw_consume_loop, conf, topic, n, read)


def _raw_consume_loop(conf: dict[str, Any], topic: str, n: int, read: bool) -> float:
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    count = 0
    first = 0.0
    positions: dict[int, int] = {}
    deadline = time.monotonic() + 120
    try:
        while count < n and time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.1)
            for record in batch:
                if record.error() is not None:
                    continue
                count += 1
                if count == 1:
                    first = time.perf_counter()
                if read:
                    record.key(), record.value(), record.headers()
                positions[record.partition() or 0] = (record.offset() or 0) + 1
            if batch and positions:
                consumer.commit(offsets=[TopicPartition(topic, p, o)
                                         for p, o in positions.items()], asynchronous=True)
        last = time.perf_counter()
    finally:
        consumer.close()
    assert count >= n, f"raw consumer got {count} of {n}"
    return last - first


async def raw_asyncio_consume(url: str, n: int) -> float:
    """What an asyncio service writes with raw confluent-kafka: a thread consumes batches
    and hands them to the event loop; an async handler is awaited per record (reading key,
    value and headers); the thread commits what was handled. At most 4 batches in flight."""
    topic, conf = await _filled_for_raw(url, n, "bench-raw-asyncio")
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[list[Any]] = asyncio.Queue()
    in_flight = threading.Semaphore(4)
    handled: dict[int, int] = {}  # partition -> next offset; written by the loop only
    stop = threading.Event()
    countdown = Countdown(n)

    async def handler(record: Any) -> None:
        record.key(), record.value(), record.headers()
        await countdown(record)

    def consume() -> None:
        consumer = Consumer(conf)
        consumer.subscribe([topic])
        committed: dict[int, int] = {}
        try:
            while not stop.is_set():
                positions = dict(handled)
                if positions != committed:
                    consumer.commit(offsets=[TopicPartition(topic, p, o)
                                             for p, o in positions.items()], asynchronous=True)
                    committed = positions
                if not in_flight.acquire(timeout=0.1):
                    continue
                batch = [r for r in consumer.consume(1000, 0.1) if r.error() is None]
                if batch:
                    loop.call_soon_threadsafe(batches.put_nowait, batch)
                else:
                    in_flight.release()
        finally:
            consumer.close()

    async def serve() -> None:
        while True:
            batch = await batches.get()
            for record in batch:
                await handler(record)
                handled[record.partition()] = record.offset() + 1
            in_flight.release()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    server = asyncio.create_task(serve())
    try:
        await asyncio.wait_for(countdown.done.wait(), 120)
    finally:
        server.cancel()
        stop.set()
        await asyncio.to_thread(thread.join)
    return countdown.elapsed


async def raw_asyncio_produce(url: str, n: int) -> float:
    """What an asyncio service writes with raw confluent-kafka: `produce` on the loop with
    an id header, a poll thread serving delivery reports, and one future per chunk awaited
    (as `send_many` in chunks does)."""
    topic = _topic()
    await _create(url, topic)
    conf, _ = _confs(url)
    conf.update({"acks": "all", "enable.idempotence": True})
    producer = Producer(conf)
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.1)

    producer.produce(topic, b"warm-up")
    await asyncio.to_thread(producer.flush, 30)
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    prefix = uuid.uuid4().hex[:16]
    try:
        start = time.perf_counter()
        for i in range(0, n, CHUNK):
            size = min(CHUNK, n - i)
            future: asyncio.Future[None] = loop.create_future()
            seen = itertools.count(1)
            errors: list[Any] = []

            def report(err: Any, msg: Any, future: Any = future, seen: Any = seen,
                       size: int = size, errors: list[Any] = errors) -> None:
                if err is not None:
                    errors.append(err)
                if next(seen) == size:
                    loop.call_soon_threadsafe(future.set_result, None)

            for j in range(i, i + size):
                headers: list[tuple[str, str | bytes | None]] = [
                    ("msgkit-id", f"{prefix}{j:012x}".encode())]
                while True:
                    try:
                        producer.produce(topic, PAYLOAD, headers=headers, on_delivery=report)
                        break
                    except BufferError:
                        await asyncio.sleep(0.01)
                if j % 1000 == 999:
                    await asyncio.sleep(0)  # let other tasks (and the poll thread) run
            await future
            assert not errors, f"{len(errors)} raw sends failed"
        return time.perf_counter() - start
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
        producer.flush(10)


CASES = [
    Case("kafka produce at-least-once (pipelined)", "kafka", "confluent-kafka",
         msgkit_produce, raw_produce, messages=100_000,
         notes="send_many in chunks of 10k vs produce + delivery callbacks + flush"),
    Case("kafka consume and commit", "kafka", "confluent-kafka",
         msgkit_consume, raw_consume, messages=100_000,
         notes="handler + ack (contiguous commits) vs consume() batches + async commits"),
    # The same cases against raw loops doing msgkit's per-message work (an id header per
    # message; reading key, value and headers): what the library itself costs.
    Case("kafka produce at-least-once, raw with id headers", "kafka", "confluent-kafka+ids",
         msgkit_produce, raw_produce_with_ids, messages=100_000),
    Case("kafka consume and commit, raw reading records", "kafka", "confluent-kafka+read",
         msgkit_consume, raw_consume_reading, messages=100_000),
    # A batch handler (msgkit.batch): one call and one acknowledgement per fetch.
    Case("kafka consume and commit, batch handler", "kafka", "confluent-kafka",
         msgkit_consume_batch, raw_consume, messages=100_000,
         notes=f"batch={BATCH} handler vs consume({BATCH}) batches + async commits"),
    Case("kafka consume and commit, batch handler reading records", "kafka",
         "confluent-kafka+read", msgkit_consume_batch_reading, raw_consume_reading,
         messages=100_000, notes="both read key, value and headers of every message"),
    # Raw confluent-kafka as an asyncio service uses it (a thread beside the event loop,
    # an awaited handler per record / a future per chunk): msgkit against the same shape.
    # The goals are set against these two: 5 rounds, as one run of 3 moved the median by
    # up to a tenth on this project's shared 2-core machine.
    Case("kafka produce at-least-once, raw asyncio service", "kafka", "confluent-kafka+asyncio",
         msgkit_produce, raw_asyncio_produce, messages=100_000, rounds=5,
         notes="produce on the loop + poll thread + a future per 10k chunk, id headers"),
    Case("kafka consume and commit, raw asyncio service", "kafka", "confluent-kafka+asyncio",
         msgkit_consume, raw_asyncio_consume, messages=100_000, rounds=5,
         notes="consumer thread -> loop per batch, awaited handler per record, commits"),
]
