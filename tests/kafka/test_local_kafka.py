"""The local Apache Kafka launcher itself: a three-node KRaft cluster replicates what msgkit
sends, and each node runs the version the pom pins."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

import msgkit
from msgkit.testing import Collector
from msgkit_kafka.kafka_jars import kafka_version
from msgkit_kafka.local_kafka import LocalKafka, random_cluster_id
from msgkit_kafka.testing import LOCAL_QUERY, with_query


@pytest.fixture
def cluster(kafka_cluster: LocalKafka) -> LocalKafka:
    return kafka_cluster


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


def test_the_nodes_run_the_pinned_kafka_version(cluster: LocalKafka) -> None:
    for node in cluster.nodes:
        assert f"Kafka version: {kafka_version()}" in node.log.read_text(errors="replace"), node.node_id


def test_cluster_ids_never_look_like_an_option_to_the_storage_tool() -> None:
    ids = [random_cluster_id() for _ in range(2000)]  # about 31 would start with "-" by chance
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
