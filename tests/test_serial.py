"""The one-at-a-time runner (`concurrency=1`) alone, over a scripted subscription: order,
acks and failures, the prefetch bound, and every way of stopping it."""

import asyncio
from collections.abc import Callable, Sequence

import pytest

from msgkit.backend import Delivery, Subscription
from msgkit.message import Message
from msgkit.serial import Serial
from msgkit.testing import eventually
from tests.test_dispatch import FailingEveryThird, Recorded, plain_only


class Scripted(Subscription):
    """Hands out its deliveries `per_fetch` at a time, then waits forever, as a broker
    with nothing more to give; `taken` counts what fetches returned."""

    def __init__(self, count: int, *, nowait: bool = True, per_fetch: int = 1000) -> None:
        self.deliveries = [Recorded(Message("t", str(n).encode()), nowait) for n in range(count)]
        self.pending = list(self.deliveries)
        self.per_fetch = per_fetch
        self.largest_fetch = self.taken = 0
        self.waiting = False

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        self.largest_fetch = max(self.largest_fetch, max_messages)
        if not self.pending:
            self.waiting = True
            try:
                await asyncio.Event().wait()
            finally:
                self.waiting = False
        size = min(max_messages, self.per_fetch)
        batch, self.pending = self.pending[:size], self.pending[size:]
        self.taken += len(batch)
        return batch

    async def close(self) -> None: ...


@pytest.mark.parametrize("nowait", [True, False])
async def test_the_plain_path_handles_in_order_acks_each_and_recovers_failed_ones(
    nowait: bool,
) -> None:
    subscription = Scripted(12, nowait=nowait, per_fetch=5)
    plain = FailingEveryThird()
    handled, recovered = plain.handled, plain.recovered
    runner = Serial(subscription, plain_only, prefetch=4, plain=plain.plain())
    task = asyncio.create_task(runner.run())
    await eventually(lambda: len(handled) + len(recovered) == 12)
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert handled == [0, 1, 3, 4, 6, 7, 9, 10]
    assert recovered == [(n, f"bad {n}") for n in (2, 5, 8, 11)]
    acked = ["ack_nowait"] if nowait else ["ack"]
    assert [d.settled for d in subscription.deliveries] == [
        [] if n % 3 == 2 else acked for n in range(12)]
    assert subscription.largest_fetch == 4


async def test_process_gets_every_delivery_in_order_and_held_stays_within_prefetch() -> None:
    subscription = Scripted(50)
    seen: list[int] = []
    highest = 0
    runner: Serial

    async def process(d: Delivery) -> None:
        nonlocal highest
        highest = max(highest, runner.held)
        assert runner.buffered == runner.held - 1
        await asyncio.sleep(0)
        seen.append(int(d.message.value))

    runner = Serial(subscription, process, prefetch=8)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: len(seen) == 50)
    assert runner.held == 0 and runner.buffered == 0
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert seen == list(range(50))
    assert highest == 8 and subscription.largest_fetch == 8


async def _running_on_nothing() -> tuple[Scripted, Serial, asyncio.Task[None]]:
    """A runner whose fetch waits, the broker having nothing to give."""
    subscription = Scripted(0)
    runner = Serial(subscription, _unused, prefetch=8)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: subscription.waiting)
    return subscription, runner, task


async def test_stop_while_fetching_returns_at_once_and_takes_nothing() -> None:
    subscription, runner, task = await _running_on_nothing()
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert not task.cancelled() and subscription.taken == 0


async def test_stop_finishes_the_running_delivery_and_leaves_the_rest_unsettled() -> None:
    subscription = Scripted(6)
    release = asyncio.Event()
    started: list[int] = []

    async def process(d: Delivery) -> None:
        started.append(int(d.message.value))
        await release.wait()
        await d.ack()

    runner = Serial(subscription, process, prefetch=6)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: started == [0])
    assert runner.held == 6
    runner.stop()
    assert runner.held == 1, "the five not started are let go at once"
    await asyncio.sleep(0.01)
    assert not task.done(), "stop() must wait for the delivery being handled"
    release.set()
    await asyncio.wait_for(task, 5)
    assert started == [0] and runner.held == 0
    assert [d.settled for d in subscription.deliveries] == [["ack"]] + [[]] * 5


async def test_without_release_on_stop_the_fetched_deliveries_run_first() -> None:
    subscription = Scripted(6)
    release = asyncio.Event()
    done: list[int] = []

    async def process(d: Delivery) -> None:
        await release.wait()
        done.append(int(d.message.value))

    runner = Serial(subscription, process, prefetch=4, release_on_stop=False)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.held == 4)
    runner.stop()
    release.set()
    await asyncio.wait_for(task, 5)
    assert done == [0, 1, 2, 3], "the fetched batch runs; nothing more is fetched"
    assert subscription.taken == 4


