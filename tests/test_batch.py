"""The batch runner alone, over a scripted subscription: what is acknowledged, retried,
handed to the failure policy or left for the broker when a batch fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgkit
from msgkit.backend import Delivery, Subscription
from msgkit.batch import BatchRunner
from msgkit.message import Headers, Message


class Recorded(Delivery):
    def __init__(self, value: bytes, *, stale: bool = False, ack_fails: bool = False) -> None:
        super().__init__(Message("t", value, id=value.decode()))
        self.acks = 0
        self._stale = stale
        self._ack_fails = ack_fails

    async def ack(self) -> None:
        if self._ack_fails:
            raise ConnectionError("channel closed")
        self.acks += 1

    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None:
        raise AssertionError("the runner settles failures through `failed`")

    @property
    def stale(self) -> bool:
        return self._stale


class Once(Subscription):
    """Hands out one batch, then nothing."""

    def __init__(self, batch: list[Recorded]) -> None:
        self.batch: list[Recorded] | None = batch

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        batch, self.batch = self.batch, None
        return batch or ()

    async def close(self) -> None: ...


async def run(batch: list[Recorded], handler: object, *, ack_first: bool = False,
              retries: int = 1) -> list[str]:
    """Runs `handler` over `batch`; returns the ids handed to the failure policy."""
    failed: list[str] = []

    async def on_failure(d: Delivery, exc: Exception) -> None:
        failed.append(d.message.id)

    runner = BatchRunner(
        Once(batch), handler, None, size=10, ack_first=ack_first,  # type: ignore[arg-type]
        failure=msgkit.FailurePolicy(retries=retries, backoff=0.001, backoff_max=0.01),
        failed=on_failure,
    )
    await asyncio.wait_for(runner.run(), 5)
    return failed


async def test_a_handler_that_empties_its_list_loses_nothing() -> None:
    batch = [Recorded(b"a"), Recorded(b"bad"), Recorded(b"c")]

    async def drains(msgs: list[Message]) -> None:
        while msgs:
            if msgs.pop().value == b"bad":
                raise ValueError("bad")

    assert await run(batch, drains) == ["bad"]
    assert [d.acks for d in batch] == [1, 0, 1]


async def test_each_message_of_a_failed_batch_gets_the_in_process_retries_alone() -> None:
    batch = [Recorded(b"a"), Recorded(b"b")]
    tries: dict[bytes, int] = {}

    async def flaky(msgs: list[Message]) -> None:
        if len(msgs) > 1:
            raise ConnectionError("downstream refuses batches")
        tries[msgs[0].value] = tries.get(msgs[0].value, 0) + 1
        if tries[msgs[0].value] == 1:
            raise ConnectionError("not yet")

    assert await run(batch, flaky) == []
    assert tries == {b"a": 2, b"b": 2} and [d.acks for d in batch] == [1, 1]


async def test_stale_messages_of_a_failed_batch_are_settled_not_run() -> None:
    batch = [Recorded(b"gone", stale=True), Recorded(b"b"), Recorded(b"bad")]
    alone: list[bytes] = []

    async def handler(msgs: list[Message]) -> None:
        if len(msgs) == 1:
            alone.append(msgs[0].value)
        if any(m.value == b"bad" for m in msgs):
            raise ValueError("bad")

    assert await run(batch, handler) == ["bad"]
    assert alone == [b"b", b"bad", b"bad"]  # "bad" alone twice: its in-process retry
    assert [d.acks for d in batch] == [1, 1, 0]


async def test_at_most_once_never_runs_a_message_whose_early_ack_failed() -> None:
    batch = [Recorded(b"a"), Recorded(b"b", ack_fails=True), Recorded(b"c")]
    handled: list[bytes] = []

    async def handler(msgs: list[Message]) -> None:
        handled.extend(m.value for m in msgs)

    assert await run(batch, handler, ack_first=True) == []
    assert handled == [b"a", b"c"]
