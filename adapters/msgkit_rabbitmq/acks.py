"""Acks of one channel, coalesced per event-loop turn (at-least-once consumers only: a lost
ack there means a redelivery, which the guarantee allows).

Each AMQP frame costs a socket write. Acks made in the same turn go out together: the run of
delivery tags acked from the oldest unsettled one on as one `basic.ack(multiple=True)`, the
others one by one. A multiple ack never covers an unsettled or already acked tag.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import aiormq

from msgkit.logs import get_logger

log = get_logger("msgkit.rabbitmq")


class AckBatcher:
    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._delivered: deque[int] = deque()  # not yet covered by a multiple ack, in order
        self._acked: set[int] = set()  # acked by the app (sent one by one, or pending)
        self._pending: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._ordered = True

    def delivered(self, tag: int) -> None:
        delivered = self._delivered
        if delivered and tag <= delivered[-1]:
            self._ordered = False  # never seen; would make multiple acks unsafe
        delivered.append(tag)

    def ack(self, tag: int) -> None:
        self._pending.append(tag)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self) -> None:
        """Returns once every ack made so far is written (or the channel is gone)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, []
                with contextlib.suppress(Exception):  # channel gone: the broker redelivers
                    await self._send(pending)
        finally:
            self._task = None

    async def _send(self, pending: list[int]) -> None:
        channel = self.channel
        if not self._ordered:
            for tag in pending:
                await channel.basic_ack(tag, wait=False)
            return
        acked, delivered = self._acked, self._delivered
        fresh = set(pending)
        acked.update(fresh)
        last = 0
        while delivered and delivered[0] in acked:
            tag = delivered.popleft()
            acked.discard(tag)
            if tag in fresh:
                fresh.discard(tag)
                last = tag
        if last:
            await channel.basic_ack(last, multiple=True, wait=False)
        for tag in sorted(fresh):  # behind an unsettled delivery: one by one
            await channel.basic_ack(tag, wait=False)
