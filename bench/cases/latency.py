"""End-to-end latency at a fixed rate: msgkit against the raw client on the same broker.

The producer sends open-loop at a fixed rate: each send is a task of its own, so a slow
confirmation does not delay the messages after it (latency is not hidden by a producer
that waits). Each payload carries its send time (`perf_counter`, same process); the handler
records the age of each message. Reported: p50/p99 over all rounds, and the rate achieved.

Baselines: an `asyncio.Queue` (memory), aio-pika with publisher confirms and a consumer
acking each message (RabbitMQ, quorum queue as msgkit's default), confluent-kafka
`produce` + `poll` and a `consume` loop with asynchronous commits in a thread (Kafka, the
librdkafka settings msgkit's clients get). One warm-up message goes end to end before the
clock starts on both sides, and each side runs once unmeasured before the rounds (the
first run against a freshly started broker had 4-5 times the p50 of the next ones, and p99
is pooled over the rounds).

On the memory backend a full garbage collection (15-20 ms, about one per run) delays the
~130 messages sent meanwhile, 0.7% of a run: just under p99, so p99 jumps when a run has
two. Max latency is not reported for this reason.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aio_pika
from confluent_kafka import Consumer, Producer, TopicPartition

import msgkit
from bench.cases.kafka import _confs, _create
from bench.cases.rabbitmq import PREFETCH, _topology
from bench.flow import TIMEOUT, forget, fresh_topic
from bench.harness import Case, Countdown, Run, Sample
from msgkit.testing.collect import eventually

STAMP = struct.Struct("!d")
COMMIT_EVERY = 100
PAD = b"x" * (100 - STAMP.size)


def stamp() -> bytes:
    """A 100-byte payload whose first 8 bytes are the send time."""
    return STAMP.pack(time.perf_counter()) + PAD


def age(payload: bytes) -> float:
    sent: float = STAMP.unpack_from(payload)[0]
    return time.perf_counter() - sent


class Recorder(Countdown):
    """A handler recording each message's age; `done` once it saw `n`."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.ages: list[float] = []

    def record(self, payload: bytes) -> None:
        self.ages.append(age(payload))
        self.count += 1
        if self.count == self.n:
            self.done.set()

    async def __call__(self, msg: object) -> None:
        assert isinstance(msg, msgkit.Message)
        self.record(msg.value)


async def paced(
    n: int, rate: float, send: Callable[[bytes], Coroutine[Any, Any, object]]
) -> None:
    """`send(stamp())` n times at `rate` per second, each as a task; waits for all of them.

    Finished tasks are dropped as they finish: gathering thousands of done tasks at the end
    would queue a callback each and delay the last messages' handling by tens of ms."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[object]] = set()
    failures: list[BaseException] = []

    def finished(task: asyncio.Task[object]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(send(stamp()))
        pending.add(task)
        task.add_done_callback(finished)
    if pending:
        await asyncio.wait(pending)
    if failures:
        raise failures[0]


async def msgkit_latency(url: str, n: int, rate: float) -> Sample:
    topic = fresh_topic()
    async with msgkit.connect(url) as broker:
        try:
            recorder = Recorder(n + 1)
            consumer = broker.consumer(topic, group="g")
            await consumer.start(recorder)
            producer = broker.producer()
            await producer.send(topic, stamp())
            await eventually(lambda: recorder.count >= 1, timeout=60, message="warm-up handled")
            start = time.perf_counter()
            await paced(n, rate, lambda body: producer.send(topic, body))
            await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
            elapsed = time.perf_counter() - start
            await consumer.stop()
            return Sample(elapsed, recorder.ages[1:])
        finally:
            forget(broker, topic)


async def queue_latency(url: str, n: int, rate: float) -> Sample:
    """The floor on one event loop: an `asyncio.Queue` between a producer and a consumer task."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    recorder = Recorder(n)

    async def consume() -> None:
        while recorder.count < n:
            recorder.record(await queue.get())

    async def put(body: bytes) -> None:
        queue.put_nowait(body)

    consumer = asyncio.create_task(consume())
    start = time.perf_counter()
    await paced(n, rate, put)
    await asyncio.wait_for(consumer, TIMEOUT)
    return Sample(time.perf_counter() - start, recorder.ages)


def _amqp_message(body: bytes) -> aio_pika.Message:
    """Same properties as msgkit's messages: persistent, message id, timestamp, one header."""
    message_id = uuid.uuid4().hex
    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message_id, timestamp=time.time(),
                            headers={"msgkit-id": message_id})


