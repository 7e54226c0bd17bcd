"""The event-loop side of a Kafka subscription: a bounded buffer that `fetch` hands out.

Records arrive from the consumer thread (`poller.py`) in batches, through an inbox the
loop empties when it fetches: the thread wakes the loop only when it waits for records (a
wake-up per batch cost a self-pipe write and a loop turn on both sides). `fetch` never holds
more than `prefetch` unsettled deliveries and takes nothing when cancelled (it removes
records from the buffer only on its way out). Settling a delivery tells the offset tracker,
whose contiguous positions the thread commits (under exactly-once, the batch's transaction
commits them instead: see `transaction.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from multidict import MultiDict

from msgkit import headers as h
from msgkit.backend import Delivery, Publisher, Subscription, SubscriptionSpec
from msgkit.errors import BrokerUnavailableError, ConsumerLostError, MsgkitError
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import Headers, Message, Outgoing, text_of
from msgkit_kafka.config import redacted
from msgkit_kafka.offsets import Key, PartitionOffsets
from msgkit_kafka.poller import Batch, Poller
from msgkit_kafka.transaction import BatchTransaction, JoinedPublisher, TransactionalProducer
from msgkit_kafka.wire import (
    DUE_AT,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    KafkaMessage,
    first_stored,
    set_native,
    to_message,
)

log = get_logger("msgkit.kafka")
_new = object.__new__
Chunk = list[Any]


class KafkaDelivery(Delivery):
    __slots__ = ("_sub", "offset", "part", "settled")

    def __init__(self, message: Message, sub: KafkaSubscription, part: PartitionOffsets,
                 offset: int) -> None:
        self.message = message
        self._sub = sub
        self.part = part
        self.offset = offset
        self.settled = False

    async def ack(self) -> None:
        self._sub.settle(self)

    def ack_nowait(self) -> bool:
        # `_sub.settle(self)`, inline for the usual case (once per message): the offset
        # finishes in order, the thread is not blocked, nothing waits.
        sub = self._sub
        part = self.part
        pending = part.pending
        if (self.settled or sub._txn is not None or sub.waiters or sub._poller.blocked
                or not pending or pending[0] != self.offset or part.finished or part.revoked):
            sub.settle(self)
            return True
        self.settled = True
        sub._unacked -= 1
        sub.finished += 1
        pending.popleft()
        part.position = self.offset + 1
        return True

    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None:
        await self._sub.redeliver(self, delay, headers)

    @property
    def stale(self) -> bool:
        """Its partition was revoked or rewound (an aborted transaction), or its transaction
        could not end (the consumer stops): it comes again, from here or another member."""
        txn = self._sub._txn
        return self.part.revoked or (txn is not None and txn.broken is not None)

    @property
    def origin(self) -> Mapping[str, str]:
        """Where Kafka first stored it: `partition` and `offset`; for a retry copy also
        `retry-topic`, `retry-partition` and `retry-offset` of this copy."""
        record = self.message.native
        partition, offset = first_stored(record)
        where = {"partition": partition, "offset": offset}
        if record.topic() != self.message.topic:
            where.update({"retry-topic": record.topic(),
                          "retry-partition": str(record.partition()),
                          "retry-offset": str(self.offset)})
        return where


class KafkaSubscription(Subscription):
    def __init__(
        self,
        spec: SubscriptionSpec,
        conf: dict[str, Any],
        *,
        retry_topic: str | None,
        retry_publisher: Publisher | None,
        limit: int,
        max_bytes: int = 0,
        timeout: float,
        close_timeout: float,
        tansu: AdminClient | None,
        transaction: TransactionalProducer | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._spec = spec
        self._prefetch = spec.prefetch
        self._retry_topic = retry_topic
        self._commit_first = spec.guarantee is Guarantee.AT_MOST_ONCE and spec.group is not None
        self._retry_publisher = retry_publisher
        self._close_timeout = close_timeout
        self.inbox: deque[Batch | None] = deque()
        """Appended by the consumer thread: a batch, or None once what came before
        reaches every partition's end (`until_end`). Emptied into `_buffer`."""
        self._buffer: deque[Chunk] = deque()
        """What the thread handed over, in order: [records, partitions, next index, topic
        of them all or None], or [deliveries, None, next index, None] for deliveries built
        already (taken back or copies)."""
        self.waiters: list[asyncio.Future[None]] = []
        """Fetches waiting; the thread reads it after adding to the inbox, to wake them."""
        self._unacked = 0
        self.finished = 0
        """Deliveries the thread handed over that are settled or dropped (loop-written)."""
        self._closed = False
        self._error: BaseException | None = None
        self._joined: asyncio.Future[None] = self._loop.create_future()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self._poller = Poller(
            self, conf, topic=spec.topic, retry_topic=retry_topic, group=spec.group,
            start=spec.start, limit=limit, max_bytes=max_bytes, timeout=timeout, tansu=tansu,
            transactional=transaction is not None, until_end=spec.until_end,
        )
        self._at_end = False
        """`until_end`: the thread read every assigned partition to its end."""
        self._txn = (BatchTransaction(transaction, self._poller, self.settle, spec.prefetch)
                     if transaction else None)
        if isinstance(retry_publisher, JoinedPublisher):  # its failures doom the transaction
            retry_publisher.transaction = self._txn
        self.on_close: Callable[[KafkaSubscription], None] | None = None

    async def start(self, join_timeout: float) -> None:
        """Starts the consumer thread; returns once the group join completed."""
        self._poller.start()
        try:
            await asyncio.wait_for(asyncio.shield(self._joined), join_timeout)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailableError(
                f"the Kafka consumer of {self._spec.topic!r} (group {self._spec.group!r}) did "
                f"not join within {join_timeout}s; is the broker reachable?"
            ) from None
        except BaseException:
            await self.close()
            raise

    # -- called from the consumer thread via call_soon_threadsafe -------------------------

    def _on_posted(self, _: object) -> None:
        """The thread added to the inbox while a fetch waited."""
        self._wake()

    def _on_joined(self, _: object) -> None:
        if not self._joined.done():
            self._joined.set_result(None)

    def _purge(self, _: object) -> None:
        """Drops buffered records of partitions this consumer gave up."""
        self._empty_inbox()
        kept: deque[Chunk] = deque()
        for items, parts, pos, topic in self._buffer:
            live = [x for x in itertools.islice(items, pos, None)
                    if not (x.part.revoked if parts is None else _stale(x, parts))]
            self.finished += len(items) - pos - len(live)
            if live:
                kept.append([live, parts, 0, topic])
        self._buffer = kept

    def _on_stopped(self, error: BaseException | None) -> None:
        if error is not None and not self._closed:
            if not isinstance(error, MsgkitError):
                log.error("Kafka consumer of %r failed: %r", self._spec.topic, error)
                error = ConsumerLostError(f"the Kafka consumer of {self._spec.topic!r} "
                                          f"failed: {error}")
            self._error = error
        if not self._joined.done():
            self._joined.set_exception(self._error or ConsumerLostError("consumer stopped"))
            self._joined.exception()  # retrieved: start() re-raises it or is gone
        if not self._stopped.done():
            self._stopped.set_result(None)
        self._empty_inbox()  # the thread adds nothing more
        self._wake()

    def _empty_inbox(self) -> None:
        """(event loop) Moves what the thread handed over into the buffer, in order."""
        inbox = self.inbox
        while inbox:
            batch = inbox.popleft()
            if batch is None:
                self._at_end = True
            elif self._closed:
                self.finished += len(batch[0])
            else:
                records, parts, topic = batch
                self._buffer.append([records, parts, 0, topic])
                self._at_end = False

    # -- the Subscription contract ------------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        while True:
            if self._error is not None:
                raise self._error
            if self._closed:
                return ()
            if self._txn is not None and (self._txn.open or self._txn.broken):
                await self._txn.finish()  # the batch handed out before commits first
                continue
            room = min(max_messages, self._prefetch - self._unacked)
            if self._txn is not None:  # a batch is a transaction: as large as it may be
                room = min(self._txn.limit, self._prefetch - self._unacked)
            if self.inbox:
                self._empty_inbox()
            buffer = self._buffer
            if room > 0 and buffer:
                out: list[KafkaDelivery] = []
                while buffer and len(out) < room:
                    chunk = buffer[0]
                    items, parts, pos, topic = chunk
                    end = min(len(items), pos + room - len(out))
                    if parts is None:
                        for d in itertools.islice(items, pos, end):
                            if d.part.revoked:
                                self.finished += 1
                            else:
                                out.append(d)
                    else:
                        self._deliveries(items, parts, topic, pos, end, out)
                    if end == len(items):
                        buffer.popleft()
                    else:
                        chunk[2] = end
                if out and self._commit_first:
                    out = await self._commit_before_handing_out(out)
                if out:
                    self._unacked += len(out)
                    if self._txn is not None:
                        self._txn.handed_out(out)
                    return out
                continue
            if self._at_end and not buffer:
                return ()
            waiter = self._loop.create_future()
            self.waiters.append(waiter)
            if self.inbox:  # added before the thread could see the waiter
                self.waiters.remove(waiter)
                continue
            try:
                await waiter
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)

    async def _commit_before_handing_out(self, out: list[KafkaDelivery]) -> list[KafkaDelivery]:
        """At-most-once: the group's position passes `out` before any of it is handled."""
        last: dict[PartitionOffsets, int] = {}
        for d in out:
            last[d.part] = d.offset + 1
        future = self._poller.commit_first(list(last.items()))
        try:
            ok = await asyncio.shield(future)
        except asyncio.CancelledError:
            self._buffer.appendleft([out, None, 0, None])  # a cancelled fetch takes nothing
            raise
        if not ok:
            self._buffer.appendleft([out, None, 0, None])
            await asyncio.sleep(0.1)
            return []
        live = [d for d in out if not d.part.revoked]
        self.finished += len(out) - len(live)
        return live

    def _deliveries(self, records: list[Any], parts: dict[Key, PartitionOffsets],
                    only: str | None, start: int, end: int, out: list[KafkaDelivery]) -> None:
        """Deliveries of `records[start:end]` (all of topic `only`, if given), appended to
        `out`. Their offsets join their partition's pending ones here, in the order they
        are handed out. A record of a partition given up since it was fetched is dropped."""
        if only is not None and only != self._retry_topic:
            self._fresh_deliveries(records, parts, only, start, end, out)
            return
        # A batch that may hold retry copies (rare): each record on its own.
        retry_topic = self._retry_topic
        for record in itertools.islice(records, start, end):  # never an error: the thread keeps those
            topic = record.topic()
            part = parts.get((topic, record.partition()))
            if part is None or part.revoked:
                self.finished += 1
                continue
            offset = record.offset()
            part.pending.append(offset)
            out.append(KafkaDelivery(to_message(record, topic == retry_topic), self, part, offset))

    def _fresh_deliveries(self, records: list[Any], parts: dict[Key, PartitionOffsets],
                          topic: str, start: int, end: int, out: list[KafkaDelivery]) -> None:
        """`_deliveries` of records all read from `topic` itself, the usual case."""
        # This runs for every record: objects are built without calling their classes,
        # and what only changes between runs of one partition is looked up per run.
        partition = None
        part: PartitionOffsets | None = None
        note_pending = None
        live = False
        dropped = 0
        add = out.append
        for record in itertools.islice(records, start, end):
            p = record.partition()
            if p != partition:  # records come in runs of one partition
                partition = p
                part = parts.get((topic, p))
                live = part is not None and not part.revoked
                if part is not None:
                    note_pending = part.pending.append
            if not live:
                dropped += 1
                continue
            offset = record.offset()
            note_pending(offset)  # type: ignore[misc]
            msg = _new(KafkaMessage)
            set_native(msg, record)  # new_message(record), inline
            d = _new(KafkaDelivery)
            d.message = msg
            d._sub = self
            d.part = part  # type: ignore[assignment]
            d.offset = offset
            d.settled = False
            add(d)
        self.finished += dropped

    def settle(self, d: KafkaDelivery) -> bool:
        """Marks `d` finished; False if it was settled already."""
        if d.settled:
            return False
        d.settled = True
        self._unacked -= 1
        self.finished += 1
        d.part.finish(d.offset)
        if self._txn is not None:
            self._txn.settled()
        poller = self._poller
        if poller.blocked and poller.sent - self.finished <= poller.low:
            wake = poller.wake
            if not wake.is_set():
                wake.set()  # once: Event.set takes a lock and notifies every time
        if self.waiters:
            self._wake()
        return True

    async def redeliver(self, d: KafkaDelivery, delay: float, headers: Headers) -> None:
        if d.settled:
            return
        msg = d.message
        if self._retry_publisher is not None and self._retry_topic is not None:
            # Stored in this group's retry topic before the original is released.
            wire = MultiDict(headers)
            wire[ORIGINAL_TOPIC] = msg.topic
            wire[ORIGINAL_PARTITION], wire[ORIGINAL_OFFSET] = first_stored(msg.native)
            if delay > 0:
                wire[DUE_AT] = f"{time.time() + delay:.6f}"
            await self._retry_publisher.publish(
                (Outgoing(self._retry_topic, msg.value, msg.key, wire, msg.id, msg.timestamp,
                          msg.properties),)
            )
            self.settle(d)
            return
        # A private consumer's group ends with it: the copy waits here, not on the broker.
        d.settled = True
        self._unacked -= 1
        again = KafkaDelivery(
            replace(msg, headers=MultiDict(headers), attempt=msg.attempt + 1,
                    idempotency_key=text_of(headers.get(h.IDEMPOTENCY_KEY))),
            self, d.part, d.offset,
        )
        if delay > 0:
            self._loop.call_later(delay, self._requeue, again)
        else:
            self._requeue(again)
        if self.waiters:
            self._wake()

    def _requeue(self, d: KafkaDelivery) -> None:
        if self._closed:
            self.finished += 1
            return
        self._buffer.append([[d], None, 0, None])
        self._wake()

    async def close(self) -> None:
        if not self._closed and self._txn is not None:
            await self._end_transaction()
        if not self._closed:
            self._closed = True
            self._empty_inbox()
            self.finished += sum(len(chunk[0]) - chunk[2] for chunk in self._buffer)
            self._buffer.clear()
            self._poller.stop()
            self._wake()
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), self._close_timeout)
        except TimeoutError:
            log.warning("the Kafka consumer of %r did not leave its group within %ss",
                        self._spec.topic, self._close_timeout)
        if self._txn is not None:
            await self._txn.producer.close()
        if self.on_close is not None:
            self.on_close(self)

    async def _end_transaction(self) -> None:
        """Commit the last batch if it was handled to the end; else abort it (its messages
        go to the group's next owner)."""
        assert self._txn is not None
        try:
            if self._unacked == 0 and self._error is None and self._txn.broken is None:
                await self._txn.finish()
            else:
                await self._txn.abandon()
        except Exception:
            log.exception("ending the Kafka transaction of %r failed", self._spec.topic)

    def transactional_publisher(self) -> Publisher | None:
        return self._retry_publisher if self._txn is not None else None  # a JoinedPublisher

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def assignment(self) -> list[tuple[str, int]]:
        """The (topic, partition) pairs assigned now (a snapshot; never waits)."""
        return sorted(self._poller.tracker.parts)

    @property
    def backlog(self) -> int:
        """Records handed over by the consumer thread and not finished yet."""
        return self._poller.sent - self.finished

    @property
    def paused(self) -> bool:
        """The consumer paused its partitions because the backlog stayed full."""
        return self._poller.flow_paused

    @property
    def native(self) -> Consumer:
        return self._poller.consumer

    def describe(self) -> dict[str, Any]:
        return {
            "topic": self._spec.topic, "group": self._spec.group,
            "retry_topic": self._retry_topic, "buffer_messages": self._poller.max_records,
            "buffer_bytes": self._poller.max_bytes,
            **({"transactions": self._txn.producer.describe()} if self._txn else {}),
            **redacted(self._poller.conf),
        }


def _stale(record: Any, parts: dict[Key, PartitionOffsets]) -> bool:
    part = parts.get((record.topic(), record.partition()))
    return part is None or part.revoked
