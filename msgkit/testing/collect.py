"""Helpers for tests that wait for messages: with deadlines, never fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable

from msgkit.message import Message


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0,
    interval: float = 0.01, message: str = "condition",
) -> None:
    """Wait until `condition()` is true (it may be a coroutine function, e.g. one asking the
    broker); raise `AssertionError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    held = condition()
    return bool(await held) if inspect.isawaitable(held) else bool(held)


class Collector:
    """A handler that records every message; `await collector.wait_for(n)` waits for n.

    `fail` may raise to simulate a failing handler; `block` holds the handler until set.
    """

    def __init__(
        self,
        fail: Callable[[Message], bool] | None = None,
        on_message: Callable[[Message], Awaitable[None]] | None = None,
    ) -> None:
        self.messages: list[Message] = []
        self.failures: list[Message] = []
        self._fail = fail
        self._on_message = on_message
        self._changed = asyncio.Event()

    async def __call__(self, msg: Message) -> None:
        if self._on_message is not None:
            await self._on_message(msg)
        if self._fail is not None and self._fail(msg):
            self.failures.append(msg)
            self._changed.set()
            raise RuntimeError(f"collector told to fail on {msg.id}")
        self.messages.append(msg)
        self._changed.set()

    @property
    def values(self) -> list[bytes]:
        return [m.value for m in self.messages]

    @property
    def ids(self) -> set[str]:
        return {m.id for m in self.messages}

    async def wait_for(self, count: int, *, timeout: float = 15.0) -> list[Message]:
        """Wait until at least `count` messages were handled successfully."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} messages within {timeout}s, got {len(self.messages)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.messages

    async def wait_failures(self, count: int, *, timeout: float = 15.0) -> list[Message]:
        await eventually(lambda: len(self.failures) >= count, timeout=timeout,
                         message=f"{count} failures")
        return self.failures


class Holding:
    """A handler that records the value of every message it starts and holds those `hold`
    picks until `release()`: unfinished, so never acknowledged or committed meanwhile.
    A held one cancelled (a stop past its timeout) takes `cleanup` seconds to end, then is
    recorded in `cancelled`."""

    def __init__(self, hold: Callable[[Message], bool], *, cleanup: float = 0.0) -> None:
        self.started: list[bytes] = []
        self.cancelled: list[bytes] = []
        self._hold = hold
        self._cleanup = cleanup
        self._released = asyncio.Event()

    async def __call__(self, msg: Message) -> None:
        self.started.append(msg.value)
        if self._hold(msg):
            try:
                await self._released.wait()
            except asyncio.CancelledError:
                await asyncio.sleep(self._cleanup)
                self.cancelled.append(msg.value)
                raise

    def release(self) -> None:
        self._released.set()
