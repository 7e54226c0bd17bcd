"""Runs a `concurrency=1` consumer: its task handles each fetched batch in order.

With one message at a time there is nothing to dispatch: no workers to hand deliveries
to, no per-key chains (the `Dispatcher`'s hand-offs cost as much per message as a fast
handler does). As in the `Dispatcher`, more is fetched beside a waiting handler while half
of `prefetch` is free: a subscription that fails ends the run even while a handler hangs,
and messages that arrive one by one fill the prefetch. Handlers that never wait get their
batches fetched between them, with no task per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from msgkit.backend import Delivery, Subscription
from msgkit.dispatch import Plain, Runner, cancelling_now


class Serial(Runner):
    def __init__(
        self,
        subscription: Subscription,
        process: Callable[[Delivery], Awaitable[None]],
        *,
        prefetch: int,
        release_on_stop: bool = True,
        plain: Plain | None = None,
    ) -> None:
        """As `Dispatcher` with `concurrency=1`: `process(delivery)` handles and settles
        one delivery, unless `plain` says how to do that without a call around the handler."""
        self._subscription = subscription
        self._process = process
        self._prefetch = prefetch
        self._release_on_stop = release_on_stop
        self._plain = plain
        self._batch: Sequence[Delivery] = ()
        """The batch being handled (empty between batches)."""
        self._done = 0
        """Deliveries of `_batch` finished."""
        self._ahead: asyncio.Task[Sequence[Delivery]] | None = None
        """Fetches more while `_batch` is handled."""
        self._fetched: list[Delivery] = []
        """What fetches beside a handler took: the next batch."""
        self._ended = False
        """A fetch beside a handler came back empty: the subscription ended."""
        self._refill = max(1, prefetch // 2)
        """Fetch ahead only into this much room: a fetch takes what is there already, and
        fetching into any room left batches too small for their task."""
        self._batches = 0
        """Batches taken so far: which one a `_half_free` call is about."""
        self._failed: asyncio.Task[Sequence[Delivery]] | None = None
        """The fetch ahead that failed while a batch was handled (it cancelled the run)."""
        self._task: asyncio.Task[None] | None = None
        self._fetching = False
        """The run's own task awaits a fetch (nothing was fetched ahead)."""
        self._stop_cancelled = False
        """`stop()` cancelled that fetch, not a handler: the run ends normally."""

    @property
    def held(self) -> int:
        # max: a scrape from another thread may fall between two of the fields' updates
        return max(0, len(self._batch) - self._done) + len(self._fetched)

    @property
    def buffered(self) -> int:
        # Between two deliveries nothing awaits: the first unfinished one is running.
        return max(0, len(self._batch) - self._done - 1) + len(self._fetched)

    def stop(self) -> None:
        """Stop fetching; `run` returns once the delivery in hand is finished.

        Deliveries fetched but not started are left unsettled with `release_on_stop` (the
        subscription's close gives them back); without it they run first."""
        self._stopping = True
        ahead = self._ahead
        if ahead is not None:
            ahead.cancel()  # fetch is cancellation-safe: no message is taken
        if self._release_on_stop:  # let go of the unstarted ones now: `held` counts them no more
            self._batch, self._fetched = self._batch[:self._done + 1], []
        if self._fetching and self._task is not None and not self._stop_cancelled:
            self._stop_cancelled = True
            self._task.cancel()

    async def run(self) -> None:
        """Fetch and handle until `stop()` or the subscription ends.

        Cancelling `run` cancels the handler in flight; its delivery stays unsettled."""
        self._task = asyncio.current_task()
        try:
            while True:
                batch: Sequence[Delivery] = self._fetched
                if batch:
                    self._fetched = []
                else:
                    if self._ended or (self._stopping and self._ahead is None):
                        return
                    batch = await (self._fetch() if self._ahead is None else self._next())
                if not batch or (self._stopping and self._release_on_stop):
                    return  # a batch fetched as stop() came stays unsettled: it goes back
                self._batch, self._done = batch, 0
                self._batches += 1
                room = self._prefetch - len(batch)
                if (room >= self._refill and self._ahead is None and not self._stopping
                        and not self._ended):
                    self._ahead = self._fetch_ahead(room)
                await self._handle_batch(batch, self._refill - room)
        finally:
            if self._ahead is not None:
                self._ahead.cancel()
            self._batch, self._done, self._ahead, self._fetched = (), 0, None, []

    async def _next(self) -> Sequence[Delivery]:
        """What the fetch started beside the last batch takes; empty once `stop()` cancelled
        it."""
        ahead = self._ahead
        assert ahead is not None
        try:
            await ahead
        except asyncio.CancelledError:
            if self._stopping and ahead.cancelled() and not cancelling_now():
                return ()
            raise
        finally:
            self._collect(ahead)
        batch, self._fetched = self._fetched, []
        return batch

    async def _fetch(self) -> Sequence[Delivery]:
        """A batch, fetched by the run's own task (no task per batch while busy: a full
        batch leaves no room to fetch ahead); empty once `stop()` cancelled it."""
        self._fetching = True
        try:
            return await self._subscription.fetch(self._prefetch)
        except asyncio.CancelledError:
            # stop()'s cancel ends the run; a cancel from outside as well still counts
            if self._stop_cancelled and self._task is not None and not self._task.uncancel():
                return ()
            raise
        finally:
            self._fetching = False

    def _fetch_ahead(self, room: int) -> asyncio.Task[Sequence[Delivery]]:
        task = asyncio.ensure_future(self._subscription.fetch(room))
        task.add_done_callback(self._collect)
        return task

    def _collect(self, fetch: asyncio.Task[Sequence[Delivery]]) -> None:
        """Keeps what a fetch ahead took, and fetches again while a handler still waits and
        the room is there: messages that trickle in one by one are taken as the dispatcher
        takes them. A fetch ahead that fails ends the run at once, not after the batch in
        hand. Runs once per fetch: as its done callback, or from `_next`."""
        if fetch is not self._ahead:
            return
        self._ahead = None
        if fetch.cancelled():
            return
        if fetch.exception() is not None:
            if self._batch and self._task is not None and self._failed is None:
                self._failed = fetch
                self._task.cancel()
            return
        taken = fetch.result()
        if not taken:
            self._ended = True
        elif not (self._stopping and self._release_on_stop):  # else let go, as in stop()
            self._fetched.extend(taken)
            room = self._prefetch - self.held
            if self._batch and room >= self._refill and not self._stopping:
                self._ahead = self._fetch_ahead(room)

    def _half_free(self, number: int) -> None:
        """Half the prefetch came free while batch `number` was handled: if its handler waits
        now (this runs at the loop's next turn), fetch the next batch beside it. Handlers
        that finish without waiting have moved on by then: no fetch task is made for them."""
        if (self._batch and self._batches == number and self._ahead is None
                and not (self._stopping or self._ended)):
            room = self._prefetch - self.held
            if room > 0:
                self._ahead = self._fetch_ahead(room)

    async def _handle_batch(self, batch: Sequence[Delivery], half_free: int) -> None:
        """Handles `batch`; once `half_free` of it finished, half the prefetch is free."""
        try:
            await self._handle(batch, half_free)
        except asyncio.CancelledError:
            failed = self._failed
            if failed is not None and self._task is not None and not self._task.uncancel():
                raise failed.exception() from None  # type: ignore[misc]
            raise
        finally:
            self._batch, self._done = (), 0

    async def _handle(self, batch: Sequence[Delivery], half_free: int) -> None:
        process = self._process
        plain = self._plain
        if plain is not None:
            handler, recover, ack = plain
        release = self._release_on_stop
        for done, delivery in enumerate(batch, 1):
            if release and self._stopping:
                return  # the rest stays unsettled: the subscription gives it back
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
            self._done = done
            if done == half_free:
                # the batch's number, not the batch: holding its deliveries until the loop
                # turns kept them from being freed, and set off the garbage collector
                asyncio.get_running_loop().call_soon(self._half_free, self._batches)

