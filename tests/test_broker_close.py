"""Nothing is left open: `Broker.close` closes every producer and the connection also when a
step before fails or the close is cancelled, and a consumer's `run()` cancelled as it starts
closes its subscription."""

from __future__ import annotations

import asyncio

import pytest

import msgkit
from msgkit.backend import Subscription, SubscriptionSpec
from msgkit.testing import Collector, Holding, eventually
from msgkit_memory.backend import MemorySubscription

WAIT = 30.0


class Spy:
    """Stands in for a `close` method: records the call, then runs or raises."""

    def __init__(self, close: object, raises: Exception | None = None) -> None:
        self.calls = 0
        self._close = close
        self._raises = raises

    async def __call__(self) -> None:
        self.calls += 1
        if self._raises is not None:
            raise self._raises
        await self._close()  # type: ignore[operator]


async def test_a_producer_that_fails_to_close_leaves_the_others_and_the_connection_closed(
    unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await msgkit.connect(f"memory://{unique_name}").start()
    failing, other = broker.producer(), broker.producer()
    await failing.send(unique_name, b"x")
    monkeypatch.setattr(failing, "close", Spy(failing.close, RuntimeError("close failed")))
    connection = Spy(broker.backend.close)
    monkeypatch.setattr(broker.backend, "close", connection)
    with pytest.raises(RuntimeError, match="close failed"):
        await broker.close()
    assert other.closed and connection.calls == 1


async def test_a_cancelled_close_still_closes_producers_and_the_connection(
    unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await msgkit.connect(f"memory://{unique_name}").start()
    hanging = Holding(lambda msg: True)
    consumer = broker.consumer(unique_name, group="g")
    await consumer.start(hanging)
    producer = broker.producer()
    await producer.send(unique_name, b"never finishes")
    await eventually(lambda: bool(hanging.started), timeout=WAIT, message="the handler started")
    connection = Spy(broker.backend.close)
    monkeypatch.setattr(broker.backend, "close", connection)
    closing = asyncio.ensure_future(broker.close(timeout=WAIT))  # waits on the handler
    await eventually(lambda: broker.closed, timeout=WAIT, message="the close began")
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    try:
        assert producer.closed and connection.calls == 1
    finally:
        hanging.release()
        await asyncio.wait_for(consumer.stop(), WAIT)


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
        await eventually(lambda: not consumer.running, timeout=WAIT, message="stopped")
        await eventually(lambda: closed == opened, timeout=WAIT, message="subscription closed")
