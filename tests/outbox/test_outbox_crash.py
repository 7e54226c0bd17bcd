"""The outbox under SIGKILL, on every backend with PostgreSQL and SQLite.

Services are killed between their writes and their commit, relays before a publish and
between a publish and its mark, at seeded points. Then: every committed order's message
was published at least once and handled once by a `dedup=` consumer; no message of a
killed (rolled-back) transaction was ever published. On memory:// the broker lives in the
relay's process, so its relays "die" in-process instead: the same abandoned claim.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
from collections.abc import Callable

import pytest

import msgkit
from msgkit.dedup import Dedup
from msgkit.testing import eventually
from msgkit.testing.crash import Worker
from msgkit.testing.outbox_crash import DyingRelay, committed_orders, ensure_orders
from tests.outbox.conftest import OutboxDB

pytestmark = pytest.mark.timeout(300)

KILLS = int(os.environ.get("MSGKIT_CRASH_KILLS", "3"))
"""Services and relays killed this many times each (`make soak`: 60)."""
PHASES = ("after", "before")
GROUP = "verify"
MODULE = "msgkit.testing.outbox_crash"


class Killed(BaseException):
    """An in-process relay's death: nothing after it runs, as after SIGKILL."""


def _die() -> None:
    raise Killed


async def _kill_services(db: OutboxDB, topic: str, rng: random.Random) -> set[str]:
    """Runs KILLS services to their seeded deaths; returns the ids of the messages whose
    transactions they never committed."""
    dying: set[str] = set()
    for _ in range(KILLS):
        count = rng.randint(20, 40)
        worker = await asyncio.to_thread(Worker.start, "write", db.url, db.table, topic,
                                         str(count), str(count), module=MODULE)
        await asyncio.to_thread(worker.ready)
        assert await asyncio.to_thread(worker.died_by_kill, 60.0), "the service did not die"
        assert worker.process.stdout is not None
        [line] = [x for x in worker.process.stdout.read().splitlines() if x.startswith("dying")]
        dying.add(line.split()[1])
    return dying


async def _kill_relays(url: str, db: OutboxDB, rng: random.Random) -> int:
    """Relays killed at seeded publishes, each phase in turn; then one that drains the
    outbox. Returns how many were killed."""
    killed = 0
    for n in range(KILLS):
        kill_at, phase = rng.randint(1, 3), PHASES[n % len(PHASES)]
        if url.startswith("memory://"):
            killed += await _in_process(url, db, kill_at, phase)
            continue
        worker = await asyncio.to_thread(Worker.start, "relay", db.url, db.table, url, GROUP,
                                         str(kill_at), phase, module=MODULE)
        await asyncio.to_thread(worker.ready)
        killed += await asyncio.to_thread(worker.died_by_kill, 120.0)
    if not url.startswith("memory://"):
        last = await asyncio.to_thread(Worker.start, "relay", db.url, db.table, url, GROUP,
                                       "0", "none", module=MODULE)
        await asyncio.to_thread(last.ready)
        assert not await asyncio.to_thread(last.died_by_kill, 120.0), "the last relay hung"
    return killed


async def _in_process(url: str, db: OutboxDB, kill_at: int, phase: str) -> int:
    async with msgkit.connect(url) as broker:  # the memory hub outlives this broker
        relay = DyingRelay(db.url, broker, table=db.table, kill_at=kill_at, phase=phase,
                           die=_die)
        try:
            await relay.run()
        except Killed:
            return 1
    return 0


class Downstream:
    """Two groups on the topic: `effects` through `dedup=`, `deliveries` raw."""

    def __init__(self) -> None:
        self.effects: collections.Counter[str] = collections.Counter()
        self.deliveries: collections.Counter[str] = collections.Counter()

    async def start(self, broker: msgkit.Broker, topic: str, dedup: Dedup) -> None:
        async def handle(msg: msgkit.Message) -> None:
            self.effects[msg.id] += 1

        async def count(msg: msgkit.Message) -> None:
            self.deliveries[msg.id] += 1

        await broker.consumer(topic, group=GROUP, start="earliest", dedup=dedup,
                              prefetch=100).start(handle)
        await broker.consumer(topic, group="raw", start="earliest").start(count)

    def has(self, ids: set[str]) -> bool:
        return ids <= self.effects.keys() and ids <= self.deliveries.keys()

    @property
    def twice(self) -> int:
        return sum(n - 1 for n in self.deliveries.values() if n > 1)

    def check(self, committed: set[str], rolled_back: set[str]) -> None:
        seen = self.effects.keys() | self.deliveries.keys()
        assert not rolled_back & seen, "a rolled-back message was published"
        assert self.effects.keys() == committed
        assert all(n == 1 for n in self.effects.values()), "a committed order was handled twice"