async def test_cancelling_run_cancels_the_handler_and_leaves_its_delivery_unsettled() -> None:
    subscription = Scripted(3)
    started = asyncio.Event()

    async def process(d: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    runner = Serial(subscription, process, prefetch=3)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(not d.settled for d in subscription.deliveries)


async def test_a_cancel_from_outside_during_a_stopping_fetch_still_cancels_the_run() -> None:
    _, runner, task = await _running_on_nothing()
    runner.stop()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def _turns(count: int = 20) -> None:
    """Lets the loop run `count` turns: enough for a scripted fetch that would still come."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_more_is_fetched_while_one_runs_until_less_than_half_the_prefetch_is_free(
) -> None:
    subscription = Scripted(10, per_fetch=1)  # messages that arrive one by one
    release = asyncio.Event()
    started: list[int] = []

    async def process(d: Delivery) -> None:
        started.append(int(d.message.value))
        await release.wait()

    runner = Serial(subscription, process, prefetch=8)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: started == [0] and runner.held >= 5)
    await _turns()
    assert (runner.held, runner.buffered, subscription.taken) == (5, 4, 5), \
        "fetching goes on while half of prefetch (4) is free, and stops there"
    runner.stop()
    assert runner.held == 1
    release.set()
    await asyncio.wait_for(task, 5)
    assert started == [0] and subscription.taken == 5, "what was fetched ahead is let go"
    assert all(not d.settled for d in subscription.deliveries[1:])


async def test_what_several_fetches_beside_a_handler_took_runs_next_in_order() -> None:
    subscription = Scripted(30, per_fetch=2)
    gate = asyncio.Event()
    seen: list[int] = []

    async def process(d: Delivery) -> None:
        if not seen:
            await gate.wait()
        seen.append(int(d.message.value))

    runner = Serial(subscription, process, prefetch=10)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.held >= 6)
    await _turns()
    assert runner.held == subscription.taken == 6, "a batch of 2, then two fetches of 2"
    gate.set()
    await eventually(lambda: len(seen) == 30)
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert seen == list(range(30))


class StopsAsItReturns(Scripted):
    """Calls `stop` as its second fetch (the one ahead) returns, before the runner sees it."""

    stop: Callable[[], None]

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        if self.taken == 1:
            asyncio.get_running_loop().call_soon(self.stop)
        return await super().fetch(max_messages)


@pytest.mark.parametrize("release_on_stop", [True, False])
async def test_stop_as_a_fetch_ahead_returns_lets_go_of_what_it_took_or_runs_it_first(
    release_on_stop: bool,
) -> None:
    subscription = StopsAsItReturns(3, per_fetch=1)
    gate, stopped = asyncio.Event(), asyncio.Event()
    done: list[int] = []

    async def process(d: Delivery) -> None:
        await gate.wait()
        done.append(int(d.message.value))

    runner = Serial(subscription, process, prefetch=8, release_on_stop=release_on_stop)

    def stop() -> None:
        runner.stop()
        stopped.set()

    subscription.stop = stop
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(stopped.wait(), 5)
    gate.set()
    await asyncio.wait_for(task, 5)
    assert subscription.taken == 2
    assert done == ([0] if release_on_stop else [0, 1])


class Failing(Scripted):
    """Fails once it has nothing more to give, as a broker connection lost."""

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        if not self.pending:
            await asyncio.sleep(0.01)
            raise ConnectionError("the broker went away")
        return await super().fetch(max_messages)


async def test_a_subscription_failing_while_a_handler_hangs_ends_the_run_with_its_error() -> None:
    subscription = Failing(1)
    cancelled = asyncio.Event()

    async def hangs(d: Delivery) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner = Serial(subscription, hangs, prefetch=4)
    task = asyncio.create_task(runner.run())
    with pytest.raises(ConnectionError, match="went away"):
        await asyncio.wait_for(task, 5)
    assert cancelled.is_set() and not subscription.deliveries[0].settled


async def test_a_subscription_failing_after_a_full_batch_half_ran_ends_the_run() -> None:
    subscription = Failing(4)
    ran: list[int] = []

    async def third_hangs(d: Delivery) -> None:
        ran.append(int(d.message.value))
        if len(ran) == 3:
            await asyncio.Event().wait()

    runner = Serial(subscription, third_hangs, prefetch=4)
    task = asyncio.create_task(runner.run())
    with pytest.raises(ConnectionError, match="went away"):
        await asyncio.wait_for(task, 5)
    assert ran == [0, 1, 2], "the next fetch ran beside the hanging handler"


async def test_a_later_fetch_failing_beside_a_hanging_handler_ends_the_run() -> None:
    subscription = Failing(3, per_fetch=1)

    async def hangs(d: Delivery) -> None:
        await asyncio.Event().wait()

    runner = Serial(subscription, hangs, prefetch=8)
    task = asyncio.create_task(runner.run())
    with pytest.raises(ConnectionError, match="went away"):
        await asyncio.wait_for(task, 5)
    assert subscription.taken == 3, "two fetches ahead took the rest before one failed"


async def test_an_ended_subscription_ends_the_run() -> None:
    class Ended(Scripted):
        async def fetch(self, max_messages: int) -> Sequence[Delivery]:
            return ()

    runner = Serial(Ended(0), _unused, prefetch=8)
    await asyncio.wait_for(runner.run(), 5)


async def _unused(d: Delivery) -> None:
    raise AssertionError("no delivery was expected")
