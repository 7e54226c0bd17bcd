"""Fixtures for the Kafka adapter's own tests (a real broker through `kafka_url`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

import msgkit
from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import unavailable
from msgkit_kafka.local_kafka import LocalKafka
from msgkit_kafka.subscription import KafkaSubscription

CLUSTER_SETTINGS = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}
"""A killed node is fenced (its partitions get new leaders) after 3 s, not Kafka's 9 s."""

Committed = Callable[[str, str, int], Awaitable[int]]
WaitCommitted = Callable[[str, str, int, int], Awaitable[None]]


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[LocalKafka]:
    """Three KRaft nodes on loopback (replication factor 3, min.insync.replicas 2), shared
    by the cluster and failover tests; a test that kills a node starts it again."""
    try:
        cluster = LocalKafka(nodes=3, heap="512m", overrides=CLUSTER_SETTINGS)
    except BrokerUnavailableError as exc:
        unavailable(f"no local three-node Apache Kafka cluster: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
async def kafka(kafka_url: str) -> AsyncIterator[msgkit.Broker]:
    async with msgkit.connect(kafka_url) as broker:
        yield broker


@pytest.fixture
async def kafka1(kafka_url: str) -> AsyncIterator[msgkit.Broker]:
    """Topics with one partition: offsets of all messages are comparable."""
    async with msgkit.connect(kafka_url, partitions=1) as broker:
        yield broker


@pytest.fixture
def committed(kafka: msgkit.Broker) -> Committed:
    """The group's committed offset of a partition (-1001 when none)."""

    async def read(group: str, topic: str, partition: int) -> int:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])
        [future] = kafka.native.list_consumer_group_offsets([request]).values()
        result = await asyncio.wrap_future(future)
        offset: int = result.topic_partitions[0].offset
        return offset

    return read


@pytest.fixture
def wait_committed(committed: Committed) -> WaitCommitted:
    """Waits (5 s at most) until the group's committed offset of a partition is `want`."""

    async def wait(group: str, topic: str, partition: int, want: int) -> None:
        seen: list[int] = []
        for _ in range(100):
            seen.append(await committed(group, topic, partition))
            if seen[-1] == want:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"committed offset of {topic} never became {want}: {seen[-5:]}")

    return wait


@pytest.fixture
def sub_of() -> Callable[[msgkit.Consumer], KafkaSubscription]:
    """The Kafka subscription behind a started consumer (for its introspection)."""

    def get(consumer: msgkit.Consumer) -> KafkaSubscription:
        sub = consumer._subscription
        assert isinstance(sub, KafkaSubscription)
        return sub

    return get
