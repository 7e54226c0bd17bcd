"""RabbitMQ: msgkit against raw aio-pika written the fast way, same server, same run.

1. Confirmed publishing, many confirms in flight: `send_many` in chunks of `CHUNK` against
   aio-pika publishing each chunk with `gather` (publisher confirms, persistent, mandatory).
2. Consume with ack: a queue preloaded with n messages drained by a msgkit consumer against
   an aio-pika consumer acking each message, both with prefetch `PREFETCH`.

Both sides use the same topology (durable topic exchange, a quorum queue - msgkit's default -
or a classic one, bound with '#') and
messages of the same size and properties (message id, timestamp, one header). Each run uses
fresh names and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika

import msgkit
from bench.harness import Case, Countdown, Run

BODY = b"x" * 100
CHUNK = 1000
PREFETCH = 256


@asynccontextmanager
async def _topology(
    url: str, queue_type: str
) -> AsyncIterator[tuple[str, aio_pika.abc.AbstractChannel]]:
    """A fresh exchange + group queue `<topic>.g`, deleted on exit."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.TOPIC, durable=True)
    arguments: dict[str, Any] = {"x-queue-type": queue_type}
    queue = await channel.declare_queue(f"{topic}.g", durable=True, arguments=arguments)
    await queue.bind(exchange, "#")
    try:
        yield topic, channel
    finally:
        await channel.queue_delete(f"{topic}.g")
        await channel.exchange_delete(topic)
        await connection.close()


def _message(n: int) -> aio_pika.Message:
    message_id = f"{uuid.uuid4().hex[:16]}{n:012x}"
    return aio_pika.Message(
        BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message_id,
        timestamp=time.time(), headers={"msgkit-id": message_id},
    )


async def _preload(channel: aio_pika.abc.AbstractChannel, topic: str, n: int) -> None:
    exchange = await channel.get_exchange(topic)
    for start in range(0, n, CHUNK):
        await asyncio.gather(*(exchange.publish(_message(i), routing_key="")
                               for i in range(start, min(n, start + CHUNK))))


async def msgkit_publish(url: str, n: int, queue_type: str) -> float:
    async with _topology(url, queue_type) as (topic, _), \
            msgkit.connect(url, queue_type=queue_type) as broker:
        producer = broker.producer()
        await producer.send(topic, BODY)  # opens the channel, declares the exchange
        start = time.perf_counter()
        for first in range(0, n, CHUNK):
            await producer.send_many(topic, [BODY] * min(CHUNK, n - first))
        return time.perf_counter() - start


async def aio_pika_publish(url: str, n: int, queue_type: str) -> float:
    async with _topology(url, queue_type) as (topic, _):
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()  # publisher confirms on
            exchange = await channel.get_exchange(topic)
            await exchange.publish(_message(0), routing_key="")
            start = time.perf_counter()
            for first in range(0, n, CHUNK):
                await asyncio.gather(*(exchange.publish(_message(i), routing_key="")
                                       for i in range(first, min(n, first + CHUNK))))
            return time.perf_counter() - start
        finally:
            await connection.close()


async def msgkit_consume(url: str, n: int, queue_type: str) -> float:
    async with _topology(url, queue_type) as (topic, channel):
        await _preload(channel, topic, n)
        async with msgkit.connect(url, queue_type=queue_type) as broker:
            handler = Countdown(n)

            start = time.perf_counter()
            consumer = broker.consumer(topic, group="g", prefetch=PREFETCH)
            await consumer.start(handler)
            await handler.done.wait()
            return time.perf_counter() - start


async def aio_pika_consume(url: str, n: int, queue_type: str) -> float:
    async with _topology(url, queue_type) as (topic, channel):
        await _preload(channel, topic, n)
        connection = await aio_pika.connect(url)
        try:
            consumer_channel = await connection.channel()
            await consumer_channel.set_qos(prefetch_count=PREFETCH)
            done = asyncio.Event()
            count = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal count
                await message.ack()
                count += 1
                if count == n:
                    done.set()

            start = time.perf_counter()
            queue = await consumer_channel.get_queue(f"{topic}.g")
            await queue.consume(on_message)
            await done.wait()
            return time.perf_counter() - start
        finally:
            await connection.close()


def _with(run: Callable[[str, int, str], Awaitable[float]], queue_type: str) -> Run:
    return lambda url, n: run(url, n, queue_type)


CASES = [
    case
    for queue_type, rounds in (("quorum", 5), ("classic", 3))
    for case in (
        Case(f"rabbitmq confirmed publish ({queue_type})", "amqp", "aio-pika gather",
             _with(msgkit_publish, queue_type), _with(aio_pika_publish, queue_type),
             messages=20_000, rounds=rounds,
             notes=f"send_many chunks of {CHUNK} vs gather of {CHUNK} confirmed publishes"),
        Case(f"rabbitmq consume+ack ({queue_type})", "amqp", "aio-pika consumer",
             _with(msgkit_consume, queue_type), _with(aio_pika_consume, queue_type),
             messages=20_000, rounds=rounds, notes=f"prefetch {PREFETCH}"),
    )
]
