"""Feeds deliveries from a subscription to workers: up to `concurrency` at once, one at a
time per key (so a key's messages keep their order), at most `prefetch` held at once."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from msgkit.backend import Delivery, Subscription
from msgkit.message import Key, Message


class Plain(NamedTuple):
    """How a consumer handles a delivery when nothing happens around its handler but the
    ack (at-least-once, no dedup, no instruments): the workers do it themselves, without
    a coroutine per message around the handler."""

    handler: Callable[[Message], Awaitable[Any]]
    recover: Callable[[Delivery, BaseException], Awaitable[None]]
    """After the handler raised: retries, the failure policy, the ack."""
    ack: Callable[[Delivery], Awaitable[None]]
    """When the delivery cannot `ack_nowait()`."""


class Runner(ABC):
    """What a consumer drives: `run()` until `stop()`; `held` and `stopping` for its policy."""

    _held = 0
    _stopping = False

    @property
    def held(self) -> int:
        """Deliveries fetched and not yet finished."""
        return self._held

    @property
    def stopping(self) -> bool:
        """`stop()` was called: held deliveries finish, no new ones are fetched."""
        return self._stopping

    @property
    def buffered(self) -> int:
        """Deliveries held that no handler has started yet."""
        return 0

    @abstractmethod
    async def run(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


class Dispatcher(Runner):
    def __init__(
        self,
        subscription: Subscription,
        process: Callable[[Delivery], Awaitable[None]],
        *,
        concurrency: int,
        prefetch: int,
        release_on_stop: bool = True,
        plain: Plain | None = None,
    ) -> None:
        """`process(delivery)` handles and settles one delivery, unless `plain` says how
        to do that without a call around the handler."""
        self._subscription = subscription
        self._plain = plain
        self._release_on_stop = release_on_stop
        self._process = process
        self._concurrency = concurrency
        self._prefetch = prefetch
        # Fetch again once this much room is free (or a worker is idle): fetching per
        # finished message cost a task per message.
        self._refill = max(1, min(prefetch // 2, prefetch - concurrency))
        self._ready: deque[Delivery] = deque()
        self._chains: dict[Key, deque[Delivery]] = {}  # key -> later deliveries of that key
        self._idle: deque[asyncio.Future[None]] = deque()
        self._room: asyncio.Future[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._fetch: asyncio.Task[object] | None = None

    async def run(self) -> None:
        """Fetch and dispatch until `stop()` or the subscription ends; then finish what is held.

        Cancelling `run` cancels the handlers in flight; their deliveries stay unsettled.
        """
        workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]
        # One task fetches for the whole run (not one per fetch): `stop()` cancels it,
        # which is safe at both of its waits (fetch takes nothing when cancelled).
        self._fetch = fetcher = asyncio.create_task(self._fetch_loop())
        try:
            try:
                await fetcher
            except asyncio.CancelledError:
                if not (self._stopping and fetcher.cancelled()) or cancelling_now():
                    raise
            await self._drained.wait()
        finally:
            fetcher.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    @property
    def buffered(self) -> int:
        # Read at scrape time, maybe from another thread: a copy of the chains, not a view.
        return len(self._ready) + sum(len(chain) for chain in list(self._chains.values()))

    def stop(self) -> None:
        """Stop fetching; `run` returns once the started deliveries are finished.

        Deliveries fetched but not started are left unsettled with `release_on_stop`: the
        subscription's close gives them back to the group (so a large prefetch does not make
        stopping slow). Without it (a backend may acknowledge at-most-once deliveries when
        fetched; a broker transaction should commit, not abort), they run first."""
        self._stopping = True
        if self._release_on_stop:
            self._release_unstarted()
        if self._fetch is not None:
            self._fetch.cancel()  # fetch is cancellation-safe: no message is taken

    def _release_unstarted(self) -> None:
        released = len(self._ready)
        self._ready.clear()
        for chain in self._chains.values():  # the running message of each key stays
            released += len(chain)
            chain.clear()
        self._held -= released
        if not self._held:
            self._drained.set()

    async def _fetch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if not self._wants_fetch():
                self._room = loop.create_future()
                await self._room
                continue
            batch = await self._subscription.fetch(self._prefetch - self._held)
            if not batch:
                return
            self._admit(batch)

    def _wants_fetch(self) -> bool:
        free = self._prefetch - self._held
        return free >= self._refill or (free > 0 and bool(self._idle))

    def _poke(self) -> None:
        room = self._room
        if room is not None and not room.done() and self._wants_fetch():
            room.set_result(None)

    def _admit(self, batch: Sequence[Delivery]) -> None:
        if not self._held:  # `_drained` is set exactly while nothing is held
            self._drained.clear()
        self._held += len(batch)
        ready = self._ready
        if self._concurrency == 1:  # one worker: nothing runs beside a key's earlier message
            ready.extend(batch)
        else:
            chains = self._chains
            for delivery in batch:
                key = delivery.message.key
                if key is not None:
                    chain = chains.get(key)
                    if chain is not None:
                        chain.append(delivery)
                        continue
                    chains[key] = deque()
                ready.append(delivery)
        idle = self._idle
        woken = 0
        while idle and woken < len(ready):
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                woken += 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        process = self._process
        plain = self._plain
        if plain is not None:
            handler, recover, ack = plain
        ready = self._ready
        chains = self._concurrency > 1
        while True:
            while not ready:
                waiter = loop.create_future()
                self._idle.append(waiter)
                self._poke()
                await waiter
            delivery: Delivery | None = ready.popleft()
            while delivery is not None:
                if plain is None:
                    await process(delivery)
                else:  # what Consumer._process does, inline: this runs once per message
                    try:
                        await handler(delivery.message)
                    except BaseException as raised:
                        await recover(delivery, raised)
                    else:
                        try:
                            acked = delivery.ack_nowait()
                        except Exception:
                            acked = False  # ack() says why
                        if not acked:
                            await ack(delivery)
                # what _finished() does, inline: this runs once per message
                self._held -= 1
                if not self._held:
                    self._drained.set()
                room = self._room
                if room is not None and not room.done():
                    free = self._prefetch - self._held  # _wants_fetch(), inline
                    if free >= self._refill or (free > 0 and self._idle):
                        room.set_result(None)
                if chains:
                    key = delivery.message.key
                    delivery = self._next_of_key(key) if key is not None else None
                else:
                    delivery = None

    def _next_of_key(self, key: Key) -> Delivery | None:
        chain = self._chains[key]
        if chain:
            return chain.popleft()
        del self._chains[key]
        return None


def cancelling_now() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0
