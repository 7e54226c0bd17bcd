"""Batch consumers: the handler takes a list of messages instead of one.

`broker.consumer(topic, group=..., batch=500)` hands each fetch (up to 500 messages; it
never waits to fill one) to `async def handler(msgs: list[Message])`, one batch at a time,
which keeps per-key order. A batch is acknowledged as a whole once the handler returned
(before it is called under at-most-once).

When the handler raises, the batch is retried in process as the failure policy says (each
try gets a new list); if it still fails, its messages are handled one at a time, with the
same retries, so each failing one is redelivered or dead-lettered on its own and the others
are acknowledged (they may run twice: at-least-once). Under at-most-once nothing is retried:
a failed batch is logged and gone. A payload that does not decode into the handler's model
fails alone, before the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from msgkit.backend import Delivery, Subscription
from msgkit.dispatch import Runner, cancelling_now
from msgkit.failure import FailurePolicy
from msgkit.handler import BatchHandler, Decode, failure_of, guarded
from msgkit.instrument import (
    HANDLING,
    HandleObservation,
    Instrument,
    Source,
    finished,
    observations_of,
    report,
)
from msgkit.logs import get_logger

log = get_logger("msgkit.consumer")

Failed = Callable[[Delivery, Exception], Awaitable[None]]


class BatchRunner(Runner):
    """Fetches up to `size` deliveries, runs the handler on them, settles them; repeats."""

    def __init__(
        self,
        subscription: Subscription,
        handler: BatchHandler,
        decode: Decode | None,
        *,
        size: int,
        ack_first: bool,
        failure: FailurePolicy,
        failed: Failed,
        observing: tuple[Sequence[Instrument], Source] | None = None,
    ) -> None:
        self._subscription = subscription
        self._handler = handler
        self._decode = decode
        self._size = size
        self._ack_first = ack_first
        self._failure = failure
        self._failed_policy = failed
        self._observing = observing
        """The broker's instruments: each message of a batch is observed alone."""
        self._observations: dict[int, list[HandleObservation]] = {}
        self._fetch: asyncio.Future[Sequence[Delivery]] | None = None

    async def run(self) -> None:
        """Until `stop()` (the batch in hand finishes) or the subscription ends.

        Cancelling `run` cancels the handler; its batch stays unsettled."""
        while not self._stopping:
            self._fetch = fetch = asyncio.ensure_future(self._subscription.fetch(self._size))
            try:
                batch = await fetch
            except asyncio.CancelledError:
                if self._stopping and fetch.cancelled() and not cancelling_now():
                    return
                raise
            if not batch:
                return
            self._held = len(batch)
            if self._observing is not None:
                instruments, source = self._observing
                self._observations = {id(d): observations_of(instruments, source, d.message,
                                                             current=False) for d in batch}
            try:
                await self._handle(batch)
            finally:
                self._held = 0
                for observations in self._observations.values():
                    finished(observations)
                self._observations = {}

    def stop(self) -> None:
        self._stopping = True
        if self._fetch is not None:
            self._fetch.cancel()  # fetch takes nothing when cancelled

    async def _handle(self, batch: Sequence[Delivery]) -> None:
        if self._ack_first:  # one whose ack failed comes again: it must not run now too
            batch = await _ack_all(batch)
        deliveries, items = await self._decoded(batch)
        if not deliveries:
            return
        try:
            await self._call(deliveries, items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._one_by_one(deliveries, exc)
            return
        if not self._ack_first:
            deliveries = await _ack_all(deliveries)
        self._report(deliveries, "handled")

    async def _decoded(self, batch: Sequence[Delivery]) -> tuple[list[Delivery], list[Any]]:
        """The deliveries whose payload decodes, and what the handler gets for each."""
        if self._decode is None:
            return list(batch), [d.message for d in batch]
        deliveries, items = [], []
        for d in batch:
            try:
                items.append(self._decode(d.message))
            except Exception as exc:  # DecodeError: dead-lettered alone, not retried
                await self._failed(d, exc)
                continue
            deliveries.append(d)
        return deliveries, items

    def _fresh(self, deliveries: list[Delivery]) -> list[Any]:
        """New input for another try: the handler may have changed the last one's."""
        decode = self._decode
        return [d.message if decode is None else decode(d.message) for d in deliveries]

    async def _call(self, deliveries: list[Delivery], items: list[Any]) -> None:
        """The handler on `items`, then the policy's in-process retries on fresh input."""
        try:
            await self._handler(items)
        except BaseException as raised:
            exc = failure_of(raised)  # a handler's own CancelledError fails its batch
            policy = self._failure
            if self._ack_first or not (policy.retries and policy.retryable(exc)):
                if exc is raised:
                    raise
                raise exc from raised
            log.info("batch handler failed on %d messages, retrying in process: %r",
                     len(deliveries), exc)
            await policy.retry_in_process(
                lambda: guarded(lambda: self._handler(self._fresh(deliveries))))

    async def _one_by_one(self, deliveries: list[Delivery], exc: Exception) -> None:
        """Find the failing messages of a failed batch: each is tried and settled alone."""
        if self._ack_first or len(deliveries) == 1:
            for d in deliveries:
                await self._failed(d, exc)
            return
        log.warning("batch handler failed on %d messages: %r; handling them one at a time",
                    len(deliveries), exc)
        for d in deliveries:
            if d.stale:  # the broker hands it out again; settling it frees its slot only
                await _ack_all((d,))
                continue
            try:
                await self._call([d], self._fresh([d]))
            except asyncio.CancelledError:
                raise
            except Exception as single:
                await self._failed(d, single)
                continue
            self._report(await _ack_all((d,)), "handled")


    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        """The policy settles `delivery`; its own observations hear the outcomes."""
        observations = self._observations.get(id(delivery))
        if not observations:
            await self._failed_policy(delivery, exc)
            return
        token = HANDLING.set(observations)
        try:
            report("failed", exc)
            await self._failed_policy(delivery, exc)
        finally:
            HANDLING.reset(token)

    def _report(self, deliveries: Sequence[Delivery], outcome: str) -> None:
        if not self._observations:
            return
        for d in deliveries:
            token = HANDLING.set(self._observations.get(id(d), ()))
            try:
                report(outcome)
            finally:
                HANDLING.reset(token)


async def _ack_all(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """Acknowledges each; returns those acknowledged (a failed ack is logged: the broker
    redelivers that message)."""
    acked = []
    for d in deliveries:
        try:
            await d.ack()
        except Exception:
            log.exception("could not acknowledge message %s; the broker will redeliver it",
                          d.message.id)
            continue
        acked.append(d)
    return acked
