"""msgkit against FastStream on the same broker in the same run (`pip install 'msgkit[bench]'`).

1. Awaited single sends: one `send`/`publish` at a time, each waiting for the broker's
   confirmation (what a request handler does when it publishes an event).
2. Consume with ack: a queue preloaded with n messages, drained by one consumer each.

RabbitMQ: same exchange and classic queue for both (FastStream's default queue type),
prefetch `PREFETCH`, persistent messages with publisher confirms.
"""

from __future__ import annotations

import asyncio
import time

from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import Channel

import msgkit
from bench.cases.rabbitmq import BODY, PREFETCH, _preload, _topology
from bench.harness import Case, Countdown

QUEUE_TYPE = "classic"


async def msgkit_awaited_sends(url: str, n: int) -> float:
    async with _topology(url, QUEUE_TYPE) as (topic, _), \
            msgkit.connect(url, queue_type=QUEUE_TYPE) as broker:
        producer = broker.producer()
        await producer.send(topic, BODY)  # open the channel first, as FastStream's connect does
        start = time.perf_counter()
        for _ in range(n):
            await producer.send(topic, BODY)
        return time.perf_counter() - start


async def faststream_awaited_sends(url: str, n: int) -> float:
    async with _topology(url, QUEUE_TYPE) as (topic, _):
        broker = RabbitBroker(url, logger=None)
        await broker.connect()
        exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
        try:
            await broker.publish(BODY, exchange=exchange, persist=True)
            start = time.perf_counter()
            for _ in range(n):
                await broker.publish(BODY, exchange=exchange, persist=True)
            return time.perf_counter() - start
        finally:
            await broker.stop()


async def msgkit_consume(url: str, n: int) -> float:
    async with _topology(url, QUEUE_TYPE) as (topic, channel), \
            msgkit.connect(url, queue_type=QUEUE_TYPE) as broker:
        await _preload(channel, topic, n)
        handler = Countdown(n)

        consumer = broker.consumer(topic, group="g", prefetch=PREFETCH)
        start = time.perf_counter()
        await consumer.start(handler)
        await handler.done.wait()
        elapsed = time.perf_counter() - start
        await consumer.stop()
        return elapsed


async def faststream_consume(url: str, n: int) -> float:
    async with _topology(url, QUEUE_TYPE) as (topic, channel):
        await _preload(channel, topic, n)
        broker = RabbitBroker(url, default_channel=Channel(prefetch_count=PREFETCH), logger=None)
        done = asyncio.Event()
        count = 0

        @broker.subscriber(RabbitQueue(f"{topic}.g", durable=True, declare=False))
        async def handler(body: bytes) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        start = time.perf_counter()
        await broker.start()
        try:
            await done.wait()
            return time.perf_counter() - start
        finally:
            await broker.stop()


CASES = [
    Case("rabbitmq awaited single sends vs FastStream", "amqp", "faststream", msgkit_awaited_sends,
         faststream_awaited_sends, messages=2_000, rounds=5),
    Case("rabbitmq consume+ack vs FastStream", "amqp", "faststream", msgkit_consume,
         faststream_consume, messages=20_000),
]
