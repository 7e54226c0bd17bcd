"""Redelivery through the group's retry topic, publishing to one group, safe fetches."""

from __future__ import annotations

import asyncio
import time

import msgkit
from msgkit.backend import SubscriptionSpec
from msgkit.consumer import DLQ_GROUP
from msgkit.message import Outgoing
from msgkit.testing import Collector


async def test_retry_topic_counts_attempts_and_keeps_the_original_topic(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    got = Collector(fail=lambda m: m.attempt < 3)
    policy = msgkit.FailurePolicy(delays=(0.0,), max_attempts=5)
    await kafka.consumer(unique_name, group="billing", failure=policy).start(got)
    sent = await kafka.producer().send(unique_name, b"flaky", key="k", headers={"keep": "me"})
    [msg] = await got.wait_for(1, timeout=20)
    assert [f.attempt for f in got.failures] == [1, 2]
    assert msg.id == sent and msg.attempt == 3 and msg.topic == unique_name
    assert msg.key == "k" and msg.headers["keep"] == "me"
    assert not any(k.startswith("msgkit-kafka-") for k in msg.headers)
    retry = f"{unique_name}.billing.retry"
    assert msg.native.topic() == retry
    topics = kafka.native.list_topics(timeout=5).topics
    assert retry in topics


async def test_dead_letter_after_retry_copies_names_where_the_message_was_first_stored(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    failing = Collector(fail=lambda m: True)
    policy = msgkit.FailurePolicy(delays=(0.0,), max_attempts=3)
    await kafka.consumer(unique_name, group="billing", failure=policy).start(failing)
    dead = Collector()
    await kafka.consumer(msgkit.dead_letter_topic(unique_name, "billing"),
                         group=DLQ_GROUP).start(dead)
    await kafka.producer().send(unique_name, b"poison", key="k")
    [msg] = await dead.wait_for(1, timeout=20)
    first = failing.failures[0].native
    assert first.topic() == unique_name
    assert msg.headers["msgkit-dlq-partition"] == str(first.partition())
    assert msg.headers["msgkit-dlq-offset"] == str(first.offset())
    last = failing.failures[-1].native
    assert msg.headers["msgkit-dlq-retry-topic"] == last.topic() == f"{unique_name}.billing.retry"
    assert msg.headers["msgkit-dlq-retry-offset"] == str(last.offset())
    assert not any(k.startswith("msgkit-kafka-") for k in msg.headers)


async def test_retry_copies_reach_only_their_group(kafka: msgkit.Broker, unique_name: str) -> None:
    flaky = Collector(fail=lambda m: m.attempt == 1)
    calm = Collector()
    policy = msgkit.FailurePolicy(delays=(0.0,))
    await kafka.consumer(unique_name, group="flaky", failure=policy).start(flaky)
    await kafka.consumer(unique_name, group="calm").start(calm)
    await kafka.producer().send(unique_name, b"x")
    await flaky.wait_for(1, timeout=20)
    await calm.wait_for(1)
    await kafka.producer().send(unique_name, b"sentinel")
    await calm.wait_for(2)
    assert calm.values == [b"x", b"sentinel"]


async def test_delayed_copy_waits_paused_while_its_partition_does_not_spin(
    kafka1: msgkit.Broker, unique_name: str
) -> None:
    got = Collector(fail=lambda m: m.attempt == 1 and m.value == b"later")
    # 3 s: a and b, sent after the failure, must come first even when a loaded machine
    # takes a second to fetch them (with 1 s, 1 CI run in about 10 saw the copy first)
    policy = msgkit.FailurePolicy(delays=(3.0,))
    await kafka1.consumer(unique_name, group="g", failure=policy).start(got)
    producer = kafka1.producer()
    await producer.send(unique_name, b"later")
    await got.wait_failures(1)
    failed = time.monotonic()
    await producer.send_many(unique_name, [b"a", b"b"])
    await got.wait_for(3, timeout=20)
    assert got.values == [b"a", b"b", b"later"]
    assert time.monotonic() - failed >= 2.8
    assert got.messages[2].attempt == 2


async def test_consumer_without_group_redelivers_locally(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    got = Collector(fail=lambda m: m.attempt == 1)
    await kafka.consumer(unique_name, failure=msgkit.FailurePolicy(delays=(0.2,))).start(got)
    await kafka.producer().send(unique_name, b"x")
    [msg] = await got.wait_for(1, timeout=15)
    assert msg.attempt == 2 and msg.topic == unique_name


async def test_publish_to_group_reaches_only_that_group(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    mine, other = Collector(), Collector()
    await kafka.consumer(unique_name, group="mine").start(mine)
    await kafka.consumer(unique_name, group="other").start(other)
    publisher = await kafka.backend.publisher(msgkit.Guarantee.AT_LEAST_ONCE, options={})
    out = Outgoing(unique_name, b"replayed", "k", {"h": "v", "msgkit-id": "id-1"}, "id-1",
                   time.time())
    await publisher.publish_to_group("mine", [out])
    [msg] = await mine.wait_for(1)
    assert (msg.id, msg.key, msg.headers["h"], msg.attempt, msg.topic) == (
        "id-1", "k", "v", 1, unique_name)
    await kafka.producer().send(unique_name, b"sentinel")
    await other.wait_for(1)
    assert other.values == [b"sentinel"]
    await publisher.close()


async def test_dead_letters_carry_partition_and_offset(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    await kafka.consumer(unique_name, group="g", failure=msgkit.FailurePolicy(delays=()),
                         ).start(Collector(fail=lambda m: True))
    await kafka.producer().send(unique_name, b"poison")
    dead = Collector()
    await kafka.consumer(msgkit.dead_letter_topic(unique_name, "g"), group="dlq").start(dead)
    [msg] = await dead.wait_for(1, timeout=20)
    assert msg.headers["msgkit-dlq-offset"] == "0"
    assert msg.headers["msgkit-dlq-partition"] in ("0", "1", "2")


async def test_dead_letters_are_sent_without_waiting_out_linger(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    # Each dead letter is awaited alone: librdkafka's 5 ms linger made a flood of poison
    # messages drain at ~150/s per worker (630/s without it, measured on Tansu).
    consumer = kafka.consumer(unique_name, group="g", failure=msgkit.FailurePolicy(delays=()))
    await consumer.start(Collector(fail=lambda m: True))
    await kafka.producer().send(unique_name, b"poison")
    dead = Collector()
    await kafka.consumer(msgkit.dead_letter_topic(unique_name, "g"), group="dlq").start(dead)
    await dead.wait_for(1, timeout=20)
    assert consumer._dead_letters is not None
    assert consumer._dead_letters.describe()["client"]["linger.ms"] == 0


async def test_cancelled_fetch_takes_no_message(kafka: msgkit.Broker, unique_name: str) -> None:
    spec = SubscriptionSpec(topic=unique_name, group="g", prefetch=10, start="earliest",
                            guarantee=msgkit.Guarantee.AT_LEAST_ONCE)
    sub = await kafka.backend.subscribe(spec)
    try:
        waiting = asyncio.create_task(sub.fetch(10))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        sent = await kafka.producer().send(unique_name, b"x")
        batch = await asyncio.wait_for(sub.fetch(10), 15)
        assert [d.message.id for d in batch] == [sent]
        await batch[0].ack()
    finally:
        await sub.close()
    assert await sub.fetch(1) == ()
