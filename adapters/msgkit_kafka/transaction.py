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

A batch that published nothing needs no transaction: it begins with the first publish,
and an output-free batch's positions are committed by the consumer (fenced by the group
generation just the same).

An EXACTLY_ONCE producer (no consumer) makes each `publish` call one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from msgkit.backend import Publisher
from msgkit.errors import ConsumerLostError, PublishError
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import Outgoing
from msgkit_kafka.config import redacted
from msgkit_kafka.publisher import KafkaPublisher, NativeProducer, producer_config
from msgkit_kafka.topics import Topics

if TYPE_CHECKING:
    from msgkit_kafka.poller import Poller
    from msgkit_kafka.subscription import KafkaDelivery

log = get_logger("msgkit.kafka")

TRANSACTION_DEFAULTS = {"transaction.timeout.ms": 10_000}
"""How long a dead member's open transaction blocks read_committed readers of its output."""
_TRIES = 3
_GRACE = 5.0
"""How long past its own timeout a transactional call may block before the producer is
given up: librdkafka can wait forever for a group coordinator that moved (its issues #5456
and #5511), and a SIGKILLed broker's successor was seen to be missed for over 90 s."""


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
        self.transaction_timeout = float(conf.get("transaction.timeout.ms", 60_000)) / 1000
        self.on_close: Callable[[], None] | None = None
        self._wedged = False
        """A transactional call never returned: only a new producer (fencing this one) helps."""

    async def start(self) -> None:
        native = NativeProducer(Guarantee.EXACTLY_ONCE, self.conf)
        self._wedged = False
        try:
            await self._bounded(native.producer.init_transactions, self._timeout)
        except KafkaException as exc:
            await native.close(0)
            raise PublishError(f"Kafka refused a transactional producer: {exc}",
                               reason=str(exc)) from exc
        self._native = native
        self.publisher = KafkaPublisher(native, self._topics, self._close_timeout)

    async def _bounded(self, call: Callable[[float], None], timeout: float) -> None:
        """Runs a blocking transactional `call(timeout)` in a thread of its own (one that never
        returns must not hold a worker of the shared executor); past `timeout` + `_GRACE` the
        producer is wedged and raises a non-retriable `_TIMED_OUT`."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException | None] = loop.create_future()

        def run() -> None:
            outcome: BaseException | None = None
            try:
                call(timeout)
            except BaseException as exc:  # handed to the awaiting task
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, done, outcome)

        threading.Thread(target=run, name="msgkit-kafka-transaction", daemon=True).start()
        try:
            outcome = await asyncio.wait_for(done, timeout + _GRACE)
        except TimeoutError:
            self._wedged = True
            raise KafkaException(KafkaError(
                KafkaError._TIMED_OUT, f"the Kafka transaction call did not return within "
                f"{timeout + _GRACE:.0f}s; the producer is replaced")) from None
        if outcome is not None:
            raise outcome

    @property
    def native(self) -> NativeProducer:
        assert self._native is not None, "start() first"
        return self._native

    def begin(self) -> None:
        self.native.producer.begin_transaction()

    async def commit(self, offsets: list[TopicPartition] | None = None,
                     metadata: Any = None) -> None:
        """Adds `offsets` for the group of `metadata` and commits; raises `KafkaException`.
        Each step is retried alone while librdkafka calls its error retriable."""
        producer = self.native.producer
        if offsets:
            await self._retried(
                lambda t: producer.send_offsets_to_transaction(offsets, metadata, t))
        await self._retried(producer.commit_transaction)

    async def _retried(self, step: Callable[[float], None]) -> None:
        for attempt in range(1, _TRIES + 1):
            try:
                await self._bounded(step, self._timeout)
                return
            except KafkaException as exc:
                err = _error(exc)
                if attempt == _TRIES or err is None or not err.retriable():
                    raise

    async def abort(self) -> bool:
        """Aborts the open transaction. A producer that cannot abort is replaced, and then
        whether the transaction committed is unknown: returns False in that case."""
        if not self._wedged:  # a wedged producer would refuse: a call is still under way
            try:
                await self._bounded(self.native.producer.abort_transaction, self._timeout)
                return True
            except KafkaException as exc:
                log.warning("aborting a Kafka transaction failed (%s); starting a new producer",
                            exc)
        old = self.native
        self._native = self.publisher = None
        await old.close(0)
        for attempt in range(1, _TRIES + 1):  # a coordinator that moves may not answer yet
            try:
                await self.start()  # fences the old producer: its transaction ends either way
                break
            except PublishError as exc:
                if attempt == _TRIES:
                    raise
                log.warning("a new Kafka transactional producer failed, trying again: %s", exc)
        return False

    async def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
        if self._native is not None:
            await self._native.close(self._close_timeout)

    def describe(self) -> dict[str, Any]:
        return {"guarantee": Guarantee.EXACTLY_ONCE.value, **redacted(self.conf)}


class BatchTransaction:
    """The open transaction of one subscription: the batch handed out and its commit.

    Each transaction has an `epoch`; a publish for an older one is refused, so a handler of
    an aborted batch never writes into the next. A batch whose commit failed is followed by
    smaller ones (halved down to 1, doubled back after commits), so a batch too slow for
    `transaction.timeout.ms`, or one bad record, does not fail the same way forever.
    """

    def __init__(self, producer: TransactionalProducer, poller: Poller,
                 settle: Callable[[KafkaDelivery], bool], prefetch: int) -> None:
        self.producer = producer
        self._poller = poller
        self._settle = settle
        self._prefetch = prefetch
        self.limit = prefetch
        """The most deliveries the next batch may take."""
        self.epoch = 0
        self._begun = False
        """The producer's transaction began (something was published for this batch)."""
        self._batch: list[KafkaDelivery] = []
        self._unsettled = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._doomed: BaseException | None = None
        self._opened_at = 0.0
        self._committing: asyncio.Task[None] | None = None
        self.broken: BaseException | None = None
        """Ending a batch failed past recovery (no producer): the consumer must stop."""
        self._publishing = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._confirming: list[asyncio.Future[None]] = []
        """Confirmations of what this batch produced, awaited before it commits."""
        self.commits = 0
        self.aborts = 0

    @property
    def open(self) -> bool:
        """A batch is out, or its commit still runs: the next one waits."""
        return bool(self._batch) or self._committing is not None

    def handed_out(self, deliveries: Sequence[KafkaDelivery]) -> None:
        if not self._batch:
            self.epoch += 1
            self._opened_at = time.monotonic()
        self._batch.extend(deliveries)
        self._unsettled += len(deliveries)
        self._settled.clear()

    def joined(self, epoch: int) -> bool:
        """Before publishing into transaction `epoch`: False if it has ended. True counts a
        publish in flight until `left()`: a batch is aborted only once none is."""
        if (epoch != self.epoch or not self._batch or self._committing is not None
                or self.broken is not None):
            return False
        if not self._begun:
            self._begun = True  # also when begin fails: the end then replaces the producer
            try:
                self.producer.begin()
            except KafkaException as exc:
                self.doom(epoch, exc)
                return False
        self._publishing += 1
        self._quiet.clear()
        return True

    def left(self) -> None:
        self._publishing -= 1
        if self._publishing == 0:
            self._quiet.set()

    def confirming(self, epoch: int, confirmed: asyncio.Future[None]) -> None:
        """Messages produced into transaction `epoch`: its end waits for `confirmed`, and a
        refusal dooms it."""
        if epoch == self.epoch and self._committing is None:  # else it is aborted anyway
            self._confirming.append(confirmed)
        confirmed.add_done_callback(lambda done: self._confirmed(epoch, done))

    def _confirmed(self, epoch: int, done: asyncio.Future[None]) -> None:
        exc = (PublishError("a publish into the Kafka transaction was cancelled",
                            reason="cancelled") if done.cancelled() else done.exception())
        if exc is not None:
            self.doom(epoch, exc)

    def settled(self) -> None:
        self._unsettled -= 1
        if self._unsettled == 0:
            self._settled.set()

    def doom(self, epoch: int, exc: BaseException) -> None:
        """A publish into transaction `epoch` failed: it cannot commit, so its end starts now
        (its handlers may be stuck retrying that publish): publishes under way finish (within
        `message.timeout.ms`), then it is aborted and its batch redone."""
        if epoch == self.epoch and self._batch and self._doomed is None:
            self._doomed = exc
            self._start_end()

    async def finish(self) -> None:
        """Waits until the batch is settled, then commits it (or aborts and rewinds it).

        Cancelling the wait takes nothing; a commit once begun runs to its end."""
        if self._committing is None:
            if self.broken is not None:
                raise self.broken
            if not self._batch:
                return
            await self._settled.wait()
            if self._committing is None and self._batch:
                self._start_end()
        task = self._committing
        if task is not None:
            await asyncio.shield(task)
        if self.broken is not None:
            raise self.broken

    async def abandon(self) -> None:
        """Closing with deliveries unsettled: abort; the group's next owner redoes them."""
        if self._committing is not None:
            await asyncio.shield(self._committing)
        if self._batch:
            self._close_batch()
            self.epoch += 1
            if self._begun:
                self._begun = False
                await self.producer.abort()
            self.aborts += 1

    def _start_end(self) -> None:
        if self._committing is None:
            self._committing = asyncio.create_task(self._end_once())

    async def _end_once(self) -> None:
        try:
            await self._end()
        except Exception as exc:
            # No commit happened: the batch is left to the group's next owner, and its
            # deliveries are stale (`broken`); `finish` raises this to stop the consumer.
            self.broken = ConsumerLostError(
                f"ending a Kafka transaction of {self._poller.topic!r} failed: {exc!r}")
            self.broken.__cause__ = exc
            log.error("%s", self.broken)
            self._close_batch()
        finally:
            # Cleared here, not in a done callback: a waiter woken by `_close_batch` must
            # not find a finished task still registered.
            if self._committing is asyncio.current_task():
                self._committing = None

    async def _end(self) -> None:
        batch = self._batch
        confirming, self._confirming = self._confirming, []
        if confirming and self._doomed is None:  # a refusal dooms the batch (`_confirmed`)
            # librdkafka reports each message within its message.timeout.ms, which a
            # transactional producer keeps within transaction.timeout.ms.
            _, late = await asyncio.wait(confirming, return_when=asyncio.FIRST_EXCEPTION,
                                         timeout=self.producer.transaction_timeout + _GRACE)
            if late and self._doomed is None:
                self.doom(self.epoch, PublishError(
                    f"{len(late)} publish(es) into the Kafka transaction were not confirmed "
                    "in time", reason="timed out"))
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
            positions = [(part, part.position) for part in live if part.position is not None]
            try:
                if self._begun:
                    offsets = [TopicPartition(p.key[0], p.key[1], pos) for p, pos in positions]
                    await self.producer.commit(offsets, await self._poller.group_metadata())
                    self._begun = False
                elif not await self._poller.commit_now(positions):
                    raise KafkaException(KafkaError(KafkaError._FAIL, "offset commit failed"))
            except KafkaException as exc:
                log.warning("Kafka transaction of %d messages on %r failed, redoing them: %s",
                            len(batch), self._poller.topic, exc)
            else:
                for part in live:
                    part.committed = part.position
                self.commits += 1
                self._close_batch()
                if time.monotonic() - self._opened_at < self.producer.transaction_timeout / 4:
                    self.limit = min(self._prefetch, self.limit * 2)
                return
        self.epoch += 1  # from here on, publishes for this batch are refused
        await self._quiet.wait()  # and those under way have produced or failed
        known = True
        if self._begun:
            self._begun = False
            known = await self.producer.abort()
        self.aborts += 1
        if doomed is not None or len(live) == len(starts):
            self.limit = max(1, len(batch) // 2)
        # If the abort failed, the transaction may have committed: resume from the group's
        # committed positions rather than redo what it holds.
        await self._poller.rewind(live, from_committed=not known)
        for d in batch:  # still in flight: made stale by the rewind, settled here
            self._settle(d)
        self._close_batch()

    def _close_batch(self) -> None:
        self._batch = []
        self._unsettled = 0
        self._settled.set()
        # What came for this batch after its end began concerns it alone.
        self._confirming = []
        self._doomed = None


class JoinedPublisher(Publisher):
    """Publishes into the subscription's open transaction (handler output, retry copies,
    dead letters), visible once the transaction commits. A publish returns once its messages
    are handed to the client: the transaction's end waits for the broker's confirmations,
    and one it refuses dooms the transaction (the batch is redone). Awaiting each one would
    cost a replication round trip per message (5-10 ms on a three-node cluster)."""

    def __init__(self, producer: TransactionalProducer, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics
        self.transaction: BatchTransaction | None = None

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        txn = self.transaction
        assert txn is not None and self._producer.publisher is not None
        epoch = txn.epoch
        await self._topics.ensure(out.topic for out in messages)  # the await before producing
        if not txn.joined(epoch):
            raise PublishError("the Kafka transaction of this message was aborted; it is "
                               "handled again", reason="aborted")
        try:
            confirmed = await self._producer.publisher.produce(messages)
        except Exception as exc:
            txn.doom(epoch, exc)
            raise
        finally:
            txn.left()
        if confirmed is not None:
            txn.confirming(epoch, confirmed)

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
            try:
                producer.begin()
                assert producer.publisher is not None
                await producer.publisher.publish(messages)
                await producer.commit()
            except BaseException as exc:
                aborted = await producer.abort()
                if isinstance(exc, (KafkaException, PublishError)):
                    reason = str(_error(exc) or exc)
                    outcome = ("aborted: none of its messages is visible" if aborted else
                               "ended with an unknown outcome: its messages may be visible")
                    raise PublishError(f"the Kafka transaction {outcome}: {reason}",
                                       reason=reason) from exc
                raise

    async def close(self) -> None:
        await self._producer.close()

    @property
    def native(self) -> Any:
        return self._producer.native.producer

    def describe(self) -> dict[str, Any]:
        return self._producer.describe()


def _resolve(future: asyncio.Future[BaseException | None], outcome: BaseException | None) -> None:
    if not future.done():
        future.set_result(outcome)
