"""Nothing is left open: `Broker.close` closes every producer and the connection also when a
step before fails or the close is cancelled, and a consumer's `run()` cancelled as it starts
closes its subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import msgkit
from msgkit.backend import Subscription, SubscriptionSpec
from msgkit.testing import Collector, Holding, eventually
from msgkit_memory.backend import MemorySubscription

WAIT = 30.0


class Spy:
    """Stands in for a `close` or `stop` method: records the call and what `seen()` saw
    then, then runs the method or raises."""

    def __init__(self, method: Callable[..., Awaitable[None]], raises: Exception | None = None,
                 seen: Callable[[], object] = lambda: None) -> None:
        self.calls: list[object] = []
        self._method = method
        self._raises = raises
        self._seen = seen

    async def __call__(self, *args: object, **kwargs: object) -> None:
        self.calls.append(self._seen())
        if self._raises is not None:
            raise self._raises
        await self._method(*args, **kwargs)


async def test_a_producer_that_fails_to_close_leaves_the_others_and_the_connection_closed(
    unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await msgkit.connect(f"memory://{unique_name}").start()
    before, failing, after = broker.producer(), broker.producer(), broker.producer()
    await failing.send(unique_name, b"x")
    monkeypatch.setattr(failing, "close", Spy(failing.close, RuntimeError("close failed")))
    connection = Spy(broker.backend.close)
    monkeypatch.setattr(broker.backend, "close", connection)
    with pytest.raises(RuntimeError, match="close failed"):
        await broker.close()
    assert before.closed and after.closed and len(connection.calls) == 1


async def test_a_consumer_that_fails_to_stop_leaves_the_rest_stopped_and_closed(
    unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its error is raised once the other consumer stopped and everything else closed."""
    broker = await msgkit.connect(f"memory://{unique_name}").start()
    failing, other = (broker.consumer(unique_name, group=group) for group in ("a", "b"))
    for consumer in (failing, other):
        await consumer.start(Collector())
    stop = failing.stop
    monkeypatch.setattr(failing, "stop", Spy(stop, RuntimeError("stop failed")))
    producer = broker.producer()
    connection = Spy(broker.backend.close, seen=lambda: other.running)
    monkeypatch.setattr(broker.backend, "close", connection)
    with pytest.raises(RuntimeError, match="stop failed"):
        await broker.close()
    assert producer.closed and connection.calls == [False], "closed under a running consumer"
    await stop()


async def test_a_cancelled_close_stops_the_consumers_then_closes_producers_and_connection(
    unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await msgkit.connect(f"memory://{unique_name}").start()
    hanging = Holding(lambda msg: True)
    consumer = broker.consumer(unique_name, group="g")
    await consumer.start(hanging)
    producer = broker.producer()
    await producer.send(unique_name, b"never finishes")
    await eventually(lambda: bool(hanging.started), timeout=WAIT, message="the handler started")
    connection = Spy(broker.backend.close, seen=lambda: consumer.running)
    monkeypatch.setattr(broker.backend, "close", connection)
    closing = asyncio.ensure_future(broker.close(timeout=WAIT))  # waits on the handler
    await eventually(lambda: broker.closed, timeout=WAIT, message="the close began")
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert hanging.cancelled == [b"never finishes"], "the handler was not cancelled"
    assert producer.closed and connection.calls == [False], "closed under a running consumer"


@pytest.mark.parametrize("turns", range(6))
async def test_cancelling_run_as_it_starts_still_closes_the_subscription(
    unique_name: str, monkeypatch: pytest.MonkeyPatch, turns: int
) -> None:
    """Cancelled after `turns` turns of the loop, before or after the consumer's task took
    its first step: a subscription it opened is closed either way."""
    opened: list[Subscription] = []
    closed: list[Subscription] = []
    close = MemorySubscription.close

    async def counted(self: MemorySubscription) -> None:
        closed.append(self)
        await close(self)

    monkeypatch.setattr(MemorySubscription, "close", counted)
    async with msgkit.connect(f"memory://{unique_name}") as broker:
        subscribe = broker.backend.subscribe

        async def recorded(spec: SubscriptionSpec) -> Subscription:
            opened.append(subscription := await subscribe(spec))
            return subscription

        monkeypatch.setattr(broker.backend, "subscribe", recorded)
        consumer = broker.consumer(unique_name, group="g")
        running = asyncio.ensure_future(consumer.run(Collector()))
        for _ in range(turns):
            await asyncio.sleep(0)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert not consumer.running and closed == opened, "the subscription was left open"
