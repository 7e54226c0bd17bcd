"""Consumer groups on Kafka: members come and go, nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgkit
from msgkit.testing import Collector, eventually
from msgkit_kafka.subscription import KafkaSubscription

SubOf = Callable[[msgkit.Consumer], KafkaSubscription]


async def test_consumer_stopped_mid_batch_hands_every_unfinished_message_on(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    finished: set[str] = set()
    started = asyncio.Event()

    async def slow(msg: msgkit.Message) -> None:
        started.set()
        await asyncio.sleep(0.01)
        finished.add(msg.id)

    doomed = kafka.consumer(unique_name, group="g", concurrency=4)
    task = asyncio.create_task(doomed.run(slow))
    ids = set(await kafka.producer().send_many(
        unique_name, [f"{i}" for i in range(200)], key=lambda v: f"k{int(v) % 9}"))
    await eventually(lambda: len(finished) >= 30, timeout=15, message="30 handled")
    task.cancel()  # mid-batch: in-flight handlers are cancelled, their messages unsettled
    await asyncio.gather(task, return_exceptions=True)
    assert len(finished) < 200
    survivor = Collector()
    await kafka.consumer(unique_name, group="g", concurrency=4).start(survivor)
    await eventually(lambda: (ids - finished) <= survivor.ids, timeout=20,
                     message="every unfinished message reached the new member")
    # Contiguous commits bound the repeats to what finished after the first unfinished one.
    assert len(survivor.ids & finished) < len(finished)


async def test_second_member_takes_partitions_and_nothing_is_lost(
    kafka: msgkit.Broker, unique_name: str, sub_of: SubOf
) -> None:
    first, second = Collector(), Collector()
    one = kafka.consumer(unique_name, group="g", concurrency=4)
    await one.start(first)
    producer = kafka.producer()
    before = set(await producer.send_many(unique_name, [b"before"] * 60,
                                          key=lambda v: None))
    await first.wait_for(60, timeout=15)
    two = kafka.consumer(unique_name, group="g", concurrency=4)
    await two.start(second)
    await eventually(
        lambda: bool(sub_of(one).assignment()) and bool(sub_of(two).assignment()),
        timeout=15, message="both members own partitions")
    mine = {p for t, p in sub_of(one).assignment() if t == unique_name}
    theirs = {p for t, p in sub_of(two).assignment() if t == unique_name}
    assert mine and theirs and not mine & theirs and mine | theirs == {0, 1, 2}
    after = set(await producer.send_many(unique_name, [f"{i}" for i in range(90)],
                                         key=lambda v: f"key-{v}"))
    await eventually(lambda: after <= (first.ids | second.ids), timeout=20,
                     message="every message after the rebalance handled")
    assert before <= first.ids
    assert after & first.ids and after & second.ids, "one member got everything"


async def test_a_leaving_member_gives_its_partitions_back(
    kafka: msgkit.Broker, unique_name: str, sub_of: SubOf
) -> None:
    first, second = Collector(), Collector()
    one = kafka.consumer(unique_name, group="g")
    await one.start(first)
    two = kafka.consumer(unique_name, group="g")
    await two.start(second)
    await two.stop()  # leaves the group at once (no session timeout to wait for)
    await eventually(lambda: len([p for t, p in sub_of(one).assignment() if t == unique_name])
                     == 3, timeout=15, message="the remaining member owns every partition")
    ids = set(await kafka.producer().send_many(unique_name, [b"x"] * 30))
    await first.wait_for(30, timeout=15)
    assert first.ids == ids
