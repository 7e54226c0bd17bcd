"""`KafkaBackend`: one msgkit connection to a Kafka cluster (see the package docstring)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from msgkit.backend import Backend, Capabilities, Publisher, Subscription, SubscriptionSpec
from msgkit.errors import (
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    NotFoundError,
)
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import Message
from msgkit.url import URL
from msgkit_kafka import asyncapi
from msgkit_kafka.config import TANSU_CLUSTER_PREFIX, ClientConfigs, Settings, native_only, split_options
from msgkit_kafka.lag import group_lag
from msgkit_kafka.poller import BATCH
from msgkit_kafka.publisher import KafkaPublisher, NativeProducer, producer_config
from msgkit_kafka.refusals import refusal
from msgkit_kafka.subscription import KafkaSubscription
from msgkit_kafka.topics import Topics, retry_topic, validate_name
from msgkit_kafka.transaction import (
    JoinedPublisher,
    TransactionalProducer,
    TransactionalPublisher,
    transactional_config,
)

log = get_logger("msgkit.kafka")

_PRODUCER_DEFAULTS = {"partitioner": "murmur2_random"}  # same key -> partition as Java clients
RETRY_PRODUCER = {"linger.ms": 0}
LINGER = frozenset({"linger.ms", "queue.buffering.max.ms"})
_CONNECT_PROBE = 1.0
"""Seconds of each metadata attempt in `connect`: how soon a refusal is seen."""
"""For copies awaited one at a time (retry copies, dead letters): librdkafka's default 5 ms
linger would cap one worker at ~200 of them per second."""
CONSUMER_DEFAULTS = {"fetch.queue.backoff.ms": 20}
"""librdkafka stops fetching a partition whose local queue is over its thresholds and
looks again only after fetch.queue.backoff.ms (1 s by default): a consumer slower than the
broker drained the queue and then waited out the rest of that second (on Tansu, 128k msg/s
with the default, 236k with 20 ms). msgkit bounds memory with its own buffer and pauses."""


class KafkaBackend(Backend):
    system = "kafka"
    first_fetch_grace = 3.0
    """A new member's first records came 1.0 s after its join here (librdkafka's
    fetch.wait.max.ms is 500 ms)."""
    single_send_options = MappingProxyType(RETRY_PRODUCER)
    capabilities = Capabilities(
        persistent=True,
        ordered_per_key=True,
        consumer_groups=True,
        redelivers_unacked=True,
        replay_from_start=True,
        delayed_redelivery=True,
        repeated_headers=True,
        transactions=True,
    )

    def __init__(self, url: URL, options: Mapping[str, Any]) -> None:
        super().__init__(url, options)
        self.settings: Settings
        self.configs: ClientConfigs
        self.settings, self.configs = split_options(url, self.options)
        self._admin: AdminClient | None = None
        self._topics: Topics | None = None
        self._natives: dict[tuple[Guarantee, tuple[tuple[str, str], ...]], NativeProducer] = {}
        self._subscriptions: set[KafkaSubscription] = set()
        self._retry_publisher: KafkaPublisher | None = None
        self._transactional_ids: set[str] = set()
        self._tansu = False
        self._closed = False

    async def connect(self) -> None:
        """Reads metadata until the broker answers or `connect_timeout` passes; a refused
        login or TLS handshake fails at once (librdkafka reports it to `error_cb`)."""
        conf = self.configs.for_kind("admin")
        refused: list[KafkaError] = []
        conf["error_cb"] = _also(refused.append, conf.get("error_cb"))
        timeout = self.settings.connect_timeout
        try:
            admin = AdminClient(conf)
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka settings: {exc}") from exc
        assumed = self.configs.assumed
        if assumed:
            log.info("Kafka credentials in the URL: connecting with %s", ", ".join(assumed))
        hint = (f"; the URL has credentials, so msgkit used {' and '.join(assumed)}: "
                "give security.protocol (e.g. ?security.protocol=SASL_PLAINTEXT for a "
                "broker without TLS) and sasl.mechanism (e.g. SCRAM-SHA-512) if the "
                "broker differs") if assumed else ""
        deadline = time.monotonic() + timeout
        while True:
            try:
                md = await asyncio.to_thread(
                    admin.list_topics, timeout=min(_CONNECT_PROBE, max(deadline - time.monotonic(), 0.1)))
                break
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                reason = err.str() if isinstance(err, KafkaError) else str(exc)
            admin.poll(0)  # serves error_cb
            seen = [*refused, err] if isinstance(err, KafkaError) else refused
            for error in seen:
                found = refusal(error, conf, f"Kafka at {self.url.redacted}", hint)
                if found is not None:
                    raise found from None
            if time.monotonic() >= deadline:
                raise BrokerUnavailableError(
                    f"cannot reach Kafka at {self.url.redacted} within {timeout}s: {reason} "
                    f"(option connect_timeout sets the wait){hint}"
                ) from None
        self._admin = admin
        self._topics = Topics(admin, self.settings)
        quirks = self.settings.tansu_workarounds
        self._tansu = quirks in ("true", "1", "yes", "on") or (
            quirks == "auto" and str(md.cluster_id or "").startswith(TANSU_CLUSTER_PREFIX)
        )
        log.debug("connected to Kafka cluster %s (%d brokers)", md.cluster_id, len(md.brokers))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.close()
        natives, self._natives = list(self._natives.values()), {}
        for native in natives:
            await native.close(self.settings.close_timeout)

    def validate_topic(self, topic: str) -> None:
        validate_name(topic)

    @property
    def asyncapi_protocol(self) -> str:
        return asyncapi.protocol(self.configs)

    def asyncapi_bindings(self, part: str, topic: str, group: str | None = None
                          ) -> dict[str, Any]:
        return asyncapi.bindings(self.settings, part, topic, group)

    def lone_send_options(self, options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        # librdkafka holds a message back linger.ms (5 ms) hoping for more: an awaited
        # `send` would wait that long each time. Unless the user chose a linger.
        if LINGER.intersection(self.configs.for_kind("producer", options)):
            return None
        return {**options, **RETRY_PRODUCER}

    async def publisher(
        self,
        guarantee: Guarantee,
        *,
        required_groups: Sequence[str] = (),
        options: Mapping[str, Any],
    ) -> Publisher:
        # Kafka keeps every message for its retention whether or not a group exists yet,
        # so `required_groups` needs nothing beyond the topic itself (created on publish).
        settings = self.settings.merged(options)
        if guarantee is Guarantee.EXACTLY_ONCE:
            txn = self._transactional("producer", options, settings)
            await _started(txn)
            return TransactionalPublisher(txn)
        return KafkaPublisher(self._native(guarantee, options), self._require_topics(),
                              settings.close_timeout,
                              renew=lambda: self._native(guarantee, options))

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        topics = self._require_topics()
        settings = self.settings.merged(spec.options)
        retry = retry_topic(spec.topic, spec.group) if spec.group is not None else None
        if spec.existing_only:
            if not await topics.exists(spec.topic):
                raise NotFoundError(f"Kafka topic {spec.topic!r} does not exist")
            retry = None  # a reader that creates nothing redelivers nothing
        else:
            await topics.ensure([spec.topic] + ([retry] if retry else []))
        conf = {**CONSUMER_DEFAULTS, **self.configs.for_kind("consumer", spec.options)}
        conf["group.id"] = spec.group or f"msgkit-private-{uuid.uuid4().hex}"
        conf["enable.auto.commit"] = False
        conf["enable.auto.offset.store"] = False
        conf.setdefault("auto.offset.reset", "earliest")  # retry topics: never skip a copy
        if spec.until_end:  # librdkafka says when a partition is read to its end
            conf["enable.partition.eof"] = True
        limit = settings.buffer_messages or max(4 * spec.prefetch, 2 * BATCH)
        txn: TransactionalProducer | None = None
        retry_publisher: Publisher | None = self._retry() if retry else None
        if spec.guarantee is Guarantee.EXACTLY_ONCE:
            if spec.group is None:
                raise ConfigurationError(
                    "exactly-once on Kafka commits the consumed offsets in a transaction, "
                    "which needs a consumer group: pass group= to the consumer"
                )
            conf.setdefault("isolation.level", "read_committed")
            txn = self._transactional(spec.group, {}, settings)
            await _started(txn)
            retry_publisher = JoinedPublisher(txn, topics)
        try:
            sub = KafkaSubscription(
                spec, conf, retry_topic=retry,
                retry_publisher=retry_publisher, limit=max(limit, 2),
                max_bytes=settings.buffer_bytes,
                timeout=settings.connect_timeout, close_timeout=settings.close_timeout,
                tansu=self._admin if self._tansu else None, transaction=txn,
            )
        except KafkaException as exc:
            if txn is not None:
                await txn.close()
            raise ConfigurationError(f"invalid Kafka consumer settings: {exc}") from exc
        self._subscriptions.add(sub)
        sub.on_close = self._subscriptions.discard
        await sub.start(settings.join_timeout)
        return sub

    def _retry(self) -> KafkaPublisher:
        if self._retry_publisher is None:
            self._retry_publisher = KafkaPublisher(
                self._native(Guarantee.AT_LEAST_ONCE, RETRY_PRODUCER), self._require_topics(),
                self.settings.close_timeout,
            )
        return self._retry_publisher

    def _transactional(self, name: str, options: Mapping[str, Any],
                       settings: Settings) -> TransactionalProducer:
        """A transactional producer of its own (a transactional.id is one producer's)."""
        if self._closed:
            raise ClosedError("this Kafka backend is closed")
        conf = {**_PRODUCER_DEFAULTS, **self.configs.for_kind("producer", native_only(options))}
        fixed = settings.transactional_id
        if fixed and fixed in self._transactional_ids:
            raise ConfigurationError(
                f"transactional_id {fixed!r} is in use by another exactly-once consumer or "
                "producer of this connection: give each its own (pass it to broker.consumer() "
                "or broker.producer(), not to connect())"
            )
        producer = TransactionalProducer(
            transactional_config(conf, name, fixed), self._require_topics(),
            settings.connect_timeout, settings.close_timeout,
        )
        if fixed:
            self._transactional_ids.add(fixed)
            producer.on_close = lambda: self._transactional_ids.discard(fixed)
        return producer

    def _native(self, guarantee: Guarantee, options: Mapping[str, Any]) -> NativeProducer:
        if self._closed:
            raise ClosedError("this Kafka backend is closed")
        extra = native_only(options)
        key = (guarantee, tuple(sorted((k, repr(v)) for k, v in extra.items())))
        native = self._natives.get(key)
        if native is not None and native.fatal:  # e.g. an idempotent producer out of sequence
            log.warning("replacing a Kafka producer that failed for good")
            asyncio.get_running_loop().create_task(native.close(0))
            native = None
        if native is None:
            conf = {**_PRODUCER_DEFAULTS, **self.configs.for_kind("producer", extra)}
            native = self._natives[key] = NativeProducer(guarantee, producer_config(guarantee, conf))
        return native

    async def lag(self, topic: str, group: str) -> dict[str, int]:
        topics = self._require_topics()
        return await asyncio.to_thread(group_lag, self.configs.for_kind("consumer"), topics,
                                       topic, group, self.settings.connect_timeout)

    def span_attributes(self, message: Message) -> Mapping[str, Any]:
        record = message.native
        attributes: dict[str, Any] = {
            "messaging.destination.partition.id": str(record.partition()),
            "messaging.kafka.offset": record.offset(),
        }
        if isinstance(message.key, str):
            attributes["messaging.kafka.message.key"] = message.key
        return attributes

    def _require_topics(self) -> Topics:
        if self._topics is None:
            raise ClosedError("the Kafka backend is not connected; use `async with msgkit.connect(...)`")
        return self._topics

    @property
    def native(self) -> AdminClient | None:
        """The `AdminClient` (topics, groups, configs) once connected."""
        return self._admin


async def _started(txn: TransactionalProducer) -> None:
    """Starts `txn`, releasing its transactional id if it cannot start."""
    try:
        await txn.start()
    except BaseException:
        await txn.close()
        raise


def _also(first: Callable[[KafkaError], None],
          then: Callable[[KafkaError], None] | None) -> Callable[[KafkaError], None]:
    """An `error_cb` calling `first`, then the user's own one."""
    if then is None:
        return first

    def both(err: KafkaError) -> None:
        first(err)
        then(err)

    return both
