"""Publishing: a confluent-kafka `Producer` whose delivery reports are served by a thread.

`produce()` only queues (it never blocks), so it is called on the event loop; a thread
calls `poll()` and hands finished batches back with one `call_soon_threadsafe` per batch.
(confluent-kafka's own `aio.AIOProducer` cannot carry headers in its batch mode, which
msgkit needs for every message, and was slower in our measurement: see the README's
Kafka notes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from multidict import MultiDict

from msgkit.backend import Publisher
from msgkit.encoded import Encoded
from msgkit.errors import AuthorizationError, ConfigurationError, PublishError, SerializationError
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import Key, Outgoing
from msgkit_kafka.config import redacted
from msgkit_kafka.refusals import AUTHORIZATION_CODES
from msgkit_kafka.topics import Topics, retry_topic, validate_name
from msgkit_kafka.wire import DUE_AT, ORIGINAL_TOPIC

log = get_logger("msgkit.kafka")

_POLL_SECONDS = 0.1
ANY_PARTITION = -1
"""`produce()` is called with positional arguments only: (topic, value, key, partition,
callback, on_delivery, timestamp, headers). Parsing keywords cost 0.6 us of its 2.2 us."""
_YIELD_EVERY = 1000  # produce() calls between chances for other tasks to run


def producer_config(guarantee: Guarantee, conf: Mapping[str, Any]) -> dict[str, Any]:
    """The client settings `guarantee` needs on top of the user's."""
    out = dict(conf)
    if guarantee is Guarantee.AT_MOST_ONCE:
        out.setdefault("acks", 1)
        out.setdefault("enable.idempotence", False)
        return out
    acks = str(out.get("acks", "all")).lower()
    if acks not in ("all", "-1"):
        raise ConfigurationError(
            f"acks={out['acks']!r} cannot give {guarantee.value} publishing; leave acks unset "
            "(msgkit uses acks=all) or use Guarantee.AT_MOST_ONCE"
        )
    out["acks"] = "all"
    out.setdefault("enable.idempotence", True)
    return out


class _Batch:
    """Counts the delivery reports of one `publish` call; resolves its future at the end.

    Whichever thread serves a report counts it with `next()` on an `itertools.count`,
    which is atomic under the GIL: exactly one call sees the last number, without a
    lock per message (a contended lock cost a thread switch per report)."""

    __slots__ = ("count", "error", "future", "loop", "seen")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.count = count
        self.seen = itertools.count(1)
        self.error: tuple[KafkaError, str] | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def report(self, err: KafkaError | None, msg: Any) -> None:  # any thread serving reports
        if err is not None and self.error is None:
            self.error = (err, msg.topic() or "?")
        if next(self.seen) == self.count:
            self.loop.call_soon_threadsafe(self._resolve)

    def unsent(self, count: int) -> None:  # event loop: these will never be reported
        for _ in range(count):
            if next(self.seen) == self.count:
                self._resolve()

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
            return
        err, topic = self.error
        self.future.set_exception(
            PublishError(f"Kafka did not accept a message for {topic!r}: {explained(err)}",
                         reason=err.str(), permanent=err.code() in PERMANENT_CODES)
        )


PERMANENT_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})
"""What no retry of the same message can change."""


def explained(err: KafkaError) -> str:
    """The client's reason, with the setting to change where there is one."""
    if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        return (f"{err.str()}: raise the producer's message.max.bytes (librdkafka's default "
                "1000000) and, above the broker's limit, the topic's max.message.bytes")
    if err.code() in AUTHORIZATION_CODES:
        return (f"{err.str()}: grant this client's principal WRITE on the topic (and on its "
                "transactional id for exactly-once)")
    return err.str()


def _report_unconfirmed(err: KafkaError | None, msg: Any) -> None:  # poll thread
    if err is not None:
        log.warning("at-most-once message to %r was lost: %s", msg.topic(), err.str())


