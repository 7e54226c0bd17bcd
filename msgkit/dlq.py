"""Dead-letter queues as a Python API: list, replay and purge, on every backend.

Dead letters of `(topic, group)` wait on `dead_letter_topic(topic, group)` for the `dlq`
group. Reading them joins that group and settles only what is replayed or purged; the rest
goes back when the read ends, so listing never removes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from msgkit import headers as h
from msgkit.backend import Delivery, Subscription, SubscriptionSpec
from msgkit.broker import Broker
from msgkit.consumer import DLQ_GROUP
from msgkit.errors import NotFoundError
from msgkit.failure import dead_letter_topic
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import HeaderValue, Key, Message, Outgoing, merged, text_of

log = get_logger("msgkit.dlq")

IDLE = 2.0
"""Seconds without a new dead letter after which a read ends."""
MISSING_POLL = 0.2
"""Seconds between looks for a dead-letter queue that does not exist yet."""
READ_AT_ONCE = 65_535
"""The most dead letters one read takes: it holds what it does not settle (listing settles
none), so this is its prefetch, AMQP's largest. A read that reaches it stops and says so."""


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters an operation takes; every given criterion must match."""

    exception_type: str | None = None
    """A substring of the exception's dotted type name, e.g. `TimeoutError`."""
    key: Key | None = None
    """The key, as text or bytes (bytes match a text key with the same UTF-8)."""
    failed_after: float | None = None
    failed_before: float | None = None
    """Bounds on the last failure time, in seconds since the epoch."""

    def __call__(self, msg: Message) -> bool:
        if self.exception_type and self.exception_type not in (
                text_of(msg.headers.get(h.DLQ_EXCEPTION_TYPE)) or ""):
            return False
        key = self.key
        if key is not None and msg.key_bytes != (key.encode() if isinstance(key, str) else key):
            return False
        failed = _seconds(msg.headers.get(h.DLQ_LAST_FAILURE_AT))
        if self.failed_after is not None and failed < self.failed_after:
            return False
        return not (self.failed_before is not None and failed > self.failed_before)


class DeadLetterQueue:
    """The dead letters of one consumer group: `DeadLetterQueue(broker, "orders", "payments")`."""

    def __init__(self, broker: Broker, topic: str, group: str | None, *,
                 dlq_topic: str | None = None, idle: float = IDLE) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.dlq_topic = dlq_topic or dead_letter_topic(topic, group)
        self.idle = idle

    async def messages(self, *, where: Filter = Filter(), limit: int | None = None,
                       missing_ok: bool = True) -> list[Message]:
        """The dead letters that match, oldest first, left in place.

        Reading creates nothing on the broker. A dead-letter queue that does not exist yet
        (nothing was ever dead-lettered there, or a name is wrong) reads as empty, or raises
        `NotFoundError` with `missing_ok=False`; so do `replay` and `purge`."""
        found: list[Message] = []

        async def keep(delivery: Delivery) -> bool:
            if where(delivery.message):
                found.append(delivery.message)
            return limit is not None and len(found) >= limit

        await self._read(keep, missing_ok)
        return found

    async def replay(self, *, where: Filter = Filter(),
                     progress: Callable[[Message], None] | None = None,
                     missing_ok: bool = True) -> int:
        """Send matching dead letters back to the original topic for the original group only,
        attempts reset; each is removed once the broker confirmed its copy. Returns the count."""
        if self.group is None:
            raise ValueError("dead letters of a consumer without a group cannot be replayed to it")
        group = self.group
        publisher = await self.broker.backend.publisher(Guarantee.AT_LEAST_ONCE, options={})
        moved = 0

        async def move(delivery: Delivery) -> bool:
            nonlocal moved
            msg = delivery.message
            if where(msg):
                await publisher.publish_to_group(group, [replay_copy(msg, self.topic)])
                await delivery.ack()
                moved += 1
                if progress is not None:
                    progress(msg)
            return False

        try:
            await self._read(move, missing_ok)
        finally:
            await publisher.close()
        return moved

    async def purge(self, *, where: Filter = Filter(), missing_ok: bool = True) -> int:
        """Delete matching dead letters for good. Returns the count."""
        purged = 0

        async def drop(delivery: Delivery) -> bool:
            nonlocal purged
            if where(delivery.message):
                await delivery.ack()
                purged += 1
            return False

        await self._read(drop, missing_ok)
        return purged

    async def _read(self, act: Callable[[Delivery], Awaitable[bool]], missing_ok: bool) -> None:
        """Feed every dead letter to `act` until idle (or `act` says stop); give back the rest."""
        self.broker.validate_topic(self.dlq_topic)
        spec = SubscriptionSpec(topic=self.dlq_topic, group=DLQ_GROUP, prefetch=READ_AT_ONCE,
                                start="earliest", guarantee=Guarantee.AT_LEAST_ONCE,
                                existing_only=True, until_end=True)
        subscription = await self._subscribe(spec, missing_ok)
        if subscription is None:
            return
        idle = self._idle()
        wait = idle + self.broker.backend.first_fetch_grace
        held = 0
        try:
            while True:
                try:
                    batch = await asyncio.wait_for(subscription.fetch(500), wait)
                except TimeoutError:
                    return
                wait = idle
                if not batch:
                    return
                for delivery in batch:
                    if await act(delivery):
                        return
                    held += 1
                    if held >= READ_AT_ONCE:
                        log.warning("read %d dead letters of %r at once, the most one read "
                                    "holds; read again after a replay or purge for the rest",
                                    held, self.dlq_topic)
                        return
        finally:
            await subscription.close()


    def _idle(self) -> float:
        quiet = self.broker.backend.quiet_after
        return self.idle if quiet is None else min(self.idle, quiet)

    async def _subscribe(self, spec: SubscriptionSpec, missing_ok: bool) -> Subscription | None:
        """The reader's subscription; None when the queue is still missing after `idle`
        seconds of looking (a missing queue reads like an empty one, in the same time)."""
        deadline = asyncio.get_running_loop().time() + self._idle()
        while True:
            try:
                return await self.broker.backend.subscribe(spec)
            except NotFoundError as exc:
                if not missing_ok:
                    raise NotFoundError(
                        f"no dead letters of {self.topic!r} / group {self.group!r}: {exc}. "
                        "Nothing was dead-lettered there yet, or the topic or group name is wrong"
                    ) from None
                if asyncio.get_running_loop().time() >= deadline:
                    return None
                await asyncio.sleep(MISSING_POLL)


def replay_copy(dead: Message, topic: str) -> Outgoing:
    """The dead letter as it was first sent: same id, key, value, headers (in order, repeated
    and null ones too) and properties, attempt 1."""
    headers = merged(dead.headers, {}, drop=(h.ATTEMPT, h.FIRST_FAILURE_AT), drop_prefix=h.DLQ_PREFIX)
    return Outgoing(topic, dead.value, dead.key, headers, dead.id, dead.timestamp, dead.properties)


def _seconds(value: HeaderValue) -> float:
    try:
        return float(text_of(value) or 0)
    except ValueError:
        return 0.0
