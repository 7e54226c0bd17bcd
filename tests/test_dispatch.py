"""The dispatcher alone, over a scripted subscription: order per key, bounds, draining, and
the plain path's acks and failures."""

import asyncio
import random
from collections.abc import Sequence

import pytest

from msgkit.backend import Delivery, Subscription
from msgkit.dispatch import Dispatcher, Plain
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


class Recorded(Delivery):
    """Records how it was settled; `nowait` says whether it can ack without awaiting."""

    __slots__ = ("nowait", "settled")

    def __init__(self, message: Message, nowait: bool) -> None:
        super().__init__(message)
        self.nowait = nowait
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    def ack_nowait(self) -> bool:
        if self.nowait:
            self.settled.append("ack_nowait")
        return self.nowait

    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None: ...


class Handing(Scripted):
    """Hands out `Recorded` deliveries and keeps them."""

    def __init__(self, messages: list[Message], nowait: bool) -> None:
        super().__init__([])
        self.deliveries = [Recorded(m, nowait) for m in messages]
        self.pending = list(self.deliveries)  # type: ignore[arg-type]

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        await asyncio.sleep(0)
        batch, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        if not batch:
            await asyncio.Event().wait()
        return batch  # type: ignore[return-value]


class FailingEveryThird:
    """The parts of a `Plain` path whose handler fails every third message; records what
    was handled and what was recovered (with the error's text)."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.recovered: list[tuple[int, str]] = []

    async def handler(self, msg: Message) -> None:
        await asyncio.sleep(0)
        if int(msg.value) % 3 == 2:
            raise ValueError(f"bad {int(msg.value)}")
        self.handled.append(int(msg.value))

    async def recover(self, d: Delivery, raised: BaseException) -> None:
        self.recovered.append((int(d.message.value), str(raised)))

    @staticmethod
    async def ack(d: Delivery) -> None:
        await d.ack()

    def plain(self) -> Plain:
        return Plain(self.handler, self.recover, self.ack)


async def plain_only(d: Delivery) -> None:
    raise AssertionError("the plain path handles deliveries itself")


@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("nowait", [True, False])
async def test_the_plain_path_acks_each_handled_delivery_and_recovers_failed_ones(
    nowait: bool, concurrency: int
) -> None:
    subscription = Handing([Message("t", str(n).encode(), key=f"k{n % 2}") for n in range(12)],
                           nowait)
    plain = FailingEveryThird()
    handled, recovered = plain.handled, plain.recovered
    dispatcher = Dispatcher(subscription, plain_only, concurrency=concurrency, prefetch=4,
                            plain=plain.plain())
    task = asyncio.create_task(dispatcher.run())
    await eventually(lambda: len(handled) + len(recovered) == 12)
    dispatcher.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(handled) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert sorted(recovered) == [(n, f"bad {n}") for n in (2, 5, 8, 11)]
    for key in (0, 1):  # each key in order, failures included
        assert [n for n in handled if n % 2 == key] == sorted(n for n in handled if n % 2 == key)
    acked = ["ack_nowait"] if nowait else ["ack"]
    assert [d.settled for d in subscription.deliveries] == [
        [] if n % 3 == 2 else acked for n in range(12)]
