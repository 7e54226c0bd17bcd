"""The dispatcher alone, over a scripted subscription: order per key, bounds, draining."""

import asyncio
import random
from collections.abc import Sequence

from msgkit.backend import Delivery, Subscription
from msgkit.dispatch import Dispatcher
from msgkit.message import Headers, Message
from msgkit.testing import eventually


class Settled(Delivery):
    async def ack(self) -> None: ...

    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None: ...


class Scripted(Subscription):
    def __init__(self, messages: list[Message]) -> None:
        self.pending = list(messages)
        self.largest_fetch = 0

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        await asyncio.sleep(0)
        self.largest_fetch = max(self.largest_fetch, max_messages)
        batch, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        if not batch:
            await asyncio.Event().wait()  # like a broker with nothing more to give
        return [Settled(m) for m in batch]

    async def close(self) -> None: ...


def _messages(keys: int, per_key: int) -> list[Message]:
    return [Message("t", str(n).encode(), key=f"k{k}") for n in range(per_key) for k in range(keys)]


async def test_same_key_runs_in_order_and_never_concurrently() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    running: set[str] = set()
    seen: dict[str, list[int]] = {}
    peak = 0

    async def process(d: Delivery) -> None:
        nonlocal peak
        key = d.message.key
        assert isinstance(key, str) and key not in running
        running.add(key)
        peak = max(peak, len(running))
        await asyncio.sleep(rng.random() / 1000)
        seen.setdefault(key, []).append(int(d.message.value))
        running.discard(key)

    dispatcher = Dispatcher(Scripted(_messages(6, 30)), process, concurrency=4, prefetch=16)
    task = asyncio.create_task(dispatcher.run())
    await eventually(lambda: sum(map(len, seen.values())) == 180)
    dispatcher.stop()
    await asyncio.wait_for(task, 5)
    assert all(v == list(range(30)) for v in seen.values())
    assert peak == 4, "different keys should run concurrently up to the limit"


async def test_held_deliveries_never_exceed_prefetch() -> None:
    subscription = Scripted(_messages(50, 4))
    highest = 0
    dispatcher: Dispatcher

    async def process(d: Delivery) -> None:
        nonlocal highest
        highest = max(highest, dispatcher.held)
        await asyncio.sleep(0)

    dispatcher = Dispatcher(subscription, process, concurrency=3, prefetch=10)
    task = asyncio.create_task(dispatcher.run())
    await eventually(lambda: not subscription.pending and dispatcher.held == 0)
    dispatcher.stop()
    await asyncio.wait_for(task, 5)
    assert highest <= 10 and subscription.largest_fetch <= 10


async def test_stop_waits_for_held_work_then_returns() -> None:
    release = asyncio.Event()
    done: list[bytes] = []

    async def process(d: Delivery) -> None:
        await release.wait()
        done.append(d.message.value)

    dispatcher = Dispatcher(Scripted(_messages(3, 1)), process, concurrency=3, prefetch=8)
    task = asyncio.create_task(dispatcher.run())
    await eventually(lambda: dispatcher.held == 3)
    dispatcher.stop()
    await asyncio.sleep(0.01)
    assert not task.done()
    release.set()
    await asyncio.wait_for(task, 5)
    assert len(done) == 3
