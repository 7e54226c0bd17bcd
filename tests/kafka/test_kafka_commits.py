"""Offsets are committed only for finished messages, contiguously per partition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgkit
from msgkit.testing import Collector, eventually

Committed = Callable[[str, str, int], Awaitable[int]]
WaitCommitted = Callable[[str, str, int, int], Awaitable[None]]


async def test_slow_message_holds_back_later_commits_and_the_group_resumes_there(
    kafka1: msgkit.Broker, unique_name: str, committed: Committed,
    wait_committed: WaitCommitted,
) -> None:
    release = asyncio.Event()
    done: list[bytes] = []

    async def handler(msg: msgkit.Message) -> None:
        if msg.value == b"slow":
            await release.wait()
        done.append(msg.value)

    first = kafka1.consumer(unique_name, group="g", concurrency=8)
    task = asyncio.create_task(first.run(handler))
    await kafka1.producer().send_many(unique_name, [b"m0", b"slow", b"m2", b"m3", b"m4"])
    await eventually(lambda: sorted(done) == [b"m0", b"m2", b"m3", b"m4"], timeout=15,
                     message="all but the slow message handled")
    # Offset 1 (slow) is unfinished: the group may only have committed up to it.
    await wait_committed("g", unique_name, 0, 1)
    task.cancel()  # hard stop: the slow message never finishes here
    await asyncio.gather(task, return_exceptions=True)
    assert await committed("g", unique_name, 0) == 1

    again = Collector()
    await kafka1.consumer(unique_name, group="g", concurrency=1).start(again)
    got = await again.wait_for(4, timeout=15)
    assert [m.value for m in got] == [b"slow", b"m2", b"m3", b"m4"]
    assert got[0].native.offset() == 1
    await wait_committed("g", unique_name, 0, 5)

