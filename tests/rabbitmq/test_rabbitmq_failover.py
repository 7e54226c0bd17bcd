"""A node of a three-node RabbitMQ cluster dies (SIGKILL) under load: the node the clients
are connected to, or the one leading the group's quorum queue. Nothing confirmed is lost,
publishing and consuming resume on the other nodes by themselves, retries and dead letters
still work, and with an idempotency store every effect happens once. Seeded; figures printed."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import msgkit
from msgkit.dedup import Dedup
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import Collector, eventually
from msgkit.testing.system import run
from msgkit_rabbitmq.local_cluster import LocalRabbitCluster, RabbitNode

WAIT = 90.0
ROUNDS = int(os.environ.get("MSGKIT_FAILOVER_ROUNDS", "1"))
"""Kills per failover test: 1 in `make test`, more in `make soak`."""
OPTIONS: dict[str, Any] = {"reconnect_interval": 0.5, "connect_timeout": 10}


@pytest.fixture
def cluster(rabbit_cluster: LocalRabbitCluster) -> Iterator[LocalRabbitCluster]:
    yield rabbit_cluster
    for node in rabbit_cluster.nodes:  # the next test gets all three again
        if not node.running:
            node.start()
            node.await_startup()
    rabbit_cluster.wait_ready()


def queue_leader(cluster: LocalRabbitCluster, queue: str) -> RabbitNode:
    done = run("rabbitmqctl", "-n", cluster.nodes[0].name, "list_queues", "name", "leader",
               "--formatter", "json", timeout=30)
    [row] = [q for q in json.loads(done.stdout) if q["name"] == queue]
    return next(n for n in cluster.nodes if n.name == row["leader"])


class Load:
    """Awaited sends from one producer; what the group handled, and when."""

    def __init__(self, producer: msgkit.Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.confirmed: list[str] = []
        self.confirmed_at: list[float] = []
        self.failed_sends = 0
        self.handled: collections.Counter[str] = collections.Counter()
        self.handled_at: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def handle(self, msg: msgkit.Message) -> None:
        self.handled[msg.id] += 1
        self.handled_at.append(time.monotonic())

    async def _publish(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                ids = await self.producer.send_many(self.topic, [f"{n + i}" for i in range(10)],
                                                    key=lambda v: f"k{int(v) % 5}")
                self.confirmed.extend(ids)
                self.confirmed_at.append(time.monotonic())
            except msgkit.PublishError:
                self.failed_sends += 1  # not confirmed: not expected either
            n += 10

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 120)

    @staticmethod
    def first_after(times: list[float], moment: float) -> float:
        return next(t for t in times if t > moment) - moment

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.handled.values())


async def still_retries_and_dead_letters(broker: msgkit.Broker, topic: str) -> None:
    """After the failover: a delayed retry comes back, and a poison message is dead-lettered."""
    got = Collector(fail=lambda m: m.value == b"poison" or m.attempt == 1)
    policy = msgkit.FailurePolicy(max_attempts=2, delays=(0.2,))
    await broker.consumer(topic, group="after", failure=policy).start(got)
    producer = broker.producer()
    await producer.send(topic, b"flaky")
    poison = await producer.send(topic, b"poison")
    [msg] = await got.wait_for(1, timeout=WAIT)
    assert (msg.value, msg.attempt) == (b"flaky", 2), "the delayed retry came back"
    dlq = DeadLetterQueue(broker, topic, "after", idle=1.0)

    async def dead() -> list[msgkit.Message]:
        while not (found := await dlq.messages()):
            pass
        return found

    assert [m.id for m in await asyncio.wait_for(dead(), WAIT)] == [poison]


async def test_killing_the_node_the_clients_use_loses_no_confirmed_message(
    cluster: LocalRabbitCluster, unique_name: str, report: Callable[[str], None]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    victim = cluster.nodes[0]
    url = cluster.url_from(victim)  # every client connects to the victim first
    recoveries: list[str] = []
    async with msgkit.connect(url, **OPTIONS) as consumers, \
            msgkit.connect(url, **OPTIONS) as producers:
        load = Load(producers.producer(required_groups=("g",)), unique_name)
        members = [consumers.consumer(unique_name, group="g", concurrency=4) for _ in range(2)]
        for member in members:
            await member.start(load.handle)
        load.start()
        try:
            await eventually(lambda: len(load.handled) >= 300, timeout=WAIT,
                             message="flowing before the kill")
            for round_ in range(ROUNDS):
                if round_:  # later rounds: the node the clients moved to
                    victim = next(n for n in cluster.nodes
                                  if n.port == consumers.backend.native.node.port)
                down_for = rng.uniform(1.0, 4.0)
                await asyncio.to_thread(victim.kill)
                killed_at = time.monotonic()  # the node is gone: what follows went elsewhere
                at_kill = len(load.confirmed)
                await eventually(lambda: len(load.confirmed) >= at_kill + 300, timeout=WAIT,  # noqa: B023
                                 message="publishing resumed on another node")
                handled = len(load.handled)
                await eventually(lambda: len(load.handled) >= handled + 300, timeout=WAIT,  # noqa: B023
                                 message="consuming resumed on another node")
                recoveries.append(
                    f"{victim.name} down {down_for:.1f}s: publishing resumed "
                    f"{load.first_after(load.confirmed_at, killed_at):.2f}s and consuming "
                    f"{load.first_after(load.handled_at, killed_at):.2f}s after the kill")
                await asyncio.sleep(down_for)  # the node stays down a seeded while
                victim.start()
                await asyncio.to_thread(victim.await_startup)
                await asyncio.to_thread(cluster.wait_ready)
        finally:
            await load.stop()
        await eventually(lambda: set(load.confirmed) <= load.handled.keys(), timeout=WAIT,
                         message="every confirmed message handled")
        assert all(m.running for m in members)
        await still_retries_and_dead_letters(consumers, unique_name)
    report(f"rabbitmq connected-node kill x{ROUNDS} (seed {seed}): {len(load.confirmed)} "
          f"confirmed, 0 lost, {load.duplicates} duplicates, {load.failed_sends} sends "
          "failed; " + "; ".join(recoveries))


async def test_killing_the_quorum_leader_keeps_every_effect_exactly_once(
    cluster: LocalRabbitCluster, unique_name: str, redis_store_url: str,
    report: Callable[[str], None],
) -> None:
    effects: collections.Counter[str] = collections.Counter()
    async with Dedup(redis_store_url) as dedup, msgkit.connect(cluster.url, **OPTIONS) as broker:
        load = Load(broker.producer(required_groups=("g",)), unique_name)

        async def apply(msg: msgkit.Message) -> None:
            effects[msg.id] += 1
            await load.handle(msg)

        members = [broker.consumer(unique_name, group="g", concurrency=4, dedup=dedup)
                   for _ in range(2)]
        for member in members:
            await member.start(apply)
        load.start()
        try:
            await eventually(lambda: len(load.handled) >= 300, timeout=WAIT,
                             message="flowing before the kill")
            victim = queue_leader(cluster, f"{unique_name}.g")
            await asyncio.to_thread(victim.kill)
            killed_at = time.monotonic()  # the node is gone: what follows went elsewhere
            at_kill = len(load.confirmed)
            await eventually(lambda: len(load.confirmed) >= at_kill + 300, timeout=WAIT,
                             message="publishing went on")
            handled = len(load.handled)
            await eventually(lambda: len(load.handled) >= handled + 300, timeout=WAIT,
                             message="a new leader serves the group")
        finally:
            await load.stop()
        await eventually(lambda: set(load.confirmed) <= effects.keys(), timeout=WAIT,
                         message="every confirmed message applied")
        assert all(m.running for m in members)
        await broker.close()  # consumers stop before the store closes
    twice = {k: n for k, n in effects.items() if n > 1}
    report(f"rabbitmq quorum-leader kill ({victim.name}) with dedup: {len(load.confirmed)} "
           f"confirmed, 0 lost, {len(twice)} effects twice; consuming resumed "
           f"{load.first_after(load.handled_at, killed_at):.2f}s after the kill")
    assert not twice