async def test_committed_orders_are_handled_once_and_rolled_back_ones_never_published(
    msgkit_url: str, outbox_db: OutboxDB, unique_name: str, report: Callable[[str], None]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ensure_orders(outbox_db.url, outbox_db.table)
    downstream = Downstream()
    async with msgkit.connect(msgkit_url) as broker, Dedup("memory://") as dedup:
        await downstream.start(broker, unique_name, dedup)
        dying = await _kill_services(outbox_db, unique_name, rng)
        committed = committed_orders(outbox_db.url, outbox_db.table)
        killed = await _kill_relays(msgkit_url, outbox_db, rng)
        if msgkit_url.startswith("memory://"):  # the last relay, in-process too
            async with DyingRelay(outbox_db.url, broker, table=outbox_db.table, kill_at=0,
                                  phase="none"):
                await eventually(lambda: downstream.has(committed), timeout=60,
                                 message=f"every committed order handled (seed {seed})")
        await eventually(lambda: downstream.has(committed), timeout=60,
                         message=f"every committed order handled (seed {seed})")
    report(f"outbox crash seed {seed} on {outbox_db.kind}/{msgkit_url.split(':')[0]}: "
           f"{len(committed)} committed, {len(dying)} rolled back by kills, {killed} relays "
           f"killed, {downstream.twice} published twice")
    assert killed >= 1, "no relay died at its kill point"
    downstream.check(committed, dying)


async def test_two_relays_lose_nothing_when_one_is_killed(
    msgkit_url: str, outbox_db: OutboxDB, unique_name: str, report: Callable[[str], None]
) -> None:
    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).randint(2, 6)
    downstream = Downstream()
    rows = [(unique_name, f"{n}", {"key": f"k{n % 7}"}) for n in range(300)]
    committed = set(await outbox_db.write(rows))
    async with msgkit.connect(msgkit_url) as broker, Dedup("memory://") as dedup:
        await downstream.start(broker, unique_name, dedup)
        # The victim starts first, so it is publishing (on SQLite: holds the lease) when the
        # survivor joins.
        if msgkit_url.startswith("memory://"):
            victim = DyingRelay(outbox_db.url, broker, table=outbox_db.table, kill_at=kill_at,
                                phase="after", die=_die)
            dying = asyncio.create_task(victim.run())
            await eventually(lambda: victim.calls >= 1, timeout=30, message="the victim publishing")
            async with DyingRelay(outbox_db.url, broker, table=outbox_db.table, kill_at=0,
                                  phase="none"):
                with pytest.raises(Killed):
                    await asyncio.wait_for(dying, 60)
                await eventually(lambda: downstream.has(committed), timeout=60,
                                 message=f"every row handled (seed {seed})")
        else:
            args = ("relay", outbox_db.url, outbox_db.table, msgkit_url, GROUP)
            victim_process = await asyncio.to_thread(Worker.start, *args, str(kill_at), "after",
                                                     module=MODULE)
            await asyncio.to_thread(victim_process.ready)
            survivor = await asyncio.to_thread(Worker.start, *args, "0", "none", module=MODULE)
            await asyncio.to_thread(survivor.ready)
            assert await asyncio.to_thread(victim_process.died_by_kill, 120.0), \
                "the victim drained the outbox before its kill point: nothing was tested"
            assert not await asyncio.to_thread(survivor.died_by_kill, 120.0), "the survivor hung"
        await eventually(lambda: downstream.has(committed), timeout=60,
                         message=f"every row handled (seed {seed})")
    report(f"two relays, one killed at publish {kill_at} (seed {seed}) on {outbox_db.kind}/"
           f"{msgkit_url.split(':')[0]}: {len(committed)} rows, {downstream.twice} published twice")
    downstream.check(committed, set())
