"""A foreign producer's record (binary key, binary, null and repeated headers) keeps every
byte through the handler, the retry topic, the dead-letter topic and a replay."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from confluent_kafka import Producer

import msgkit
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import Collector

KEY = b"\x00\x00\x00\x00\x07binkey\xff"
VALUE = b"\x00\x00\x00\x00\x07\xff avro body"
HEADERS: list[tuple[str, str | bytes | None]] = [
    ("bin", b"\xff\xfe\x00"), ("none", None), ("dup", b"1"), ("dup", b"2"), ("txt", b"t")]


async def produce_foreign(kafka_url: str, topic: str) -> tuple[int, int]:
    """Sends the record as a plain producer partitioning like the Java client (and msgkit)
    would; its (partition, offset)."""
    producer = Producer({"bootstrap.servers": urlsplit(kafka_url).netloc, "log_level": 0,
                         "partitioner": "murmur2_random"})
    stored: list[tuple[int | None, int | None]] = []
    producer.produce(topic, VALUE, KEY, headers=HEADERS,
                     on_delivery=lambda err, rec: stored.append((rec.partition(), rec.offset())))
    assert await asyncio.to_thread(producer.flush, 20) == 0
    partition, offset = stored[0]
    assert partition is not None and offset is not None
    return partition, offset


def raw_headers(msg: msgkit.Message) -> list[tuple[str, str | bytes | None]]:
    """The record's own headers, as on the wire, without msgkit's."""
    return [(k, v) for k, v in msg.native.headers() or () if not k.startswith("msgkit-")]


async def test_a_foreign_record_reaches_the_handler_with_every_byte(
    kafka: msgkit.Broker, kafka_url: str, unique_name: str
) -> None:
    got = Collector()
    await kafka.consumer(unique_name, group="g").start(got)
    partition, offset = await produce_foreign(kafka_url, unique_name)
    [msg] = await got.wait_for(1, timeout=30)
    assert (msg.key, msg.value) == (KEY, VALUE)
    assert msg.id == f"{unique_name}-{partition}-{offset}", "no msgkit id: where Kafka stored it"
    assert list(msg.headers.items()) == [
        ("bin", b"\xff\xfe\x00"), ("none", None), ("dup", "1"), ("dup", "2"), ("txt", "t")]
    assert msg.headers.getall("dup") == ["1", "2"]


async def test_retry_copies_dead_letters_and_replays_of_a_foreign_record_keep_every_byte(
    kafka: msgkit.Broker, kafka_url: str, unique_name: str
) -> None:
    broken = True
    tries = Collector(fail=lambda _: broken)
    policy = msgkit.FailurePolicy(delays=(0.0,), max_attempts=2)
    await kafka.consumer(unique_name, group="g", failure=policy).start(tries)
    partition, _ = await produce_foreign(kafka_url, unique_name)
    dlq = DeadLetterQueue(kafka, unique_name, "g", idle=1.0)
    letters: list[msgkit.Message] = []
    while not letters:
        letters = await asyncio.wait_for(dlq.messages(), 30)
    [letter] = letters
    first, copy = tries.failures
    assert copy.native.topic() == f"{unique_name}.g.retry"
    for msg in (first, copy, letter):
        assert msg.native.key() == KEY and msg.native.value() == VALUE
        assert raw_headers(msg) == HEADERS, f"{msg.native.topic()} changed the headers"
    broken = False
    assert await dlq.replay() == 1
    [replayed] = await tries.wait_for(1, timeout=30)
    assert replayed.native.key() == KEY and raw_headers(replayed) == HEADERS
    assert replayed.attempt == 1 and replayed.id == first.id
    # The replay goes through the group's retry topic, which has the topic's partition count:
    # the same key bytes land on the same partition number (an altered key would not).
    assert replayed.native.partition() == partition
