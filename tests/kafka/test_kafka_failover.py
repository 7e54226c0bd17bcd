"""A node of a three-node Apache Kafka cluster dies mid-stream (SIGKILL of a partition's
leader), or every node restarts in turn: nothing confirmed is lost, the group's members go on
by themselves, exactly-once stays exactly-once. Seeded; figures are printed."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

import msgkit
from msgkit.dedup import Dedup
from msgkit.testing import eventually
from msgkit_kafka.local_kafka import KafkaNode, LocalKafka
from msgkit_kafka.testing import LOCAL_QUERY, with_query

PARTITIONS = 3
ROUNDS = int(os.environ.get("MSGKIT_FAILOVER_ROUNDS", "1"))
"""Kills per failover test: 1 in `make test`, more in `make soak`."""
WAIT = 90.0
"""Deadline for recoveries: a node is fenced after 3 s, a JVM restarts in 5-15 s here."""
pytestmark = pytest.mark.timeout(4 * WAIT)  # a test waits for several recoveries


@pytest.fixture
def cluster(kafka_cluster: LocalKafka) -> Iterator[LocalKafka]:
    yield kafka_cluster
    for node in kafka_cluster.nodes:  # whatever the test did, the next one gets all three
        if not node.running:
            node.start()
    kafka_cluster.wait_ready()
    in_sync(kafka_cluster, deadline=time.monotonic() + WAIT)


def admin(cluster: LocalKafka) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0})


def leader(cluster: LocalKafka, topic: str, partition: int) -> KafkaNode:
    md = admin(cluster).list_topics(topic, timeout=10)
    node_id = md.topics[topic].partitions[partition].leader
    return next(n for n in cluster.nodes if n.node_id == node_id)


def in_sync(cluster: LocalKafka, deadline: float) -> None:
    """Blocks until every partition of every topic has all three replicas in sync."""
    while True:
        md = admin(cluster).list_topics(timeout=10)
        lagging = [(t, p.id) for t, meta in md.topics.items() for p in meta.partitions.values()
                   if len(p.isrs) < len(p.replicas)]
        if not lagging:
            return
        assert time.monotonic() < deadline, f"replicas not back in sync: {lagging[:5]}"
        time.sleep(0.2)


class Traffic:
    """A producer pipelining at-least-once batches and what a group of members handled."""

    def __init__(self, broker: msgkit.Broker, topic: str) -> None:
        self.producer = broker.producer()
        self.topic = topic
        self.confirmed: list[str] = []
        self.failed_sends = 0
        self.handled: collections.Counter[str] = collections.Counter()
        self.times: list[tuple[float, int]] = []  # (when, partition) of each handling
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def member(self, name: str, per_member: dict[str, int]
               ) -> Callable[[msgkit.Message], Awaitable[None]]:
        async def handle(msg: msgkit.Message) -> None:
            self.handled[msg.id] += 1
            self.times.append((time.monotonic(), msg.native.partition()))
            per_member[name] += 1

        return handle

    async def _publish(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                self.confirmed.extend(await self.producer.send_many(
                    self.topic, [f"{n + i}" for i in range(20)], key=lambda v: f"k{int(v) % 11}"))
            except msgkit.PublishError:
                self.failed_sends += 1  # not confirmed: not expected either
            n += 20
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 120)

    def first_after(self, moment: float, partition: int | None = None) -> float:
        return next(t for t, p in self.times if t > moment and partition in (None, p)) - moment

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.handled.values())


@pytest.fixture
def url(cluster: LocalKafka) -> str:
    return with_query(cluster.url, LOCAL_QUERY)


async def test_killing_a_partition_leader_loses_no_confirmed_message(
    cluster: LocalKafka, url: str, unique_name: str, report: Callable[[str], None]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    per_member: dict[str, int] = collections.Counter()
    recoveries: list[str] = []
    async with msgkit.connect(url, partitions=PARTITIONS) as one, \
            msgkit.connect(url, partitions=PARTITIONS) as two:
        traffic = Traffic(one, unique_name)
        members = [one.consumer(unique_name, group="g"), two.consumer(unique_name, group="g")]
        for name, member in zip("ab", members, strict=True):
            await member.start(traffic.member(name, per_member))
        traffic.start()
        try:
            await eventually(lambda: len(traffic.handled) >= 500, timeout=WAIT,
                             message="flowing before the kill")
            before = dict(per_member)
            for _ in range(ROUNDS):
                down_for = rng.uniform(1.0, 5.0)
                victim_partition = rng.randrange(PARTITIONS)
                node = leader(cluster, unique_name, victim_partition)
                await asyncio.to_thread(node.kill)
                killed_at = time.monotonic()  # the node is gone: what follows went elsewhere
                at_kill = len(traffic.confirmed)
                await eventually(lambda: len(traffic.confirmed) >= at_kill + 500, timeout=WAIT,  # noqa: B023
                                 message="publishing went on without the node")
                await asyncio.sleep(down_for)  # the outage itself, of a seeded length
                node.start()
                await asyncio.to_thread(cluster.wait_ready)
                restarted = len(traffic.confirmed)
                await eventually(lambda: len(traffic.confirmed) >= restarted + 500, timeout=WAIT,  # noqa: B023
                                 message="publishing went on after the restart")
                recoveries.append(
                    f"node {node.node_id} (led partition {victim_partition}, down "
                    f"{down_for:.1f}s): next handled {traffic.first_after(killed_at):.2f}s, "
                    f"its partition's {traffic.first_after(killed_at, victim_partition):.2f}s "
                    "after the kill")
        finally:
            await traffic.stop()
        await eventually(lambda: set(traffic.confirmed) <= traffic.handled.keys(), timeout=WAIT,
                         message="every confirmed message handled")
        assert all(m.running for m in members), "a member needed a restart"
        assert all(per_member[n] > before.get(n, 0) for n in "ab"), (before, per_member)
    report(f"kafka leader kill x{ROUNDS} (seed {seed}): {len(traffic.confirmed)} confirmed, "
          f"0 lost, {traffic.duplicates} duplicates, {traffic.failed_sends} sends failed; "
          + "; ".join(recoveries))


@pytest.mark.soak  # three restarts in a row (~30 s); `make test` kills a leader once above
async def test_a_rolling_restart_loses_no_confirmed_message(
    cluster: LocalKafka, url: str, unique_name: str, report: Callable[[str], None]
) -> None:
    per_member: dict[str, int] = collections.Counter()
    async with msgkit.connect(url, partitions=PARTITIONS) as broker:
        traffic = Traffic(broker, unique_name)
        members = [broker.consumer(unique_name, group="g") for _ in range(2)]
        for name, member in zip("ab", members, strict=True):
            await member.start(traffic.member(name, per_member))
        traffic.start()
        started = time.monotonic()
        try:
            for node in cluster.nodes:
                await eventually(lambda: len(traffic.handled) >= 300, timeout=WAIT)
                at = len(traffic.confirmed)
                await asyncio.to_thread(node.stop)  # controlled shutdown, as an upgrade does
                node.start()
                await asyncio.to_thread(cluster.wait_ready)
                await asyncio.to_thread(in_sync, cluster, time.monotonic() + WAIT)
                await eventually(lambda: len(traffic.confirmed) >= at + 300, timeout=WAIT,  # noqa: B023
                                 message=f"publishing went on after node {node.node_id}")
        finally:
            await traffic.stop()
        await eventually(lambda: set(traffic.confirmed) <= traffic.handled.keys(), timeout=WAIT,
                         message="every confirmed message handled")
        assert all(m.running for m in members)
    report(f"kafka rolling restart of 3 nodes in {time.monotonic() - started:.0f}s: "
          f"{len(traffic.confirmed)} confirmed, 0 lost, {traffic.duplicates} duplicates, "
          f"{traffic.failed_sends} sends failed")


async def test_exactly_once_relay_stays_exactly_once_when_a_leader_dies(
    cluster: LocalKafka, url: str, unique_name: str, report: Callable[[str], None]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    inputs = [f"in-{n}" for n in range(3000)]
    output = f"{unique_name}.out"
    # Output records by value: the verifying consumer is at-least-once itself (it may read a
    # record twice across the failover), so records are told apart by where Kafka stored them.
    received: collections.defaultdict[bytes, set[tuple[int, int]]] = collections.defaultdict(set)

    async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        await ctx.send(output, msg.value, key=msg.key)

    async def collect(msg: msgkit.Message) -> None:
        received[msg.value].add((msg.native.partition(), msg.native.offset()))

    async with msgkit.connect(url, partitions=PARTITIONS) as broker:
        await broker.consumer(output, group="verify", start="earliest").start(collect)
        relaying = broker.consumer(unique_name, group="relay", guarantee=msgkit.Guarantee.EXACTLY_ONCE)
        await relaying.start(relay)
        producer = broker.producer()
        cut = rng.randrange(500, 2500)
        await producer.send_many(unique_name, inputs[:cut], key=lambda v: v)
        await eventually(lambda: len(received) >= cut // 3, timeout=WAIT)
        node = leader(cluster, unique_name, rng.randrange(PARTITIONS))
        await asyncio.to_thread(node.kill)
        await producer.send_many(unique_name, inputs[cut:], key=lambda v: v)
        node.start()
        await asyncio.to_thread(cluster.wait_ready)
        await eventually(lambda: len(received) >= len(inputs), timeout=WAIT,
                         message="every input relayed")
        assert relaying.running
    lost = [i for i in inputs if not received[i.encode()]]
    repeated = sum(len(records) - 1 for records in received.values())
    report(f"kafka exactly-once relay across a leader kill (seed {seed}, node {node.node_id}, "
          f"after {cut} inputs): {len(inputs)} inputs, {len(lost)} lost, {repeated} repeated")
    assert not lost and repeated == 0


async def test_killing_a_leader_keeps_every_effect_once_with_an_idempotency_store(
    cluster: LocalKafka, url: str, unique_name: str, redis_store_url: str,
    report: Callable[[str], None],
) -> None:
    effects: collections.Counter[str] = collections.Counter()
    async with Dedup(redis_store_url) as dedup, \
            msgkit.connect(url, partitions=PARTITIONS) as broker:
        traffic = Traffic(broker, unique_name)

        async def apply(msg: msgkit.Message) -> None:
            effects[msg.id] += 1
            traffic.handled[msg.id] += 1

        members = [broker.consumer(unique_name, group="g", dedup=dedup) for _ in range(2)]
        for member in members:
            await member.start(apply)
        traffic.start()
        try:
            await eventually(lambda: len(effects) >= 500, timeout=WAIT,
                             message="flowing before the kill")
            node = leader(cluster, unique_name, 0)
            await asyncio.to_thread(node.kill)
            at_kill = len(traffic.confirmed)
            await eventually(lambda: len(traffic.confirmed) >= at_kill + 500, timeout=WAIT,
                             message="publishing went on without the node")
            node.start()
            await asyncio.to_thread(cluster.wait_ready)
        finally:
            await traffic.stop()
        await eventually(lambda: set(traffic.confirmed) <= effects.keys(), timeout=WAIT,
                         message="every confirmed message applied")
        assert all(m.running for m in members)
        await broker.close()  # consumers stop before the store closes
    twice = {k: n for k, n in effects.items() if n > 1}
    report(f"kafka leader kill (node {node.node_id}) with dedup: {len(traffic.confirmed)} "
           f"confirmed, 0 lost, {len(twice)} effects twice")
    assert not twice
