"""`connect()` and `Broker`: the entry point, one connection to one backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from msgkit.backend import Backend, Capabilities, StartFrom
from msgkit.consumer import Consumer
from msgkit.contract import Publication
from msgkit.dedup import Deduplicator
from msgkit.errors import ConfigurationError, InvalidTopicError
from msgkit.failure import FailurePolicy
from msgkit.guarantee import Guarantee
from msgkit.handler import Handler
from msgkit.instrument import Instrument
from msgkit.logs import get_logger
from msgkit.producer import Producer
from msgkit.registry import backend_class
from msgkit.settings import Settings
from msgkit.url import URL

log = get_logger("msgkit")

H = TypeVar("H", bound=Handler)


def connect(url: str | None = None, *, settings: Settings | None = None,
            instruments: Sequence[Instrument] = (), **options: Any) -> Broker:
    """A broker for `url` (else `MSGKIT_URL`, else `memory://`). Use it with `async with`.

    `instruments` see every publish and every message handled (`msgkit.tracing.Tracing`,
    `msgkit.metrics.Metrics`). `options` are backend-native settings passed through
    untouched (librdkafka settings for Kafka, connection options for RabbitMQ); URL query
    parameters count as options too.
    """
    settings = settings or Settings()
    parsed = URL.parse(url if url is not None else settings.url)
    cls = backend_class(parsed.scheme)
    backend = cls(parsed, {**parsed.query, **options})
    return Broker(backend, settings, instruments)


class Broker:
    """One connection to a broker; makes producers and consumers.

    `async with msgkit.connect("kafka://localhost:9092") as broker: ...`
    """

    def __init__(self, backend: Backend, settings: Settings,
                 instruments: Sequence[Instrument] = ()) -> None:
        self.backend = backend
        self.settings = settings
        self.instruments = tuple(instruments)
        for instrument in self.instruments:
            if not isinstance(instrument, Instrument):
                raise ConfigurationError(
                    f"instruments= takes msgkit.instrument.Instrument objects (Tracing(), "
                    f"Metrics()), not {instrument!r}")
        self._consumers: set[Consumer] = set()
        self._producers: list[Producer] = []
        self._subscribers: list[tuple[Consumer, Handler]] = []
        self._publications: list[Publication] = []
        self._started = False
        self._closed = False

    @property
    def url(self) -> str:
        """The broker URL with any password redacted."""
        return self.backend.url.redacted

    @property
    def capabilities(self) -> Capabilities:
        return self.backend.capabilities

    @property
    def native(self) -> Any:
        """The broker client's own connection object, for what msgkit does not cover."""
        return self.backend.native

    @property
    def consumer_count(self) -> int:
        """Consumers of this broker that are running."""
        return len(self._consumers)

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> Broker:
        if self._closed:
            raise ConfigurationError("a closed broker cannot start again; call msgkit.connect() anew")
        if not self._started:
            await self.backend.connect()
            self._started = True
            log.info("connected to %s", self.url)
        return self

    async def close(self, timeout: float | None = None) -> None:
        """Stop consumers gracefully (together; handlers still running after `timeout`
        seconds, default the `stop_timeout` setting, are cancelled: see `Consumer.stop`),
        close producers, then the connection.

        Producers and the connection are closed also when a consumer's stop failed (its
        error is raised afterwards) or this close was cancelled: then the consumers' handlers
        are cancelled at once and their subscriptions closed first."""
        if self._closed:
            return
        self._closed = True
        consumers = list(self._consumers)
        try:
            stopped = await asyncio.gather(*(consumer.stop(timeout) for consumer in consumers),
                                           return_exceptions=True)
        except asyncio.CancelledError:  # cut handlers now: none may outlive the connection
            await asyncio.gather(*(consumer.stop(timeout=0) for consumer in consumers),
                                 return_exceptions=True)
            await self._close_clients(raise_first=False)
            raise
        failed = [outcome for outcome in stopped if isinstance(outcome, BaseException)]
        await self._close_clients(raise_first=not failed)
        if failed:
            raise failed[0]

    async def _close_clients(self, *, raise_first: bool) -> None:
        """Close every producer, then the connection, each even if one before failed; the
        first failure is raised at the end if `raise_first`, the others are logged."""
        first: Exception | None = None
        for close in [*(producer.close for producer in self._producers), self.backend.close]:
            try:
                await close()
            except Exception as exc:
                if raise_first and first is None:
                    first = exc
                else:
                    log.error("closing %s: %s", self.url, exc, exc_info=exc)
        if first is not None:
            raise first

    async def __aenter__(self) -> Broker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def validate_topic(self, topic: str) -> None:
        if not isinstance(topic, str) or not topic:
            raise InvalidTopicError(f"topic must be a non-empty str, not {topic!r}")
        self.backend.validate_topic(topic)

    def producer(
        self,
        *,
        guarantee: Guarantee | None = None,
        required_groups: Sequence[str] = (),
        **options: Any,
    ) -> Producer:
        """A producer; `required_groups` are created on publish so they keep every message."""
        guarantee = _guarantee(guarantee or self.settings.guarantee)
        if guarantee is Guarantee.EXACTLY_ONCE and not self.capabilities.transactions:
            raise ConfigurationError(
                f"{self.backend.url.scheme}:// has no transactions, so a producer cannot be "
                "exactly-once on it: send with Guarantee.AT_LEAST_ONCE and an idempotency_key=, "
                "and consume with Guarantee.EXACTLY_ONCE and dedup=msgkit.dedup.Dedup(store_url)"
            )
        producer = Producer(self, guarantee, required_groups=required_groups, options=options)
        self._producers.append(producer)
        return producer

    def consumer(
        self,
        topic: str,
        *,
        group: str | None = None,
        guarantee: Guarantee | None = None,
        concurrency: int | None = None,
        prefetch: int | None = None,
        start: StartFrom | None = None,
        failure: FailurePolicy | None = None,
        dedup: Deduplicator | None = None,
        batch: int | None = None,
        **options: Any,
    ) -> Consumer:
        """A consumer of `topic` in `group` (same group: compete; other groups: each gets all).

        `concurrency` messages run at once, one at a time per key. `prefetch` bounds the
        messages held unacknowledged (default: 4 x concurrency, at least 128; 512 under
        exactly-once with broker transactions, where a batch is a transaction). `start` is where
        a new group begins: "earliest" (default for named groups) or "latest".
        `batch`: the handler takes a list of up to this many messages (`msgkit.batch`).
        """
        chosen = _guarantee(guarantee or self.settings.guarantee)
        if chosen is Guarantee.EXACTLY_ONCE and batch is None:  # batches refuse it anyway
            self._check_exactly_once(dedup)
        return Consumer(
            self, topic, group=group,
            guarantee=chosen,
            concurrency=concurrency or self.settings.concurrency,
            prefetch=prefetch, start=start,
            failure=failure or FailurePolicy(max_attempts=self.settings.max_attempts),
            dedup=dedup,
            batch=batch,
            options=options,
        )

    def _check_exactly_once(self, dedup: Deduplicator | None) -> None:
        """Exactly-once is the broker's transactions where it has them, else the store."""
        scheme = self.backend.url.scheme
        if self.capabilities.transactions and dedup is not None:
            raise ConfigurationError(
                f"exactly-once on {scheme}:// commits output and offsets in a broker "
                "transaction, which an idempotency store cannot join (its mark would outlive "
                "an aborted transaction and skip the redo): drop dedup= for exactly-once "
                "output, or use Guarantee.AT_LEAST_ONCE with dedup= for database effects"
            )
        if not self.capabilities.transactions and dedup is None:
            raise ConfigurationError(
                f"Guarantee.EXACTLY_ONCE on a {scheme}:// consumer means at-least-once "
                "delivery plus an idempotency store: pass "
                "dedup=msgkit.dedup.Dedup('sqlite:///dedup.db') (or a redis://, postgresql:// "
                "or memory:// store)"
            )

    def subscriber(
        self, topic: str, *, group: str | None = None, **consumer_options: Any
    ) -> Callable[[Handler], Handler]:
        """Decorator form: `@broker.subscriber("orders", group="payments")` registers the
        handler; `await broker.serve()` runs every registered one. Options as `consumer()`."""

        def register(handler: Handler) -> Handler:
            consumer = self.consumer(topic, group=group, **consumer_options)
            self._subscribers.append((consumer, handler))
            return handler

        return register

    def publishes(self, topic: str, payload: Any = None, *,
                  summary: str | None = None) -> Callable[[H], H]:
        """Declares that the service sends `payload` messages (a pydantic model or any type
        pydantic describes; None: bytes) to `topic`, for its contract (`msgkit asyncapi`).
        Called alone, the service sends them (e.g. through its outbox); used as a decorator
        on a handler, that handler does. Publishing needs no declaration."""
        self.validate_topic(topic)
        declared = Publication(topic, payload, summary)
        at = len(self._publications)  # only ever appended to: the place stays
        self._publications.append(declared)

        def by(handler: H) -> H:
            self._publications[at] = replace(declared, handler=handler)
            return handler

        return by

    @property
    def subscribers(self) -> tuple[tuple[Consumer, Handler], ...]:
        """The `@subscriber` registrations, in order: each consumer and its handler."""
        return tuple(self._subscribers)

    @property
    def publications(self) -> tuple[Publication, ...]:
        """What `publishes` declared, in order."""
        return tuple(self._publications)

    async def serve(self) -> None:
        """Start every `@subscriber` handler and run until a consumer stops or fails, the
        task is cancelled, or the process gets SIGTERM or SIGINT (as a container is told to
        stop, or Ctrl-C); then stop them gracefully (handlers running finish and are
        acknowledged; the `stop_timeout` setting bounds the wait) and close the broker. A
        consumer's failure is raised. `msgkit run` runs the same, with health checks
        (`msgkit.worker`)."""
        from msgkit.worker import Worker  # it runs brokers: imported when one is served

        worker = Worker(self)
        await worker.run()
        if worker.error is not None:
            raise worker.error

    def __repr__(self) -> str:
        return f"<msgkit.Broker {self.url}>"


def _guarantee(value: Guarantee | str) -> Guarantee:
    try:
        guarantee = Guarantee(value)
    except ValueError:
        choices = ", ".join(g.value for g in Guarantee)
        raise ConfigurationError(f"unknown guarantee {value!r}; use one of {choices}") from None
    return guarantee
