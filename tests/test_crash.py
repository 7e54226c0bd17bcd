"""Delivery guarantees under SIGKILL, on every backend where a consumer can die alone.

Consumers run as separate processes and are killed at seeded points; the side effects they
leave in an SQLite file prove the promise: at-most-once never repeats a message,
at-least-once never loses one. `make soak` runs many more kills.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
from pathlib import Path

import pytest

import msgkit
from msgkit.testing.crash import END, PHASES, Worker, open_db

pytestmark = pytest.mark.timeout(600)

KILLS = int(os.environ.get("MSGKIT_CRASH_KILLS", "10"))
MESSAGES = 120


def _crashable(url: str) -> None:
    if url.startswith("memory://"):
        pytest.skip("the memory broker lives in the consumer's process: it dies with it")


async def _publish(url: str, topic: str, count: int) -> list[str]:
    async with msgkit.connect(url) as broker:
        producer = broker.producer(required_groups=("crash",))
        return await producer.send_many(topic, [f"{n}" for n in range(count)])


async def _end(url: str, topic: str) -> str:
    async with msgkit.connect(url) as broker:
        return await broker.producer().send(topic, END)


async def _run_with_kills(url: str, topic: str, guarantee: msgkit.Guarantee, db: Path,
                          kills: int) -> dict[str, int]:
    seed = random.randrange(1 << 30)
    print(f"crash seed: {seed} ({kills} kills, {guarantee.value}, {url.split('?')[0]})")
    rng = random.Random(seed)
    ids = await _publish(url, topic, MESSAGES)
    killed = 0
    while killed < kills:
        kill_at, phase = rng.randint(1, 6), rng.choice(PHASES)
        worker = await asyncio.to_thread(Worker.start, "consume", url, topic, "crash",
                                         guarantee.value, str(db), str(kill_at), phase)
        await asyncio.to_thread(worker.ready)
        if await asyncio.to_thread(worker.died_by_kill, 60.0):
            killed += 1
        else:  # ran dry before its kill point
            worker.kill()
            break
    last = await asyncio.to_thread(Worker.start, "consume", url, topic, "crash",
                                   guarantee.value, str(db), "0", "none")
    await asyncio.to_thread(last.ready)
    end = await _end(url, topic)
    try:
        code = await asyncio.to_thread(last.process.wait, 120)
        assert code == 0, f"final worker exited with {code}"
    finally:
        last.kill()
    effects = collections.Counter(
        row[0] for row in open_db(db).execute("SELECT id FROM effects")
    )
    assert effects[end] == 1
    assert killed >= min(kills, 3), f"only {killed} kills happened"
    return {i: effects[i] for i in ids}


async def test_at_least_once_loses_nothing_under_sigkill(
    msgkit_url: str, unique_name: str, tmp_path: Path
) -> None:
    _crashable(msgkit_url)
    counts = await _run_with_kills(msgkit_url, unique_name, msgkit.Guarantee.AT_LEAST_ONCE,
                                   tmp_path / "effects.db", KILLS)
    lost = [i for i, n in counts.items() if n == 0]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(f"at-least-once: {len(counts)} messages, {duplicates} duplicates, {len(lost)} lost")
    assert not lost


async def test_at_most_once_never_repeats_under_sigkill(
    msgkit_url: str, unique_name: str, tmp_path: Path
) -> None:
    _crashable(msgkit_url)
    counts = await _run_with_kills(msgkit_url, unique_name, msgkit.Guarantee.AT_MOST_ONCE,
                                   tmp_path / "effects.db", KILLS)
    repeated = {i: n for i, n in counts.items() if n > 1}
    lost = sum(1 for n in counts.values() if n == 0)
    print(f"at-most-once: {len(counts)} messages, {lost} lost, {len(repeated)} repeated")
    assert not repeated


async def test_killed_producer_never_reports_an_unstored_message_as_sent(
    msgkit_url: str, unique_name: str, tmp_path: Path
) -> None:
    _crashable(msgkit_url)
    seed = random.randrange(1 << 30)
    print(f"producer crash seed: {seed}")
    rng = random.Random(seed)
    db = tmp_path / "sent.db"
    for _ in range(3):
        worker = await asyncio.to_thread(Worker.start, "produce", msgkit_url, unique_name,
                                         "at-least-once", str(db), "100000")
        await asyncio.to_thread(worker.ready)
        await asyncio.sleep(rng.uniform(0.05, 0.5))  # let it send for a random while
        worker.kill()
    reported = {row[0] for row in open_db(db).execute("SELECT id FROM sent")}
    assert reported, "the producer was killed before it sent anything"
    received: set[str] = set()
    async with msgkit.connect(msgkit_url) as broker:
        got = asyncio.Event()

        async def collect(msg: msgkit.Message) -> None:
            received.add(msg.id)
            if reported <= received:
                got.set()

        await broker.consumer(unique_name, group="verify", start="earliest",
                              prefetch=500).start(collect)
        with contextlib.suppress(TimeoutError):  # what is missing is asserted below
            await asyncio.wait_for(got.wait(), 60)
    missing = reported - received
    print(f"producer: {len(reported)} reported sent, {len(missing)} missing")
    assert not missing
