"""Publishing on Kafka: confirmations, keys, headers, a full local queue, native access."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

import msgkit
from msgkit.testing import Collector
from msgkit_kafka.publisher import NativeProducer


async def test_headers_keys_and_native_record_round_trip(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    got = Collector()
    consumer = kafka.consumer(unique_name, group="g")
    await consumer.start(got)
    producer = kafka.producer()
    sent = await producer.send(unique_name, b"v", key="kunde-ü",
                               headers={"trace": "t-1", "empty": "", "uni": "ä€"})
    [msg] = await got.wait_for(1)
    assert msg.id == sent and msg.key == "kunde-ü" and msg.attempt == 1
    assert {k: msg.headers[k] for k in ("trace", "empty", "uni")} == {
        "trace": "t-1", "empty": "", "uni": "ä€"}
    record = msg.native
    assert record.topic() == unique_name and record.key() == "kunde-ü".encode()
    assert ("trace", b"t-1") in record.headers()
    assert isinstance(producer.native, Producer) and isinstance(consumer.native, Consumer)


async def test_same_key_same_partition_in_order(kafka: msgkit.Broker, unique_name: str) -> None:
    got = Collector()
    await kafka.consumer(unique_name, group="g", concurrency=8).start(got)
    await kafka.producer().send_many(unique_name, [f"{n}" for n in range(60)],
                                     key=lambda v: f"k{int(v) % 3}")
    await got.wait_for(60)
    for key in ("k0", "k1", "k2"):
        mine = [m for m in got.messages if m.key == key]
        assert len({m.native.partition() for m in mine}) == 1
        assert [m.native.offset() for m in mine] == sorted(m.native.offset() for m in mine)
        assert [int(m.text()) for m in mine] == sorted(int(m.text()) for m in mine)


async def test_full_local_queue_waits_for_room_instead_of_failing(
    kafka: msgkit.Broker, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = 0
    room = NativeProducer.room

    async def counting_room(self: NativeProducer) -> None:
        nonlocal waits
        waits += 1
        await room(self)

    monkeypatch.setattr(NativeProducer, "room", counting_room)
    got = Collector()
    await kafka.consumer(unique_name, group="g").start(got)
    tiny_queue: dict[str, Any] = {"queue.buffering.max.messages": 10}
    producer = kafka.producer(**tiny_queue)
    ids = await producer.send_many(unique_name, [f"{n}" for n in range(2000)])
    assert len(set(ids)) == 2000
    assert waits > 0, "the local queue never filled; the test proves nothing"
    await got.wait_for(2000, timeout=30)
    assert got.ids == set(ids)


async def test_at_most_once_producer_does_not_wait_but_delivers(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    got = Collector()
    await kafka.consumer(unique_name, group="g").start(got)
    producer = kafka.producer(guarantee=msgkit.Guarantee.AT_MOST_ONCE)
    ids = await producer.send_many(unique_name, [b"x"] * 50)
    await got.wait_for(50)
    assert got.ids == set(ids)
    assert producer.describe()["client"]["acks"] == 1


async def test_describe_shows_effective_settings_without_secrets(
    kafka_url: str, unique_name: str
) -> None:
    secret: dict[str, Any] = {"sasl.password": "hunter2"}
    linger: dict[str, Any] = {"linger.ms": 7}
    async with msgkit.connect(kafka_url, **secret) as broker:
        # SASL settings on a PLAINTEXT listener are ignored by librdkafka (with a warning).
        producer = broker.producer(**linger)
        await producer.send(unique_name, b"x")
        described = producer.describe()
        assert described["client"]["linger.ms"] == 7
        assert described["client"]["acks"] == "all"
        assert described["client"]["enable.idempotence"] is True
        assert "hunter2" not in repr(described)
        consumer = broker.consumer(unique_name, group="g")
        await consumer.start(Collector())
        client = consumer.describe()["client"]
        assert client["group.id"] == "g" and client["enable.auto.commit"] is False
        assert client["fetch.queue.backoff.ms"] == 20  # msgkit's default, not librdkafka's 1 s
        assert "hunter2" not in repr(client)
        own: dict[str, Any] = {"fetch.queue.backoff.ms": 500}
        tuned = broker.consumer(unique_name, group="g2", **own)
        await tuned.start(Collector())
        assert tuned.describe()["client"]["fetch.queue.backoff.ms"] == 500


async def test_a_producer_librdkafka_failed_for_good_is_replaced_on_the_next_send(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    """A fatal error (an idempotent producer out of sequence, say) makes a librdkafka client
    refuse everything after it; the sends it failed raised, and the next one goes through a
    new client instead of failing forever."""
    producer = kafka.producer()
    await producer.send_many(unique_name, [b"before"])
    failed = producer._publisher._native  # type: ignore[union-attr]
    failed.fatal = True  # as the poll thread marks it when librdkafka raises a fatal error
    await producer.send_many(unique_name, [b"after"])
    assert producer._publisher._native is not failed  # type: ignore[union-attr]
    got = Collector()
    await kafka.consumer(unique_name, group="g", start="earliest").start(got)
    assert sorted(m.value for m in await got.wait_for(2)) == [b"after", b"before"]
