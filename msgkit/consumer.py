"""`Consumer`: subscribes, runs the handler on each delivery, and settles it by the guarantee.

The path of one message: `Subscription.fetch` (backend) -> `Dispatcher` (concurrency, key
order; `msgkit.serial.Serial` when `concurrency=1`) -> `Consumer._process` (guarantee: ack
before or after the handler; for the usual consumer the dispatcher does that itself:
`dispatch.Plain`) -> handler -> `Delivery.ack`, or `FailurePolicy.handle` (redeliver /
dead-letter) when it raised.
Under EXACTLY_ONCE the handler's sends wait in a pending list (`msgkit.pending`) and are published
after it returned, before the ack; on a backend with transactions they, the dead letters and
the acks commit together. A batch consumer (`batch=`) runs `msgkit.batch.BatchRunner` in
place of the dispatcher and `_process`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msgkit.backend import Delivery, Publisher, StartFrom, Subscription, SubscriptionSpec
from msgkit.batch import BatchRunner
from msgkit.context import Context
from msgkit.dedup import Claim, Deduplicator
from msgkit.dispatch import Dispatcher, Plain, Runner
from msgkit.errors import ClosedError, ConfigurationError
from msgkit.failure import DeadLetterPublish, FailurePolicy, until_settled
from msgkit.guarantee import Guarantee
from msgkit.handler import Bound, Handler, adapt, adapt_batch, failure_of, guarded
from msgkit.instrument import Source, observed_handling, observed_publish, report
from msgkit.logs import get_logger
from msgkit.message import Headers, Message, Outgoing
from msgkit.pending import OUTBOX
from msgkit.serial import Serial

if TYPE_CHECKING:
    from msgkit.broker import Broker
    from msgkit.producer import Producer

log = get_logger("msgkit.consumer")

DEFAULT_PREFETCH = 128
"""Deliveries held at once by default. Each refill costs a task switch: on Kafka, 128
handled 22% more messages per second than 32. Stopping does not wait for the unstarted
ones (they go back to the group)."""

TRANSACTION_PREFETCH = 512
"""Default prefetch of an exactly-once consumer on a backend with transactions: a batch is
one transaction, and each commit costs broker round trips (32 per batch ran at a fifth of
at-least-once speed on Kafka, 500 at nine tenths)."""

CANCEL_GRACE = 5.0
"""Seconds a stop past its timeout waits for cancelled handlers to end (their cleanup)."""

DLQ_GROUP = "dlq"
"""The group every dead-letter topic keeps messages for (so they wait until inspected)."""


class Consumer:
    """Consumes one topic as a member of `group`. Made by `Broker.consumer()`.

    `await consumer.run(handler)` runs until `await consumer.stop()` (graceful: in-flight
    messages finish and are acknowledged) or until the task is cancelled (in-flight
    handlers are cancelled; their messages go back to the group).
    """

    def __init__(
        self,
        broker: Broker,
        topic: str,
        *,
        group: str | None,
        guarantee: Guarantee,
        concurrency: int,
        prefetch: int | None,
        start: StartFrom | None,
        failure: FailurePolicy,
        dedup: Deduplicator | None = None,
        batch: int | None = None,
        options: Mapping[str, Any],
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
        if batch is not None:
            _check_batch(batch, concurrency, prefetch, guarantee, dedup)
        if prefetch is not None and prefetch < 1:
            raise ConfigurationError(f"prefetch must be at least 1, not {prefetch}")
        if start not in (None, "earliest", "latest"):
            raise ConfigurationError(f"start must be 'earliest' or 'latest', not {start!r}")
        broker.validate_topic(topic)
        if group is not None:
            broker.validate_topic(group)
        self._broker = broker
        self.topic = topic
        self.group = group
        self.guarantee = guarantee
        self.concurrency = concurrency
        default = max(DEFAULT_PREFETCH, 4 * concurrency)
        if guarantee is Guarantee.EXACTLY_ONCE and broker.capabilities.transactions:
            default = max(default, TRANSACTION_PREFETCH)
        # a batch consumer keeps the next batch at hand while one is handled
        self.prefetch = prefetch or (2 * batch if batch else default)
        self.batch = batch
        self.start_from: StartFrom = start or ("earliest" if group else "latest")
        self.failure = failure
        self.dedup = dedup
        self._options = dict(options)
        self._ack_first = guarantee is Guarantee.AT_MOST_ONCE
        self._exactly_once = guarantee is Guarantee.EXACTLY_ONCE
        self._transaction: Publisher | None = None
        self._handler: Bound | None = None
        self._subscription: Subscription | None = None
        self._dispatcher: Runner | None = None
        self._task: asyncio.Task[None] | None = None
        """Runs the consumer: awaits `_runner`, then closes the subscription."""
        self._runner: asyncio.Task[None] | None = None
        """Fetches and handles; what a stop past its timeout cancels."""
        self._abandoned = False
        """A handler ignored the cancellation of a stop past its timeout."""
        self._producer: Producer | None = None
        self._dead_letters: Producer | None = None
        self._observing = bool(broker.instruments)
        """The broker has instruments: outcomes are reported to them."""
        self._plain = guarantee is Guarantee.AT_LEAST_ONCE and dedup is None
        """Nothing happens per message but the handler and the ack (`dispatch.Plain`)."""

    async def start(self, handler: Handler) -> None:
        """Subscribe and return once messages can flow; handling continues in the background."""
        if self._task is not None:
            raise ConfigurationError("this consumer is already running; make another for a second handler")
        if self._broker.closed:
            raise ClosedError("the broker is closed; start consumers before closing it")
        if self.batch is None:
            self._handler = bound = adapt(handler, self._context)
        else:
            batch_handler, decode = adapt_batch(handler)
        spec = SubscriptionSpec(
            topic=self.topic, group=self.group, prefetch=self.prefetch,
            start=self.start_from, guarantee=self.guarantee, options=self._options,
        )
        self._subscription = await self._broker.backend.subscribe(spec)
        if self._exactly_once:
            self._transaction = self._subscription.transactional_publisher()
        if self.batch is None:
            # Unstarted deliveries go back to the group on stop, unless they were
            # acknowledged when fetched (at-most-once) or belong to a broker transaction
            # that stopping should commit, not abort.
            instruments = self._broker.instruments
            backend = self._broker.backend
            self._source = Source(self.topic, self.group, backend.system, backend.span_attributes)
            plain = (Plain(bound, self._recover, self._ack)
                     if self._plain and not instruments else None)
            process = self._observed if instruments else self._process
            release_on_stop = not self._ack_first and self._transaction is None
            self._dispatcher = (
                Serial(self._subscription, process, prefetch=self.prefetch,
                       release_on_stop=release_on_stop, plain=plain)
                if self.concurrency == 1 else
                Dispatcher(self._subscription, process, concurrency=self.concurrency,
                           prefetch=self.prefetch, release_on_stop=release_on_stop, plain=plain))
        else:
            backend = self._broker.backend
            source = Source(self.topic, self.group, backend.system, backend.span_attributes)
            self._dispatcher = BatchRunner(
                self._subscription, batch_handler, decode, size=self.batch,
                ack_first=self._ack_first, failure=self.failure, failed=self._failed,
                observing=(self._broker.instruments, source) if self._observing else None,
            )
        # Its own task, so a stop past its timeout can cancel it and not `_serve`'s closing;
        # it ends with `_task` also when that was cancelled before it began to await it.
        self._runner = runner = asyncio.create_task(
            self._dispatcher.run(), name=f"msgkit-handlers-{self.topic}")
        self._task = task = asyncio.create_task(self._serve(), name=f"msgkit-consumer-{self.topic}")
        task.add_done_callback(lambda _: runner.cancel())
        self._broker._consumers.add(self)
        for instrument in self._broker.instruments:
            instrument.watch(self)
        log.debug("consumer started: %s", self.describe())

    async def run(self, handler: Handler) -> None:
        """Start, then wait until stopped. Cancelling this call stops the consumer at once
        (see `wait`)."""
        await self.start(handler)
        await self.wait()

    async def wait(self) -> None:
        """Wait until the consumer has stopped; re-raises what ended it (e.g. `ConsumerLostError`).

        Cancelling this call stops the consumer at once, as `stop(timeout=0)` does, before
        the cancellation goes on: handlers cancelled, the subscription closed."""
        task = self._task
        if task is None:
            return
        try:
            # Shielded: a task cancelled before its first step would never run the
            # `finally` that closes the subscription.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await self.stop(timeout=0)
            raise

    async def stop(self, timeout: float | None = None) -> None:
        """Take no new messages, finish and acknowledge the in-flight ones, leave the group.

        Messages fetched but not started go back to the group (under at-most-once, and in a
        broker transaction, they are handled first). Handlers still running after `timeout`
        seconds (default: the `stop_timeout` setting, 30) are cancelled, so a hanging handler
        cannot hang the stop: their messages go back to the broker (under at-most-once they
        were acknowledged when fetched: lost). A handler that ignores the cancellation for
        `CANCEL_GRACE` seconds is left running and an error logged."""
        if self._dispatcher is not None:
            self._dispatcher.stop()
        task, runner = self._task, self._runner
        if task is None or runner is None or self._abandoned:
            return
        limit = self._broker.settings.stop_timeout if timeout is None else timeout
        done, _ = await asyncio.wait([runner], timeout=None if math.isinf(limit) else limit)
        if not done:
            if not runner.cancelling():  # a stop beside this one may have cut already
                if self.in_flight:
                    log.warning("consumer of %r: %d message(s) still in flight after %gs; "
                                "cancelling their handlers", self.topic, self.in_flight, limit)
                runner.cancel()
            done, _ = await asyncio.wait([runner], timeout=CANCEL_GRACE)
            if not done:
                self._abandoned = True
                log.error("consumer of %r: a handler ignored cancellation for %gs; the "
                          "consumer is left running", self.topic, CANCEL_GRACE)
                return
        try:
            await asyncio.shield(task)  # closing the subscription: not cut off
        except asyncio.CancelledError:
            if task.cancelled():
                return
            raise
        except Exception:
            log.exception("consumer of %r ended with an error", self.topic)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def in_flight(self) -> int:
        """Messages fetched and not yet finished."""
        return self._dispatcher.held if self._dispatcher else 0

    @property
    def buffered(self) -> int:
        """Messages fetched that no handler has started yet (part of `in_flight`)."""
        return self._dispatcher.buffered if self._dispatcher else 0

    @property
    def native(self) -> Any:
        """The broker client's consumer object (None before `start`)."""
        return self._subscription.native if self._subscription else None

    def describe(self) -> dict[str, Any]:
        """The guarantee, limits and the effective client settings."""
        return {
            "topic": self.topic, "group": self.group, "guarantee": self.guarantee.value,
            "concurrency": self.concurrency, "prefetch": self.prefetch, "batch": self.batch,
            "start": self.start_from,
            "ack": "before handler" if self._ack_first else "after handler",
            "sends": ("in the broker transaction, after the handler" if self._transaction
                      else "after the handler" if self._exactly_once else "at once"),
            "dedup": repr(self.dedup) if self.dedup is not None else None,
            "client": self._subscription.describe() if self._subscription else {},
        }

    async def _serve(self) -> None:
        assert self._runner is not None and self._subscription is not None
        try:
            await self._runner
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside (a hard stop)
            # else a stop past its timeout cancelled the handlers: the consumer ended as asked
        finally:
            self._broker._consumers.discard(self)
            for instrument in self._broker.instruments:
                instrument.forget(self)
            await self._subscription.close()
            for producer in (self._producer, self._dead_letters):
                if producer is not None:
                    await producer.close()

    async def lag(self) -> dict[str, int]:
        """Messages of the group waiting behind this consumer, per partition (Kafka) or
        queue (RabbitMQ, memory); see `Backend.lag`."""
        if self.group is None:
            return {}
        return await self._broker.backend.lag(self.topic, self.group)

    async def _observed(self, delivery: Delivery) -> None:
        """`_process` as the broker's instruments see it (tracing, metrics)."""
        await observed_handling(self._broker.instruments, self._source, delivery.message,
                                lambda: self._process(delivery))

    async def _process(self, delivery: Delivery) -> None:
        msg = delivery.message
        claim: Claim | None = None
        outbox: list[Outgoing] | None = [] if self._exactly_once else None
        try:
            if self.dedup is not None:
                claim = await self.dedup.claim(msg, self.group)
                if claim is None:  # done before by this group: settle without the handler
                    if self._observing:
                        report("deduplicated")
                    await delivery.ack()
                    return
            if self._ack_first:
                await delivery.ack()
            await self._handle(msg, outbox)
            if outbox and not delivery.stale:  # a stale one is redone: its output with it
                await self._publish_outbox(outbox)
        except asyncio.CancelledError:  # stopped hard: its redelivery need not wait for the lease
            if claim is not None:
                await self._release(claim, msg)
            raise
        except Exception as exc:
            if self._observing:
                report("failed", exc)
            if claim is not None:
                await self._release(claim, msg)
            await self._failed(delivery, exc)
            return
        if self._observing:
            report("handled")
        if claim is not None:
            try:
                # Its effect happened: held (and retried) until the store records that, so
                # a later copy of it is skipped; released on stop, as a crash would.
                await until_settled(claim.complete, stopping=lambda: self._stopping(delivery),
                                    message_id=msg.id, action="mark as done")
            except Exception:
                log.exception("could not mark message %s as done before the consumer stopped; "
                              "released to the broker, which delivers it again", msg.id,
                              extra=self._fields(msg))
                return
        if not self._ack_first:
            await self._ack(delivery)

    async def _recover(self, delivery: Delivery, raised: BaseException) -> None:
        """A plain consumer's handler raised (see `dispatch.Plain`): in-process retries,
        else the failure policy; acknowledged if a retry succeeded."""
        try:
            await self._handle(delivery.message, None, raised)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(delivery, exc)
            return
        await self._ack(delivery)

    async def _handle(self, msg: Message, outbox: list[Outgoing] | None,
                      raised: BaseException | None = None) -> None:
        """Runs the handler on `msg` (unless its first attempt already `raised`), then the
        in-process retries while it fails; raises the failure that remains."""
        if raised is None:
            try:
                await (self._handler(msg) if outbox is None  # type: ignore[misc]
                       else self._attempt(msg, outbox))
                return
            except BaseException as first:
                raised = first
        exc = failure_of(raised)  # a handler's own CancelledError fails its message
        # at-most-once never runs a handler twice, so no in-process retries there
        if self._ack_first or not (self.failure.retries and self.failure.retryable(exc)):
            if exc is raised:
                raise raised
            raise exc from raised
        log.info("handler failed on message %s, retrying in process: %r", msg.id, exc,
                 extra=self._fields(msg))
        await self.failure.retry_in_process(lambda: guarded(
            lambda: self._handler(msg) if outbox is None  # type: ignore[misc]
            else self._attempt(msg, outbox)))

    async def _ack(self, delivery: Delivery) -> None:
        try:
            await delivery.ack()
        except Exception:
            log.exception("could not acknowledge message %s; the broker will redeliver it",
                          delivery.message.id, extra=self._fields(delivery.message))

    async def _attempt(self, msg: Message, outbox: list[Outgoing]) -> None:
        """One exactly-once handler attempt: its sends collect in `outbox` (a failed
        attempt's are dropped when the next one starts)."""
        outbox.clear()
        token = OUTBOX.set(outbox)
        try:
            await self._handler(msg)  # type: ignore[misc]
        finally:
            OUTBOX.reset(token)

    async def _publish_outbox(self, outbox: list[Outgoing]) -> None:
        if self._transaction is None:
            await self._context_producer().publish_built(outbox)  # observed there
        elif self._observing:  # new messages, sent after the handler returned: traced as sends
            await observed_publish(self._broker.instruments, self._broker.backend.system,
                                   outbox, self._transaction.publish)
        else:
            await self._transaction.publish(outbox)

    async def _release(self, claim: Claim, msg: Message) -> None:
        try:
            await claim.release()
        except Exception:  # the lease expires by itself; the retry claims it then
            log.exception("could not release the idempotency claim of message %s", msg.id,
                          extra=self._fields(msg))

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        msg = delivery.message
        if self._ack_first:
            log.warning("handler failed on message %s (at-most-once: not retried): %r", msg.id, exc,
                        extra=self._fields(msg))
            return
        log.warning("handler failed on message %s attempt %d: %r", msg.id, msg.attempt, exc,
                    extra=self._fields(msg))
        failed_at = time.time()  # the failure's time, however long storing its copy takes
        outcome: list[str] = []

        async def settle() -> None:
            outcome.append(await self.failure.handle(
                delivery, exc, self.group, self._dead_letter_for(delivery), failed_at))

        try:
            # Retried while this consumer runs; on stop the broker brings the message back.
            await until_settled(settle, stopping=lambda: self._stopping(delivery),
                                message_id=msg.id)
            if self._observing:
                report(outcome[-1])
        except Exception:
            if delivery.stale:  # the broker hands it out again: nothing was lost
                log.info("message %s is handled again from the broker", msg.id,
                         extra=self._fields(msg))
                return
            log.exception("could not retry or dead-letter message %s before the consumer "
                          "stopped; left unacknowledged", msg.id, extra=self._fields(msg))

    def _stopping(self, delivery: Delivery) -> bool:
        """Settling `delivery` should give up: the consumer stops or the broker took it back."""
        return self._dispatcher is None or self._dispatcher.stopping or delivery.stale

    def _dead_letter_for(self, delivery: Delivery) -> DeadLetterPublish:
        async def publish(topic: str, msg: Message, headers: Headers) -> None:
            if not delivery.stale:  # else the broker hands it out again: no dead letter now
                await self._dead_letter(topic, msg, headers)
        return publish

    async def _dead_letter(self, topic: str, msg: Message, headers: Headers) -> None:
        # Stamped now, not with the message's time: Kafka's retention counts from it.
        out = Outgoing(topic, msg.value, msg.key, headers, msg.id, time.time(), msg.properties)
        if self._transaction is not None:  # commits with the input's acknowledgement
            if self._observing:
                await observed_publish(self._broker.instruments, self._broker.backend.system,
                                       (out,), self._transaction.publish, copies=True)
            else:
                await self._transaction.publish((out,))
        else:
            if self._dead_letters is None:
                self._dead_letters = self._broker.producer(
                    guarantee=Guarantee.AT_LEAST_ONCE, required_groups=(DLQ_GROUP,),
                    **self._broker.backend.single_send_options,
                )
            await self._dead_letters.publish_raw((out,))
        log.error("message %s dead-lettered to %r after %d attempt%s", msg.id, topic, msg.attempt,
                  "" if msg.attempt == 1 else "s", extra=self._fields(msg))

    def _fields(self, msg: Message) -> dict[str, object]:
        """Structured fields of a log line about `msg` (`msgkit run --log-format json`)."""
        return {"message_id": msg.id, "topic": self.topic, "group": self.group,
                "attempt": msg.attempt}

    def _context(self, msg: Message) -> Context:
        return Context(msg, self.group, self._context_producer())

    def _context_producer(self) -> Producer:
        if self._producer is None:
            guarantee = Guarantee.AT_MOST_ONCE if self._ack_first else Guarantee.AT_LEAST_ONCE
            self._producer = self._broker.producer(guarantee=guarantee)
        return self._producer


def _check_batch(batch: int, concurrency: int, prefetch: int | None, guarantee: Guarantee,
                 dedup: Deduplicator | None) -> None:
    if batch < 1:
        raise ConfigurationError(f"batch must be at least 1, not {batch}")
    if concurrency > 1:
        raise ConfigurationError(
            "a batch consumer handles one batch at a time (that keeps per-key order): drop "
            "concurrency=, or run more consumers in the group")
    if prefetch is not None and prefetch < batch:
        raise ConfigurationError(f"prefetch={prefetch} is smaller than batch={batch}; "
                                 "leave prefetch unset or make it at least the batch")
    if guarantee is Guarantee.EXACTLY_ONCE or dedup is not None:
        raise ConfigurationError(
            "batch consumers give at-most-once or at-least-once delivery; for exactly-once or "
            "dedup= take one message per handler call (drop batch=)")
