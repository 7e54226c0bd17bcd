"""Exactly-once on Kafka: consume, process and produce in one transaction.

An EXACTLY_ONCE subscription owns a transactional producer (its own `transactional.id`).
Every batch that `fetch` hands out is one transaction: what the handlers send, the retry
copies and the dead letters of that batch go into it, and once every delivery of the batch
is settled, the consumed positions are added (`send_offsets_to_transaction`, fenced by the
group generation) and the transaction commits before the next batch is handed out.

If the commit fails, a publish into the transaction fails (then it cannot commit), or a
partition of the batch was revoked meanwhile, the transaction is aborted and the batch's
partitions are rewound to where the batch began: it is handled again, and consumers with
`isolation.level=read_committed` never see the aborted output. Deliveries of the aborted
batch still in flight are settled as stale, so nothing more is published for them.
A consumer that dies leaves its transaction open until `transaction.timeout.ms` (msgkit's
default: 10 s); the broker then aborts it and the group's next owner redoes the batch.

An EXACTLY_ONCE producer (no consumer) makes each `publish` call one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from msgkit.backend import Publisher
from msgkit.errors import PublishError
from msgkit.guarantee import Guarantee
from msgkit.message import Outgoing
from msgkit_kafka.config import redacted
from msgkit_kafka.publisher import KafkaPublisher, NativeProducer, producer_config
from msgkit_kafka.topics import Topics

if TYPE_CHECKING:
    from msgkit_kafka.poller import Poller
    from msgkit_kafka.subscription import KafkaDelivery

log = logging.getLogger("msgkit.kafka")

TRANSACTION_DEFAULTS = {"transaction.timeout.ms": 10_000}
"""How long a dead member's open transaction blocks read_committed readers of its output."""
_TRIES = 3


def transactional_config(conf: Mapping[str, Any], name: str, fixed_id: str) -> dict[str, Any]:
    """Producer settings for transactions: idempotent, acks=all, and `fixed_id` or a fresh
    transactional.id."""
    out = producer_config(Guarantee.EXACTLY_ONCE, {**TRANSACTION_DEFAULTS, **conf})
    out["transactional.id"] = fixed_id or f"msgkit-{name}-{uuid.uuid4().hex[:12]}"
    return out


def _error(exc: BaseException) -> KafkaError | None:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


class TransactionalProducer:
    """A transactional librdkafka producer; made anew when Kafka fenced or broke the old one."""

    def __init__(self, conf: dict[str, Any], topics: Topics, timeout: float,
                 close_timeout: float) -> None:
        self.conf = conf
        self._topics = topics
        self._timeout = timeout
        self._close_timeout = close_timeout
        self._native: NativeProducer | None = None
        self.publisher: KafkaPublisher | None = None

    async def start(self) -> None:
        native = NativeProducer(Guarantee.EXACTLY_ONCE, self.conf)
        try:
            await asyncio.to_thread(native.producer.init_transactions, self._timeout)
        except KafkaException as exc:
            await native.close(0)
            raise PublishError(f"Kafka refused a transactional producer: {exc}",
                               reason=str(exc)) from exc
        self._native = native
        self.publisher = KafkaPublisher(native, self._topics, self._close_timeout)

    @property
    def native(self) -> NativeProducer:
        assert self._native is not None, "start() first"
        return self._native

    def begin(self) -> None:
        self.native.producer.begin_transaction()

    async def commit(self, offsets: list[TopicPartition] | None = None,
                     metadata: Any = None) -> None:
        """Adds `offsets` for the group of `metadata` and commits; raises `KafkaException`."""
        producer = self.native.producer

        def run() -> None:
            for attempt in range(1, _TRIES + 1):
                try:
                    if offsets:
                        producer.send_offsets_to_transaction(offsets, metadata, self._timeout)
                    producer.commit_transaction(self._timeout)
                    return
                except KafkaException as exc:
                    err = _error(exc)
                    if attempt == _TRIES or err is None or not err.retriable():
                        raise

        await asyncio.to_thread(run)

    async def abort(self) -> None:
        """Aborts the open transaction; a producer that cannot abort is replaced."""
        try:
            await asyncio.to_thread(self.native.producer.abort_transaction, self._timeout)
            return
        except KafkaException as exc:
            log.warning("aborting a Kafka transaction failed (%s); starting a new producer", exc)
        old = self.native
        await self.start()
        await old.close(0)

    async def close(self) -> None:
        if self._native is not None:
            await self._native.close(self._close_timeout)

    def describe(self) -> dict[str, Any]:
        return {"guarantee": Guarantee.EXACTLY_ONCE.value, **redacted(self.conf)}


