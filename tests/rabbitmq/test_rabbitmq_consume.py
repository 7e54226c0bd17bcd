"""RabbitMQ adapter: prefetch, dead consumers, per-key order and redelivery on a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgkit
from msgkit.testing import Collector, eventually
from msgkit_rabbitmq.subscription import RabbitMQSubscription

QueueState = Callable[[str], Awaitable["tuple[int, int] | None"]]


async def test_prefetch_bounds_deliveries_held(
    rabbit: msgkit.Broker, unique_name: str, queue_state: QueueState
) -> None:
    prefetch, total = 5, 40
    release = asyncio.Event()
    most = 0
    consumer = rabbit.consumer(unique_name, group="g", concurrency=10, prefetch=prefetch)

    def held() -> int:
        sub = consumer.native and consumer._subscription
        assert isinstance(sub, RabbitMQSubscription)
        return len(sub._buffer) + len(sub.unacked)

    async def handler(msg: msgkit.Message) -> None:
        nonlocal most
        most = max(most, held(), consumer.in_flight)
        await release.wait()

    await consumer.start(handler)
    await rabbit.producer().send_many(unique_name, [b"x"] * total)
    # The broker keeps the rest: ready messages = total - prefetch, and stays there.
    await eventually(lambda: consumer.in_flight == prefetch, message="prefetch reached")
    state = None

    async def ready_left() -> bool:
        nonlocal state
        state = await queue_state(f"{unique_name}.g")
        return state is not None and state[0] == total - prefetch

    deadline = time.monotonic() + 10
    while not await ready_left():
        assert time.monotonic() < deadline, f"queue state {state}"
    assert held() == prefetch and consumer.in_flight == prefetch and most <= prefetch
    release.set()
    await eventually(lambda: (state is not None) and held() == 0, message="all handled")
    assert most <= prefetch


async def test_consumer_killed_without_ack_message_goes_to_another_member(
    amqp_url: str, unique_name: str
) -> None:
    started = asyncio.Event()

    async def hangs(msg: msgkit.Message) -> None:
        started.set()
        await asyncio.Event().wait()

    doomed = msgkit.connect(amqp_url)
    await doomed.start()
    survivor_broker = msgkit.connect(amqp_url)
    await survivor_broker.start()
    try:
        await doomed.consumer(unique_name, group="g").start(hangs)
        sent = await doomed.producer().send(unique_name, b"orphan", key="k1")
        await asyncio.wait_for(started.wait(), 10)
        survivor = Collector()
        await survivor_broker.consumer(unique_name, group="g").start(survivor)
        # The process "dies": its connection goes away without any ack or nack.
        _abort_socket(doomed)  # TCP reset, no AMQP close
        await doomed.native.close()  # and it does not come back
        [msg] = await survivor.wait_for(1)
        assert msg.id == sent and msg.key == "k1"
        assert msg.attempt == 2  # quorum queues count the broker's redelivery
    finally:
        await survivor_broker.close()
        for consumer in list(doomed._consumers):
            if consumer._task is not None:
                consumer._task.cancel()


def _abort_socket(broker: msgkit.Broker) -> None:
    """Resets the TCP connection under aiormq, as a crashed process would."""
    connection = broker.native.transport.connection
    task = connection._writer_task
    task = getattr(task, "task", task)
    writer = task.get_coro().cr_frame.f_locals["writer"]
    writer.transport.abort()


async def test_per_key_order_option_uses_single_active_consumer(
    amqp_url: str, unique_name: str
) -> None:
    keys, per_key = 4, 30
    seen: dict[str, list[int]] = {}
    by_member: dict[int, int] = {0: 0, 1: 0}

    def handler(member: int) -> Callable[[msgkit.Message], Awaitable[None]]:
        async def handle(msg: msgkit.Message) -> None:
            await asyncio.sleep(0.001 * (msg.json()["n"] % 3))
            assert msg.key is not None
            assert isinstance(msg.key, str)
            seen.setdefault(msg.key, []).append(msg.json()["n"])
            by_member[member] += 1
        return handle

    async with msgkit.connect(amqp_url, ordered_per_key=True) as first, \
            msgkit.connect(amqp_url, ordered_per_key=True) as second:
        members = [first.consumer(unique_name, group="g", concurrency=8),
                   second.consumer(unique_name, group="g", concurrency=8)]
        for n, consumer in enumerate(members):
            await consumer.start(handler(n))
        values = [{"k": f"k{k}", "n": n} for n in range(per_key) for k in range(keys)]
        producer = first.producer()
        await producer.send_many(unique_name, values[:60], key=lambda v: str(v["k"]))
        await eventually(lambda: sum(map(len, seen.values())) == 60, message="first half")
        active = 0 if by_member[0] else 1
        assert by_member[1 - active] == 0, "the standby consumer received messages"
        await members[active].stop()  # the standby takes over, still in order
        await producer.send_many(unique_name, values[60:], key=lambda v: str(v["k"]))
        await eventually(lambda: sum(map(len, seen.values())) == keys * per_key,
                         message="second half")
        assert by_member[1 - active] == keys * per_key - 60
        for key, sequence in seen.items():
            assert sequence == list(range(per_key)), f"{key} out of order: {sequence}"


async def test_redelivery_counts_attempts_and_keeps_fields(
    rabbit: msgkit.Broker, unique_name: str
) -> None:
    got = Collector(fail=lambda m: m.attempt < 3)
    policy = msgkit.FailurePolicy(max_attempts=5, delays=(0.0,))
    await rabbit.consumer(unique_name, group="g", failure=policy).start(got)
    other_group = Collector()
    await rabbit.consumer(unique_name, group="other").start(other_group)
    sent = await rabbit.producer().send(unique_name, b"flaky", key="k", headers={"keep": "me"})
    [msg] = await got.wait_for(1)
    assert [f.attempt for f in got.failures] == [1, 2] and msg.attempt == 3
    assert msg.id == sent and msg.key == "k" and msg.headers["keep"] == "me"
    assert not [k for k in msg.headers if k.startswith("x-")]
    await other_group.wait_for(1)
    assert len(other_group.messages) == 1, "a redelivery reached another group"


async def test_delayed_redelivery_uses_ttl_retry_queue_without_blocking(
    rabbit: msgkit.Broker, unique_name: str, queue_state: QueueState
) -> None:
    got = Collector(fail=lambda m: m.value == b"slow" and m.attempt == 1)
    policy = msgkit.FailurePolicy(max_attempts=3, delays=(1.0,))
    await rabbit.consumer(unique_name, group="g", failure=policy).start(got)
    producer = rabbit.producer()
    await producer.send(unique_name, b"slow", key="s")
    await got.wait_failures(1)
    failed_at = time.monotonic()
    deadline = failed_at + 0.8  # the copy waits in the retry queue, which has no consumer
    while await queue_state(f"{unique_name}.g.retry.1000") != (1, 0):
        assert time.monotonic() < deadline, "the copy never reached the retry queue"
    await producer.send_many(unique_name, [b"fast"] * 5)
    await got.wait_for(6)
    assert got.values == [b"fast"] * 5 + [b"slow"]
    assert time.monotonic() - failed_at >= 0.8
    slow = got.messages[-1]
    assert slow.attempt == 2 and slow.key == "s"


async def test_private_consumer_redelivery(rabbit: msgkit.Broker, unique_name: str) -> None:
    got = Collector(fail=lambda m: m.attempt == 1)
    policy = msgkit.FailurePolicy(max_attempts=3, delays=(0.2,))
    await rabbit.consumer(unique_name, failure=policy).start(got)
    await rabbit.producer().send(unique_name, b"again")
    [msg] = await got.wait_for(1)
    assert msg.attempt == 2


async def test_at_most_once_round_trip(rabbit: msgkit.Broker, unique_name: str) -> None:
    got = Collector()
    await rabbit.consumer(unique_name, group="g",
                          guarantee=msgkit.Guarantee.AT_MOST_ONCE).start(got)
    producer = rabbit.producer(guarantee=msgkit.Guarantee.AT_MOST_ONCE)
    await producer.send_many(unique_name, [b"a", b"b", b"c"])
    await got.wait_for(3)
    assert producer.describe()["client"]["publisher_confirms"] is False


async def test_stop_gives_back_buffered_deliveries(
    rabbit: msgkit.Broker, unique_name: str
) -> None:
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(msg: msgkit.Message) -> None:
        await release.wait()
        handled.append(msg.id)

    first = rabbit.consumer(unique_name, group="g", prefetch=10)
    await first.start(slow)
    sent = await rabbit.producer().send_many(unique_name, [f"{i}" for i in range(10)])
    await eventually(lambda: first.in_flight >= 1, message="one in flight")
    stopping = asyncio.create_task(first.stop())
    await asyncio.sleep(0.05)
    release.set()
    await stopping
    rest = Collector()
    await rabbit.consumer(unique_name, group="g").start(rest)
    await eventually(lambda: len(handled) + len(rest.messages) >= 10, message="all handled")
    # Handled ones were acked by stop(); the buffered rest went to the next member, once.
    assert sorted(handled + [m.id for m in rest.messages]) == sorted(sent)