class NativeProducer:
    """One confluent-kafka Producer and its poll thread, shared by publishers alike."""

    def __init__(self, guarantee: Guarantee, conf: dict[str, Any]) -> None:
        self.guarantee = guarantee
        self.conf = conf
        try:
            self.producer = Producer(conf)
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka producer settings: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._room: list[asyncio.Future[None]] = []
        self._flushes: list[tuple[float, asyncio.Future[int]]] = []
        self._lock = threading.Lock()
        self.fatal = False
        """librdkafka raised a fatal error: this client can publish no more."""
        self._thread = threading.Thread(target=self._poll, name="msgkit-kafka-producer",
                                        daemon=True)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._thread.start()

    def _poll(self) -> None:
        producer = self.producer
        try:
            while not self._stop.is_set():
                try:
                    served = producer.poll(_POLL_SECONDS)
                except KafkaException as exc:
                    # confluent-kafka raises a fatal error (e.g. a fenced transactional
                    # producer) from poll; the failed messages' reports still come after it.
                    self._fatal(exc)
                    served = 0
                if served and self._room:
                    self._loop.call_soon_threadsafe(self._wake_room)
                if self._flushes:
                    with self._lock:
                        flushes, self._flushes = self._flushes, []
                    for timeout, future in flushes:
                        left = producer.flush(timeout)
                        self._loop.call_soon_threadsafe(_set, future, left)
            left = producer.flush(self._close_timeout)
            if left:
                log.warning("%d Kafka messages were still unconfirmed at close", left)
        except Exception:
            log.exception("Kafka producer poll thread failed")
        finally:
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                self._loop.call_soon_threadsafe(_set, self._done, None)

    def _fatal(self, exc: KafkaException) -> None:
        if not self.fatal:
            log.error("the Kafka producer failed for good (its unconfirmed messages fail; a "
                      "transactional one is replaced): %s", exc.args[0] if exc.args else exc)
        self.fatal = True

    def _wake_room(self) -> None:
        room, self._room = self._room, []
        for future in room:
            if not future.done():
                future.set_result(None)

    async def room(self) -> None:
        """Wait until delivery reports freed space in the local queue (or a short while)."""
        future = self._loop.create_future()
        self._room.append(future)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, _POLL_SECONDS)

    async def flush(self, timeout: float) -> int:
        """Wait (at most `timeout` s) until everything queued is confirmed; returns what is left."""
        future: asyncio.Future[int] = self._loop.create_future()
        with self._lock:
            self._flushes.append((timeout, future))
        return await future

    async def close(self, timeout: float) -> None:
        self._close_timeout = timeout
        self._stop.set()
        await asyncio.shield(self._done)

    _close_timeout = 30.0


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _set(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _refused(exc: KafkaException | TypeError, topic: str, batch: _Batch | None,
             unsent: int) -> SerializationError | PublishError:
    """What `produce` raising means to the caller; the `unsent` rest of the batch will
    never be reported, so it is counted off (else its future never resolves)."""
    if batch is not None:
        batch.future.add_done_callback(_retrieve)
        batch.unsent(unsent)
    if isinstance(exc, TypeError):
        return SerializationError(
            f"Kafka cannot carry a message for {topic!r}: {exc}; Kafka keys and "
            "header values are str, bytes or None")
    err = exc.args[0] if exc.args else None
    reason = err.str() if isinstance(err, KafkaError) else str(exc)
    return PublishError(
        f"Kafka refused a message for {topic!r}: "
        f"{explained(err) if isinstance(err, KafkaError) else reason}",
        reason=reason,
        permanent=isinstance(err, KafkaError) and err.code() in PERMANENT_CODES,
    )


class KafkaPublisher(Publisher):
    def __init__(self, native: NativeProducer, topics: Topics, close_timeout: float,
                 renew: Callable[[], NativeProducer] | None = None) -> None:
        self._native = native
        self._renew = renew
        """Gives a working client in place of one librdkafka failed for good (fatal)."""
        self._topics = topics
        self._close_timeout = close_timeout
        self._confirm = native.guarantee is not Guarantee.AT_MOST_ONCE

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        confirmed = await self.produce(messages)
        await asyncio.sleep(0)
        if confirmed is not None:
            await confirmed

    async def produce(self, messages: Sequence[Outgoing]) -> asyncio.Future[None] | None:
        """Hands `messages` to the client and returns without waiting for the broker: the
        future resolves once every one is confirmed (or raises `PublishError`); None when
        nothing will be confirmed (no messages, or at-most-once)."""
        if not messages:
            return None  # nothing will be reported: the batch would never resolve
        if self._native.fatal and self._renew is not None:
            self._native = self._renew()  # the failed messages raised; these go anew
        batch = _Batch(len(messages), asyncio.get_running_loop()) if self._confirm else None
        report = batch.report if batch is not None else _report_unconfirmed
        if type(messages) is Encoded:
            await self._produce_columns(messages, batch, report)
        else:
            await self._produce_each(messages, batch, report)
        return batch.future if batch is not None else None

    async def _produce_columns(self, messages: Encoded, batch: _Batch | None, report: Any) -> None:
        """A `send_many` batch, read straight from its columns: one topic and send time, and
        no message tuple built per record (without the broker, 0.3 of 0.85 us per message)."""
        topic = messages.topic
        if topic not in self._topics.known:
            await self._ensure(messages, 0, batch)
        produce = self._native.producer.produce
        millis = int(messages.timestamp * 1000)
        columns = zip(messages.payloads, messages.keys, messages.headers, strict=True)
        for i, (value, key, headers) in enumerate(columns):
            # A multi-mapping (repeated names) goes as its list of pairs, in order.
            wire: Any = headers if type(headers) is dict else list(headers.items())
            try:
                try:
                    produce(topic, value, key, ANY_PARTITION, report, None, millis, wire)
                except BufferError:  # local queue full: wait for deliveries, never drop
                    await self._produce_when_room(topic, value, key, report, millis, wire)
            except (KafkaException, TypeError) as exc:
                raise _refused(exc, topic, batch, len(messages) - i) from exc
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)

    async def _produce_each(self, messages: Sequence[Outgoing], batch: _Batch | None,
                            report: Any) -> None:
        """Any other sequence of messages (relay rows, replays): the loop of
        `_produce_columns` per message, inlined in both (a shared helper would cost a call
        per message)."""
        produce = self._native.producer.produce
        known = self._topics.known
        # Per message only what differs: messages to one topic at one time are checked and
        # converted once (identity tests are cheap).
        last_topic: str | None = None
        last_stamp: float | None = None
        millis = 0
        for i, (topic, value, key, headers, _, stamp, _) in enumerate(messages):
            if topic is not last_topic:
                if topic not in known:
                    await self._ensure(messages, i, batch)
                last_topic = topic
            if stamp is not last_stamp:
                millis = int(stamp * 1000)
                last_stamp = stamp
            wire: Any = headers if type(headers) is dict else list(headers.items())
            try:
                try:
                    produce(topic, value, key, ANY_PARTITION, report, None, millis, wire)
                except BufferError:
                    await self._produce_when_room(topic, value, key, report, millis, wire)
            except (KafkaException, TypeError) as exc:
                raise _refused(exc, topic, batch, len(messages) - i) from exc
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)

    async def _ensure(self, messages: Sequence[Outgoing], i: int, batch: _Batch | None) -> None:
        """Creates the topics of `messages[i:]` that are new (before any of them is sent)."""
        try:
            await self._topics.ensure(out.topic for out in messages[i:])
        except BaseException as exc:
            if batch is not None:
                batch.future.add_done_callback(_retrieve)
                batch.unsent(len(messages) - i)
            if isinstance(exc, AuthorizationError):  # what a refused write is to a producer
                raise PublishError(str(exc), reason=str(exc.__cause__ or exc)) from exc
            raise

    async def _produce_when_room(self, topic: str, value: bytes, key: Key | None,
                                 report: Any, millis: int, headers: Any) -> None:
        while True:
            await self._native.room()
            try:
                self._native.producer.produce(topic, value, key, ANY_PARTITION, report, None,
                                              millis, headers)
                return
            except BufferError:
                continue

    async def publish_to_group(self, group: str, messages: Sequence[Outgoing]) -> None:
        """Only `group` receives these: they go to its retry topic, due at once."""
        validate_name(group)
        copies = []
        for out in messages:
            headers = MultiDict(out.headers)
            headers[ORIGINAL_TOPIC] = out.topic
            headers.popall(DUE_AT, None)
            copies.append(Outgoing(retry_topic(out.topic, group), out.value, out.key, headers,
                                   out.id, out.timestamp, out.properties))
        await self.publish(copies)

    async def close(self) -> None:
        # The client is shared by the backend; flush what this publisher may have queued.
        if not self._confirm:
            left = await self._native.flush(self._close_timeout)
            if left:
                log.warning("%d at-most-once Kafka messages unconfirmed at close", left)

    @property
    def native(self) -> Producer:
        return self._native.producer

    def describe(self) -> dict[str, Any]:
        return {"guarantee": self._native.guarantee.value, **redacted(self._native.conf)}