async def aio_pika_latency(url: str, n: int, rate: float) -> Sample:
    async with _topology(url, "quorum") as (topic, _):
        connection = await aio_pika.connect(url)
        try:
            publishing = await connection.channel()  # publisher confirms on
            exchange = await publishing.get_exchange(topic)
            consuming = await connection.channel()
            await consuming.set_qos(prefetch_count=PREFETCH)
            recorder = Recorder(n + 1)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                recorder.record(message.body)
                await message.ack()

            queue = await consuming.get_queue(f"{topic}.g")
            await queue.consume(on_message)
            await exchange.publish(_amqp_message(stamp()), routing_key="")
            await eventually(lambda: recorder.count >= 1, timeout=60, message="warm-up handled")
            start = time.perf_counter()
            await paced(n, rate, lambda body: exchange.publish(_amqp_message(body), routing_key=""))
            await asyncio.wait_for(recorder.done.wait(), TIMEOUT)
            return Sample(time.perf_counter() - start, recorder.ages[1:])
        finally:
            await connection.close()


async def confluent_latency(url: str, n: int, rate: float) -> Sample:
    topic = fresh_topic()
    await _create(url, topic)
    producer_conf, consumer_conf = _confs(url)
    producer_conf.update({"acks": "all", "enable.idempotence": True})
    consumer_conf.update({"group.id": "bench-raw", "auto.offset.reset": "earliest",
                          "enable.auto.commit": False})
    producer = Producer(producer_conf)
    ages: list[float] = []
    warm = threading.Event()
    reading = asyncio.ensure_future(
        asyncio.to_thread(_consume_ages, consumer_conf, topic, n + 1, ages, warm))
    producer.produce(topic, stamp())
    producer.flush(10)
    if not await asyncio.to_thread(warm.wait, 60):
        raise TimeoutError("raw Kafka consumer got no warm-up message within 60 s")

    async def send(body: bytes) -> None:
        producer.produce(topic, body)
        producer.poll(0)

    start = time.perf_counter()
    await paced(n, rate, send)
    await asyncio.to_thread(producer.flush, 30)
    await asyncio.wait_for(reading, TIMEOUT)
    return Sample(time.perf_counter() - start, ages[1:])


def _consume_ages(conf: dict[str, Any], topic: str, n: int, ages: list[float],
                  warm: threading.Event) -> None:
    """`poll` one record at a time (a batch `consume` waits for its full timeout when fewer
    records are there: that would be latency of the loop, not of Kafka); commits
    asynchronously every `COMMIT_EVERY` records and whenever the topic is drained."""
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    positions: dict[int, int] = {}
    pending = 0
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(ages) < n and time.monotonic() < deadline:
            record = consumer.poll(0.05)
            if record is not None and record.error() is None and record.value() is not None:
                ages.append(age(record.value()))  # type: ignore[arg-type]
                warm.set()
                positions[record.partition() or 0] = (record.offset() or 0) + 1
                pending += 1
            if pending and (record is None or pending >= COMMIT_EVERY or len(ages) == n):
                consumer.commit(offsets=[TopicPartition(topic, p, o)
                                         for p, o in positions.items()], asynchronous=True)
                pending = 0
    finally:
        consumer.close()


def _at(run: Callable[[str, int, float], Awaitable[Sample]], rate: float) -> Run:
    return lambda url, n: run(url, n, rate)


RATES = {"memory": 10_000, "amqp": 1_000, "kafka": 1_000}
"""Messages per second; each run lasts 2-3 s, on Kafka 10 s: late in a long bench run a
stall of 50-60 ms hit both sides alike (the broker or the machine, not a client), and the
60 messages it delays set p99 by themselves in a run of 3,000."""

CASES = [
    Case(f"latency at {RATES['memory']:,}/s [memory]", "memory", "asyncio.Queue",
         _at(msgkit_latency, RATES["memory"]), _at(queue_latency, RATES["memory"]),
         messages=20_000, warm_up=True, notes="open-loop sends at a fixed rate; send -> handler age"),
    Case(f"latency at {RATES['amqp']:,}/s [rabbitmq]", "amqp", "aio-pika",
         _at(msgkit_latency, RATES["amqp"]), _at(aio_pika_latency, RATES["amqp"]),
         messages=3_000, warm_up=True,
         notes="open-loop confirmed sends, quorum queue, ack after handler"),
    Case(f"latency at {RATES['kafka']:,}/s [kafka]", "kafka", "confluent-kafka",
         _at(msgkit_latency, RATES["kafka"]), _at(confluent_latency, RATES["kafka"]),
         messages=10_000, warm_up=True,
         notes="open-loop sends (acks=all), consume + commit after handler"),
]
