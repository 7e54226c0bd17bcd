"""Awaited single sends against the raw clients: the floor msgkit and FastStream share.

One message at a time, each waiting for the broker's confirmation, so the figure is mostly
the broker's round trip; these rows say how close to it each library gets (the FastStream
rows compare the two libraries).

- RabbitMQ: aio-pika `publish` awaited on a confirm channel, classic queue (as the
  FastStream case), same message properties as msgkit's.
- Kafka: confluent-kafka `produce` then `flush` per message, acks=all, idempotence on,
  `linger.ms=0` on both sides (msgkit gets it as a producer option).
"""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import Producer

from bench.cases import faststream, faststream_kafka
from bench.cases.kafka import PAYLOAD, _confs, _create, _topic
from bench.cases.rabbitmq import _message, _topology
from bench.harness import Case


async def aio_pika_awaited_sends(url: str, n: int) -> float:
    async with _topology(url, faststream.QUEUE_TYPE) as (topic, channel):
        exchange = await channel.get_exchange(topic)  # the topology's channel confirms
        await exchange.publish(_message(0), routing_key="")
        start = time.perf_counter()
        for i in range(n):
            await exchange.publish(_message(i), routing_key="")
        return time.perf_counter() - start


async def confluent_awaited_sends(url: str, n: int) -> float:
    topic = _topic()
    await _create(url, topic)
    conf, _ = _confs(url)
    conf.update({"acks": "all", "enable.idempotence": True, "linger.ms": 0})
    return await asyncio.to_thread(_produce_one_by_one, conf, topic, n)


def _produce_one_by_one(conf: dict[str, object], topic: str, n: int) -> float:
    producer = Producer(conf)
    producer.produce(topic, PAYLOAD)
    producer.flush(30)
    start = time.perf_counter()
    for _ in range(n):
        producer.produce(topic, PAYLOAD)
        producer.flush(30)
    return time.perf_counter() - start


CASES = [
    Case("rabbitmq awaited single sends vs raw", "amqp", "aio-pika",
         faststream.msgkit_awaited_sends, aio_pika_awaited_sends, messages=2_000,
         notes="one confirmed publish at a time, classic queue"),
    Case("kafka awaited single sends vs raw, linger.ms=0 both", "kafka", "confluent-kafka",
         lambda url, n: faststream_kafka.msgkit_awaited_sends(url, n, **{"linger.ms": 0}),
         confluent_awaited_sends, messages=1_000, notes="produce + flush per message"),
]
