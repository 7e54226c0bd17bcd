"""The local Apache Kafka launcher itself: a three-node KRaft cluster replicates what msgkit
sends, and the version it runs is the one the pom pins."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import NoReturn

import pytest
from confluent_kafka.admin import AdminClient

import msgkit
from msgkit.errors import BrokerUnavailableError
from msgkit.testing import Collector
from msgkit_kafka.kafka_jars import fetch_jars, kafka_version
from msgkit_kafka.local_kafka import LocalKafka
from msgkit_kafka.testing import LOCAL_QUERY, with_query


def unavailable(exc: BrokerUnavailableError) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"no local Apache Kafka: {exc}", pytrace=False)
    pytest.skip(f"no local Apache Kafka: {exc}")


@pytest.fixture
def cluster() -> Iterator[LocalKafka]:
    try:
        kafka = LocalKafka(nodes=3, heap="512m")
    except BrokerUnavailableError as exc:
        unavailable(exc)
    yield kafka
    kafka.stop()


async def test_three_nodes_replicate_every_topic_msgkit_creates(
    cluster: LocalKafka, unique_name: str
) -> None:
    async with msgkit.connect(with_query(cluster.url, LOCAL_QUERY)) as broker:
        got = Collector()
        await broker.consumer(unique_name, group="g").start(got)
        await broker.producer().send_many(unique_name, [f"{n}" for n in range(30)])
        await got.wait_for(30, timeout=30)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0})
    metadata = admin.list_topics(timeout=10)
    assert set(metadata.brokers) == {1, 2, 3}
    for name in (unique_name, "__consumer_offsets"):
        for partition in metadata.topics[name].partitions.values():
            assert sorted(partition.replicas) == [1, 2, 3], (name, partition.id)
            assert sorted(partition.isrs) == [1, 2, 3], (name, partition.id)


def test_the_cached_broker_is_the_pinned_version() -> None:
    try:
        libs = fetch_jars()
    except BrokerUnavailableError as exc:
        unavailable(exc)
    [core] = [p.name for p in libs.glob("kafka_2.13-*.jar")]
    assert re.fullmatch(rf"kafka_2\.13-{re.escape(kafka_version())}\.jar", core)
