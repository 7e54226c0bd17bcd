"""`amqp://user:pass@host:5672/vhost` and `amqps://...`: msgkit on RabbitMQ, through aio-pika.

Topology (what the management UI shows):
- a topic is a durable exchange named after it (type `topic`; `exchange_type=fanout` works too);
- a group is a durable queue `<topic>.<group>` bound to it with routing key `#`: consumers
  of one group compete for its messages, each group gets its own copy. Group queues are
  quorum queues (`queue_type=classic` for classic ones);
- a consumer without a group gets an exclusive, auto-delete queue `<topic>@<random>`;
- the message key is the routing key;
- `redeliver(delay)` goes through `<topic>.<group>.retry.<ms>` (TTL, dead-lettered back).

Unroutable messages do not vanish: at-least-once publishing is `mandatory`, and a message
no queue is bound to raises `PublishError(reason="NO_ROUTE")`; a producer's
`required_groups` are declared (queue + binding) before its first message to a topic, so
they keep every message even before their consumers start (dead-letter topics use this).

Per-key order within a group: `ordered_per_key=true` declares group queues with
`x-single-active-consumer`: one consumer of the group receives at a time (the others wait
as hot standbys), so messages of one key are handled in publish order. It costs the
parallelism across consumers of that group; `concurrency` inside the one active consumer
still runs different keys at once.

Options (URL query or `msgkit.connect(url, **options)`): `queue_type`, `ordered_per_key`,
`exchange_type`, `exchange_arguments`, `queue_arguments`, `connect_timeout`,
`publish_timeout`, `publish_window`, `reconnect_interval`; anything else is passed to
aio-pika's `connect_robust` (`heartbeat`, `ssl_context`, `client_properties`, TLS files...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import aiormq.exceptions as amqp_errors
from aio_pika import RobustChannel, RobustConnection
from aio_pika.connection import make_url
from aio_pika.exchange import ExchangeType

from msgkit.backend import (
    Backend,
    Capabilities,
    Publisher,
    Subscription,
    SubscriptionSpec,
)
from msgkit.errors import (
    AuthorizationError,
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    MsgkitError,
    NotFoundError,
)
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import Message
from msgkit.url import URL, redact
from msgkit_rabbitmq import asyncapi, topology
from msgkit_rabbitmq import settings as opts
from msgkit_rabbitmq.nodes import NodesConnection
from msgkit_rabbitmq.publisher import RabbitMQPublisher, transient
from msgkit_rabbitmq.redeliver import Redeliverer
from msgkit_rabbitmq.refusals import PERMISSIONS_HINT, access_refused, refusal
from msgkit_rabbitmq.subscription import RabbitMQSubscription

log = get_logger("msgkit.rabbitmq")


class RabbitMQBackend(Backend):
    system = "rabbitmq"
    first_fetch_grace = 0.5
    """Deliveries start right after basic.consume; a little slack for a busy broker."""
    capabilities = Capabilities(
        persistent=True,
        ordered_per_key=False,
        consumer_groups=True,
        redelivers_unacked=True,
        replay_from_start=False,
        delayed_redelivery=True,
    )

    def __init__(self, url: URL, options: Mapping[str, Any]) -> None:
        super().__init__(url, options)
        self.settings, self._native_urls, self._connect_options = opts.parse(url, self.options)
        if self.settings.ordered_per_key:
            self.capabilities = replace(type(self).capabilities, ordered_per_key=True)
        self._connection: NodesConnection | None = None
        self._redeliverer: Redeliverer | None = None
        self._opening = asyncio.Lock()
        self._subscriptions: set[RabbitMQSubscription] = set()
        self._declaring: dict[str, asyncio.Lock] = {}
        self.server_major = 3
        self._client_cert = "certfile" in self.url.query or "ssl_context" in self._connect_options
        self.refused: MsgkitError | None = None
        """The broker refused a reconnection (login, vhost or TLS): final."""
        self._watching: asyncio.Task[None] | None = None

    @property
    def asyncapi_protocol(self) -> str:
        return self.url.scheme

    def asyncapi_bindings(self, part: str, topic: str, group: str | None = None
                          ) -> dict[str, Any]:
        return asyncapi.bindings(self.url.path or "/", part, topic, group)

    async def connect(self) -> None:
        """Connects to the first node that answers, trying each in turn (one URL may list
        several); a refused login fails at once."""
        timeout = self.settings.connect_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        nodes = self._native_urls
        failures: list[str] = []
        for first in range(len(nodes)):
            connection = self._connection_to(nodes[first:] + nodes[:first])
            left = max(deadline - loop.time(), 0.1)
            try:
                await asyncio.wait_for(connection.connect(timeout=left), left + 1)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                refused = refusal(exc, self.url.redacted, self._client_cert)
                if refused is not None:
                    raise refused from None
                failures.append(redact(str(exc)) or type(exc).__name__)
                continue
            self._connection = connection
            connection.close_callbacks.add(self._on_connection_lost)
            self.server_major = _major_version(connection)
            log.debug("connected to RabbitMQ %d.x at %s", self.server_major, connection.node)
            return
        raise BrokerUnavailableError(
            f"cannot reach RabbitMQ at {self.url.redacted} within {timeout}s: "
            f"{'; '.join(failures)}; is the server running and the URL (host, port, user, "
            "vhost) right?"
        )

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    async def lag(self, topic: str, group: str) -> dict[str, int]:
        """Ready messages of the group queue, none if it does not exist (AMQP tells no more:
        messages out with consumers are each process's in-flight count)."""
        name = topology.group_queue(topic, group)
        channel = await self._channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(name, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            return {}  # no such group queue
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 5)
        return {name: queue.declaration_result.message_count or 0}

    def span_attributes(self, message: Message) -> Mapping[str, Any]:
        routing_key = getattr(message.native, "routing_key", None)
        return {} if routing_key is None else {
            "messaging.rabbitmq.destination.routing_key": routing_key}

    def _on_connection_lost(self, connection: Any, exc: BaseException | None) -> None:
        current = self._connection
        if current is not None and connection is current and self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self._watch(current))

    async def _watch(self, connection: NodesConnection) -> None:
        """While the connection is down, a login of its own asks why: a refused login or TLS
        handshake (permissions or the user revoked, a certificate replaced) stops consumers
        and producers with that error, instead of aio-pika reconnecting forever."""
        try:
            while connection is self._connection and not connection.connected.is_set():
                await asyncio.sleep(self.settings.reconnect_interval)
                if connection.connected.is_set():
                    return
                probe = self._connection_to(self._native_urls)
                try:
                    await asyncio.wait_for(probe.connect(timeout=self.settings.connect_timeout),
                                           self.settings.connect_timeout + 1)
                except Exception as exc:
                    self.refused = refusal(exc, self.url.redacted, self._client_cert)
                    if self.refused is not None:
                        log.error("%s", self.refused)
                        for sub in list(self._subscriptions):
                            sub.lose(self.refused)
                        await connection.close()  # stops the reconnecting; publishes fail
                        return
                finally:
                    with contextlib.suppress(Exception):
                        await probe.close()
        finally:
            self._watching = None

    def _connection_to(self, urls: list[str]) -> NodesConnection:
        """A robust connection whose attempts go to `urls` in turn, first to `urls[0]`."""
        kwargs = dict(self._connect_options)
        ssl_context = kwargs.pop("ssl_context", None)
        client_properties = kwargs.pop("client_properties", None)
        ssl_options = kwargs.pop("ssl_options", None)
        native = [make_url(url, ssl_options=ssl_options, client_properties=client_properties,
                           **kwargs) for url in urls]
        return NodesConnection(native, self.url.redacted, ssl_context=ssl_context,
                               client_properties=client_properties, **kwargs)

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            sub.lose("the RabbitMQ backend was closed under this consumer")
        self._subscriptions.clear()
        connection, self._connection = self._connection, None
        self._redeliverer = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 10)

    def validate_topic(self, topic: str) -> None:
        topology.validate(topic)

    async def publisher(
        self,
        guarantee: Guarantee,
        *,
        required_groups: Sequence[str] = (),
        options: Mapping[str, Any],
    ) -> Publisher:
        opts.check_keys(options, opts.PRODUCER_OPTIONS, "producer")
        for group in required_groups:
            topology.validate(group)
        confirm = guarantee is not Guarantee.AT_MOST_ONCE
        channel = await self._channel(publisher_confirms=confirm)
        return RabbitMQPublisher(
            self, channel, confirm=confirm, required_groups=tuple(required_groups),
            timeout=opts.positive(options, "publish_timeout", self.settings.publish_timeout),
            window=int(opts.positive(options, "publish_window", self.settings.publish_window)),
            mandatory=opts.flag(options, "mandatory", True),
        )

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        opts.check_keys(spec.options, opts.CONSUMER_OPTIONS, "consumer")
        private = spec.group is None
        name = (topology.private_queue(spec.topic) if spec.group is None
                else topology.group_queue(spec.topic, spec.group))
        extra = spec.options.get("queue_arguments")
        args = topology.private_arguments(extra) if private else self.group_arguments(extra)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.connect_timeout
        while True:
            try:
                sub = await self._subscribe(spec, name, args, private)
            except amqp_errors.ChannelClosed as exc:
                if access_refused(exc):
                    raise AuthorizationError(
                        f"RabbitMQ refused user {self.url.username!r} the queue {name!r} of "
                        f"topic {spec.topic!r}: {exc}; {PERMISSIONS_HINT}") from exc
                raise ConfigurationError(
                    f"RabbitMQ refused to set up queue {name!r} on exchange {spec.topic!r}: "
                    f"{exc}; an exchange or queue of that name exists with other settings "
                    "(e.g. another queue_type or ordered_per_key): delete it or match them"
                ) from exc
            except BaseException as exc:
                if not transient(exc):
                    raise
                if loop.time() > deadline:
                    raise BrokerUnavailableError(
                        f"RabbitMQ at {self.url.redacted} was unavailable while subscribing "
                        f"for {self.settings.connect_timeout}s: {exc!r}"
                    ) from None
                log.info("subscribing to %r failed (%r); trying again", spec.topic, exc)
                await asyncio.sleep(0.2)
                continue
            self._subscriptions.add(sub)
            return sub

    async def _subscribe(
        self, spec: SubscriptionSpec, name: str, args: dict[str, Any], private: bool
    ) -> RabbitMQSubscription:
        """Channel, prefetch, exchange, queue, binding, consumer: in that order, or nothing."""
        channel = await self._channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=spec.prefetch)
            if spec.existing_only:
                return await self._join_existing(spec, name, channel)
            exchange = await channel.declare_exchange(
                spec.topic, ExchangeType(self.settings.exchange_type), durable=True,
                arguments=topology.exchange_arguments(self.settings),
            )
            topology.note("exchange", spec.topic)
            async with self.declaring(name):
                queue = await channel.declare_queue(
                    name, durable=not private, exclusive=private, auto_delete=private,
                    arguments=args,
                )
            if not private:
                topology.note("queue", name)
            await queue.bind(exchange, "#")
            sub = RabbitMQSubscription(
                self, spec.topic, name, private=private, channel=channel,
                prefetch=spec.prefetch, ack_now=spec.guarantee is Guarantee.AT_MOST_ONCE,
                describe={
                    "url": self.url.redacted, "exchange": spec.topic, "queue": name,
                    "queue_arguments": args, "private": private,
                    "single_active_consumer": bool(args.get("x-single-active-consumer")),
                },
            )
            await sub.start(queue, spec.options.get("consumer_arguments"))
            return sub
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 5)
            raise

    async def _join_existing(
        self, spec: SubscriptionSpec, name: str, channel: RobustChannel
    ) -> RabbitMQSubscription:
        """Consume from queue `name` only if it exists (a passive declare creates nothing).

        An empty queue is consumed only after `_READY_WAIT` seconds (or once a message is
        in it): a passive declare answers as soon as a new quorum queue is recorded, and
        consuming it before its replicas started crashed the whole connection on RabbitMQ
        3.10 (`noproc`, INTERNAL_ERROR). A message in it proves they run."""
        deadline = asyncio.get_running_loop().time() + _READY_WAIT
        while True:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except amqp_errors.ChannelNotFoundEntity:
                raise NotFoundError(f"RabbitMQ has no queue {name!r}") from None
            if queue.declaration_result.message_count or \
                    asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        sub = RabbitMQSubscription(
            self, spec.topic, name, private=False, channel=channel, prefetch=spec.prefetch,
            ack_now=spec.guarantee is Guarantee.AT_MOST_ONCE,
            describe={"url": self.url.redacted, "exchange": spec.topic, "queue": name},
        )
        await sub.start(queue, spec.options.get("consumer_arguments"))
        return sub

    def group_arguments(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return topology.group_arguments(self.settings, self.server_major, extra)

    async def redeliverer(self) -> Redeliverer:
        if self._redeliverer is None:
            async with self._opening:
                if self._redeliverer is None:
                    channel = await self._channel(publisher_confirms=True)
                    self._redeliverer = Redeliverer(self, channel)
        return self._redeliverer

    @contextlib.asynccontextmanager
    async def declaring(self, queue: str) -> AsyncIterator[None]:
        """One declaration of `queue` at a time in this process. RabbitMQ 3.10 answers a
        second, concurrent declare of a new quorum queue before the queue process runs; a
        consume then crashes the channel and the broker closes the whole connection."""
        lock = self._declaring.get(queue)
        if lock is None:
            lock = self._declaring[queue] = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._declaring.get(queue) is lock:
                del self._declaring[queue]

    def forget(self, sub: RabbitMQSubscription) -> None:
        self._subscriptions.discard(sub)

    async def confirm_channel(self) -> RobustChannel:
        """A new channel in publisher-confirm mode, once the connection is up."""
        return await self._channel(publisher_confirms=True)

    async def _channel(self, *, publisher_confirms: bool) -> RobustChannel:
        connection = self._connection
        if connection is None:
            raise ClosedError("the RabbitMQ backend is not connected (or already closed)")
        timeout = self.settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await connection.ready()
                    channel = cast(RobustChannel, connection.channel(
                        publisher_confirms=publisher_confirms,
                        on_return_raises=publisher_confirms,
                    ))
                    try:
                        await channel
                        return channel
                    except BaseException as exc:
                        if not transient(exc):
                            raise
                        await asyncio.sleep(0.1)  # the connection dropped meanwhile
        except TimeoutError:
            raise BrokerUnavailableError(
                f"RabbitMQ at {self.url.redacted} did not open a channel within {timeout}s"
            ) from None

    @property
    def native(self) -> RobustConnection | None:
        return self._connection


def _major_version(connection: RobustConnection) -> int:
    try:
        version = connection.transport.connection.server_properties["version"]  # type: ignore[union-attr]
        text = version.decode() if isinstance(version, bytes) else str(version)
        return int(text.split(".")[0])
    except Exception:
        return 3


_READY_WAIT = 1.0
