"""What only the in-memory backend offers: shared hubs, retention and fault injection."""

import asyncio

import pytest

import msgkit
from msgkit.testing import Collector, eventually
from msgkit_memory import Hub


async def test_brokers_with_the_same_name_share_topics(unique_name: str) -> None:
    async with msgkit.connect(f"memory://{unique_name}") as a, \
            msgkit.connect(f"memory://{unique_name}") as b:
        got = Collector()
        await a.consumer("t", group="g").start(got)
        await b.producer().send("t", b"across brokers")
        await got.wait_for(1)


async def test_retention_bounds_what_a_new_group_replays(unique_name: str) -> None:
    async with msgkit.connect(f"memory://{unique_name}?retention=5") as broker:
        await broker.producer().send_many("t", [str(i) for i in range(20)])
        got = Collector()
        await broker.consumer("t", group="late").start(got)
        await got.wait_for(5)
        assert [m.text() for m in got.messages] == [str(i) for i in range(15, 20)]


async def test_fail_next_publishes(memory_broker: msgkit.Broker, unique_name: str) -> None:
    hub: Hub = memory_broker.native
    hub.faults.fail_next_publishes(2)
    producer = memory_broker.producer()
    for _ in range(2):
        with pytest.raises(msgkit.PublishError) as info:
            await producer.send(unique_name, b"x")
        assert info.value.reason == "injected fault"
    await producer.send(unique_name, b"x")


async def test_delay_deliveries(memory_broker: msgkit.Broker, unique_name: str) -> None:
    hub: Hub = memory_broker.native
    got = Collector()
    await memory_broker.consumer(unique_name, group="g").start(got)
    hub.faults.delay_deliveries(0.3)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await memory_broker.producer().send(unique_name, b"late")
    await got.wait_for(1)
    assert loop.time() - sent_at >= 0.25


async def test_dropped_consumer_dies_and_its_message_goes_to_another_member(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    hub: Hub = memory_broker.native
    started = asyncio.Event()

    async def hangs(msg: msgkit.Message) -> None:
        started.set()
        await asyncio.Event().wait()

    doomed = memory_broker.consumer(unique_name, group="g")
    await doomed.start(hangs)
    sent = await memory_broker.producer().send(unique_name, b"mid-message")
    await started.wait()
    assert hub.faults.drop_consumers(unique_name, "g") == 1
    with pytest.raises(msgkit.ConsumerLostError):
        await asyncio.wait_for(doomed.wait(), 5)
    survivor = Collector()
    await memory_broker.consumer(unique_name, group="g").start(survivor)
    [msg] = await survivor.wait_for(1)
    assert msg.id == sent and msg.attempt == 2


async def test_slow_consumer_holds_at_most_prefetch(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    release = asyncio.Event()
    consumer = memory_broker.consumer(unique_name, group="g", concurrency=2, prefetch=5)

    async def slow(msg: msgkit.Message) -> None:
        await release.wait()

    await consumer.start(slow)
    await memory_broker.producer().send_many(unique_name, [b"x"] * 100)
    await eventually(lambda: consumer.in_flight == 5)
    await asyncio.sleep(0.05)  # give it the chance to overfetch, which it must not take
    assert consumer.in_flight == 5
    queue = memory_broker.native.topic(unique_name).groups["g"]
    assert len(queue.ready) == 95
    release.set()
    await eventually(lambda: consumer.in_flight == 0 and not queue.ready)


async def test_competing_consumers_share_a_group_evenly_as_on_rabbitmq(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    """600 messages in bursts of 10 to 3 members with concurrency 4: RabbitMQ gives each
    200 (measured); memory:// used to give one member nearly everything."""
    members = [Collector() for _ in range(3)]
    for got in members:
        await memory_broker.consumer(unique_name, group="g", concurrency=4).start(got)
    producer = memory_broker.producer()
    for burst in range(60):
        await producer.send_many(unique_name, [f"{burst}-{i}" for i in range(10)])
        await asyncio.sleep(0)
    await eventually(lambda: sum(len(g.messages) for g in members) == 600)
    shares = [len(g.messages) for g in members]
    assert max(shares) - min(shares) <= 10, shares


async def test_keys_keep_their_order_across_competing_consumers(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    seen: dict[str, list[int]] = {}

    async def handler(msg: msgkit.Message) -> None:
        await asyncio.sleep(0.001 * (hash(msg.id) % 3))
        assert isinstance(msg.key, str)
        seen.setdefault(msg.key, []).append(int(msg.text()))

    for _ in range(3):
        await memory_broker.consumer(unique_name, group="g", concurrency=4).start(handler)
    await memory_broker.producer().send_many(unique_name, [str(n) for n in range(300)],
                                             key=lambda v: f"k{int(v) % 7}")
    await eventually(lambda: sum(len(v) for v in seen.values()) == 300)
    assert all(order == sorted(order) for order in seen.values())
