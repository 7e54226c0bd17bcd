"""Apache Kafka is killed (SIGKILL) while a consumer group is mid-stream and started again on
the same log directory: every confirmed message is consumed, committed offsets survive and
producer and consumer recover by themselves. The test runs its own broker, to kill it."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

import msgkit
from msgkit.consumer import DEFAULT_PREFETCH
from msgkit.errors import BrokerUnavailableError
from msgkit.testing import eventually
from msgkit.testing.brokers import unavailable
from msgkit_kafka.local_kafka import LocalKafka
from msgkit_kafka.poller import BATCH
from msgkit_kafka.testing import LOCAL_QUERY, with_query

PARTITIONS = 3
COMMITTED = 4000  # well above SLACK: lost offsets would show
"""Committed before the kill: more than a consumer holds in flight (its buffer), so that
lost offsets would show as that many messages handled again."""
SLACK = 2 * BATCH + DEFAULT_PREFETCH
"""What may be handled again without losing offsets: the default buffer and prefetch."""


@pytest.fixture
def own_kafka() -> Iterator[LocalKafka]:
    try:
        kafka = LocalKafka()
    except BrokerUnavailableError as exc:
        unavailable(f"no local Apache Kafka to kill: {exc}")
    yield kafka
    kafka.stop()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    # A fresh client each time: one from before the kill may keep asking a stale coordinator.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    [future] = admin.list_consumer_group_offsets([request]).values()
    return {tp.partition: tp.offset for tp in future.result(10).topic_partitions}


async def committed_once_loaded(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """`committed`, retried while a restarted broker is still loading its offsets topic."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await asyncio.to_thread(committed, bootstrap, group, topic)
        except (KafkaException, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def enough(offsets: dict[int, int]) -> bool:
    return min(offsets.values()) >= 0 and sum(offsets.values()) >= COMMITTED


async def test_broker_killed_mid_stream_keeps_confirmed_messages_and_offsets(
    own_kafka: LocalKafka, unique_name: str
) -> None:
    seed = random.randrange(1 << 30)
    down_for = random.Random(seed).uniform(0.5, 3.0)
    print(f"broker kill seed: {seed} (down for {down_for:.2f}s)")
    url = with_query(own_kafka.url, LOCAL_QUERY)
    handled: collections.Counter[str] = collections.Counter()
    confirmed: list[str] = []
    failed_sends = 0
    stop = asyncio.Event()

    async def handle(msg: msgkit.Message) -> None:
        handled[msg.id] += 1

    async with msgkit.connect(url, partitions=PARTITIONS) as broker:
        consumer = broker.consumer(unique_name, group="g", start="earliest")
        await consumer.start(handle)
        producer = broker.producer()

        async def publish() -> None:
            nonlocal failed_sends
            n = 0
            while not stop.is_set():
                try:
                    confirmed.extend(await producer.send_many(
                        unique_name, [f"{n + i}" for i in range(20)], key=lambda v: f"k{int(v) % 7}"))
                except msgkit.PublishError:
                    failed_sends += 1  # not confirmed: the test does not expect them
                n += 20
                await asyncio.sleep(0.01)

        publishing = asyncio.create_task(publish())
        try:
            deadline = time.monotonic() + 60
            # Every partition committed (no -1001), and COMMITTED offsets in all.
            while not enough(before := await committed_once_loaded(own_kafka.bootstrap, "g", unique_name)):
                assert time.monotonic() < deadline, f"{COMMITTED} offsets not committed in 60s: {before}"
                await asyncio.sleep(0.2)
            node = own_kafka.nodes[0]
            await asyncio.to_thread(node.kill)
            at_kill = (len(confirmed), sum(handled.values()))
            await asyncio.sleep(down_for)  # the outage itself, of a seeded length
            node.start()
            await asyncio.to_thread(own_kafka.wait_ready)
            back = time.monotonic()
            after = await committed_once_loaded(own_kafka.bootstrap, "g", unique_name)
            assert all(after[p] >= before[p] for p in before), (before, after)
            await eventually(lambda: len(confirmed) >= at_kill[0] + 200, timeout=60,
                             message="publishing resumed by itself")
            await eventually(lambda: sum(handled.values()) >= at_kill[1] + 200, timeout=60,
                             message="consuming resumed by itself")
            recovered_in = time.monotonic() - back
        finally:
            stop.set()
            await asyncio.wait_for(publishing, 120)
        await eventually(lambda: set(confirmed) <= handled.keys(), timeout=60,
                         message="every confirmed message consumed")
        assert consumer.running
    again = sum(n - 1 for n in handled.values())
    print(f"broker kill: {len(confirmed)} confirmed, {failed_sends} sends failed, "
          f"{again} handled again, recovered {recovered_in:.1f}s after the broker was back")
    # Offsets committed before the kill held: only what was in flight is handled again.
    assert again <= at_kill[1] - sum(before.values()) + SLACK