class BatchTransaction:
    """The open transaction of one subscription: the batch handed out and its commit."""

    def __init__(self, producer: TransactionalProducer, poller: Poller,
                 settle: Callable[[KafkaDelivery], bool]) -> None:
        self.producer = producer
        self._poller = poller
        self._settle = settle
        self._doomed: BaseException | None = None
        self._batch: list[KafkaDelivery] = []
        self._unsettled = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._committing: asyncio.Task[None] | None = None
        self.commits = 0
        self.aborts = 0

    @property
    def open(self) -> bool:
        return bool(self._batch)

    def handed_out(self, deliveries: Sequence[KafkaDelivery]) -> None:
        if not self._batch:
            self.producer.begin()
        self._batch.extend(deliveries)
        self._unsettled += len(deliveries)
        self._settled.clear()

    def settled(self) -> None:
        self._unsettled -= 1
        if self._unsettled == 0:
            self._settled.set()

    def doom(self, exc: BaseException) -> None:
        """A publish into the open transaction failed: it can only be aborted now, without
        waiting for the rest of the batch."""
        if self._batch and self._doomed is None:
            self._doomed = exc
            self._settled.set()

    async def finish(self) -> None:
        """Waits until the batch is settled, then commits it (or aborts and rewinds it).

        Cancelling the wait takes nothing; a commit once begun runs to its end."""
        if not self._batch and self._committing is None:
            return
        await self._settled.wait()
        if self._committing is None:
            self._committing = asyncio.create_task(self._end())
        task = self._committing
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._committing is task:
                self._committing = None

    async def abandon(self) -> None:
        """Closing with deliveries unsettled: abort; the group's next owner redoes them."""
        if self._batch:
            self._batch = []
            self._unsettled = 0
            self._settled.set()
            await self.producer.abort()
            self.aborts += 1

    async def _end(self) -> None:
        batch, self._batch = self._batch, []
        doomed, self._doomed = self._doomed, None
        starts: dict[Any, int] = {}
        for d in batch:
            if d.part not in starts or d.offset < starts[d.part]:
                starts[d.part] = d.offset
        live = {part: start for part, start in starts.items() if not part.revoked}
        if doomed is not None:
            log.warning("a publish into the Kafka transaction of %r failed, redoing its batch "
                        "of %d: %s", self._poller.topic, len(batch), doomed)
        elif len(live) == len(starts):
            offsets = [TopicPartition(part.key[0], part.key[1], part.position)
                       for part in live if part.position is not None]
            try:
                await self.producer.commit(offsets, await self._poller.group_metadata())
            except KafkaException as exc:
                log.warning("Kafka transaction of %d messages on %r failed, redoing them: %s",
                            len(batch), self._poller.topic, exc)
            else:
                for part in live:
                    part.committed = part.position
                self.commits += 1
                return
        await self.producer.abort()
        self.aborts += 1
        await self._poller.rewind(live)
        for d in batch:  # still in flight: made stale by the rewind, settled here
            self._settle(d)
        self._unsettled = 0
        self._settled.set()


class JoinedPublisher(Publisher):
    """Publishes into the subscription's open transaction (handler output, retry copies,
    dead letters): confirmed by the broker, visible once the transaction commits."""

    def __init__(self, producer: TransactionalProducer) -> None:
        self._producer = producer
        self.transaction: BatchTransaction | None = None

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        assert self._producer.publisher is not None
        try:
            await self._producer.publisher.publish(messages)
        except Exception as exc:
            if self.transaction is not None:
                self.transaction.doom(exc)
            raise

    async def close(self) -> None:
        """The subscription closes its producer."""

    @property
    def native(self) -> Any:
        return self._producer.native.producer

    def describe(self) -> dict[str, Any]:
        return self._producer.describe()


class TransactionalPublisher(Publisher):
    """EXACTLY_ONCE publishing without a consumer: each `publish` call is one transaction."""

    def __init__(self, producer: TransactionalProducer) -> None:
        self._producer = producer
        self._lock = asyncio.Lock()  # one transaction at a time per producer

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        async with self._lock:
            producer = self._producer
            producer.begin()
            try:
                assert producer.publisher is not None
                await producer.publisher.publish(messages)
                await producer.commit()
            except BaseException as exc:
                await producer.abort()
                if isinstance(exc, KafkaException):
                    reason = str(_error(exc) or exc)
                    raise PublishError(f"Kafka aborted the transaction: {reason}",
                                       reason=reason) from exc
                raise

    async def close(self) -> None:
        await self._producer.close()

    @property
    def native(self) -> Any:
        return self._producer.native.producer

    def describe(self) -> dict[str, Any]:
        return self._producer.describe()
