"""The backend contract: what an adapter implements so that msgkit runs on its broker.

A backend is found by URL scheme through the `msgkit.backends` entry-point group
(`kafka = "msgkit_kafka:KafkaBackend"`), so a third party ships one without touching msgkit.
It moves encoded messages and nothing else: concurrency, per-key ordering, guarantees,
deduplication, retries and dead-lettering live in the core and reach the broker only
through the four classes below.

    Backend            one connection to a broker; makes publishers and subscriptions
      Publisher        publish(batch): returns when the guarantee it was made for is met
      Subscription     fetch(n): up to n deliveries of (topic, group); close(): give back the rest
        Delivery       ack(), or redeliver(delay, headers): bring it back to the same group later

Rules every backend keeps (the conformance suite in `msgkit.testing.conformance` checks them):
- Groups: subscriptions with the same group compete for messages; each group gets every
  message published to the topic while the group exists (and, with `replay_from_start`,
  what is still retained from before). `group=None` is a private group of one subscriber.
- A delivery that is neither acked nor redelivered when its subscription closes, or when its
  consumer dies, comes back to another member of the group (`redelivers_unacked`).
- `fetch` never hands out more than `prefetch` unacknowledged deliveries, and is
  cancellation-safe: a cancelled fetch takes no message.
- `redeliver` is at-least-once: the message is durable for its next attempt before the
  current delivery is released. The new delivery carries `attempt + 1` and the given headers.
- Fidelity: keys, values, header values and properties reach the handler, copies and dead
  letters as the producer gave them, byte for byte (`bytes` where they are not UTF-8 text;
  never decoded with replacement).
- Nothing blocks the event loop: blocking client calls go to a thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from msgkit.guarantee import Guarantee
from msgkit.message import Headers, Message, Outgoing
from msgkit.url import URL

StartFrom = Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend really offers. The conformance suite runs the tests each flag allows."""

    persistent: bool = False
    """Messages survive a restart of the broker."""
    ordered_per_key: bool = False
    """Messages with one key reach a group in publish order (otherwise the core still
    serialises one key inside a single consumer, but not across competing consumers)."""
    consumer_groups: bool = True
    """Named groups compete inside and fan out across."""
    redelivers_unacked: bool = True
    """Unacknowledged deliveries of a closed or dead subscription come back to the group."""
    replay_from_start: bool = False
    """A new group with start="earliest" receives messages published before it existed."""
    delayed_redelivery: bool = True
    """`redeliver(delay=...)` waits without blocking the messages behind it."""
    repeated_headers: bool = False
    """A header name may occur more than once on one message (Kafka); elsewhere sending one
    twice is refused with `SerializationError`."""
    transactions: bool = False
    """Publishes and consumed offsets commit atomically (exactly-once on the broker): an
    EXACTLY_ONCE subscription offers `transactional_publisher()`, and an EXACTLY_ONCE
    publisher makes each `publish` call one transaction."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What the core asks for when a consumer starts."""

    topic: str
    group: str | None
    prefetch: int
    """The most unacknowledged deliveries this subscription may hold."""
    start: StartFrom
    """Where a group with no stored position begins."""
    guarantee: Guarantee
    options: Mapping[str, Any] = field(default_factory=dict)
    """Backend-native settings, passed through untouched."""
    existing_only: bool = False
    """Create nothing (topic, queue, retry topic): join only if the topic and the group's
    queue already exist, else raise `NotFoundError` (read-only tools such as `msgkit dlq`)."""
    until_end: bool = False
    """Read what is stored, then end: once every message stored when the subscription
    joined was handed out, `fetch` returns no deliveries (until more arrive). A backend that
    cannot tell ignores it; readers then end after a quiet wait."""


class Delivery(ABC):
    """One message handed to one subscription. Exactly one of `ack`/`redeliver` settles it."""

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        self.message = message

    @abstractmethod
    async def ack(self) -> None:
        """The message is done for this group; it will not come back."""

    def ack_nowait(self) -> bool:
        """`ack` without awaiting, for a backend whose ack needs no waiting (it only
        records the settlement, or queues it): True if it acked. Optional: by default
        False, and the core awaits `ack()` instead. It saves a coroutine per message."""
        return False

    @abstractmethod
    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None:
        """Bring the message back to this group after `delay` seconds, with `attempt + 1`.

        `headers` replaces the message's headers on the new copy (the core has already
        merged them); the copy keeps the message's key, value, properties and every header
        byte for byte, repeated and null ones included. The copy must be stored by the
        broker before this delivery is released; if storing fails, raise and leave this
        delivery unacknowledged.
        """

    @property
    def native(self) -> Any:
        """The broker client's own message, if any."""
        return self.message.native

    @property
    def stale(self) -> bool:
        """True once the broker hands this message out again whatever this delivery does
        (its partition went to another consumer, its transaction was aborted): the core then
        stops trying to settle it and publishes nothing more for it. Optional."""
        return False

    @property
    def origin(self) -> Mapping[str, str]:
        """Where the broker kept this message, for dead-letter headers (e.g. Kafka
        `partition`/`offset`, RabbitMQ `exchange`/`routing-key`). Optional."""
        return {}


class Subscription(ABC):
    """Deliveries of one (topic, group) for one consumer."""

    @abstractmethod
    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Wait for at least one delivery and return up to `max_messages`.

        Returns an empty sequence once the subscription is closed. Raises
        `ConsumerLostError` when the broker dropped this consumer for good.
        """

    @abstractmethod
    async def close(self) -> None:
        """Stop fetching; unsettled deliveries go back to the group; leave the group."""

    def transactional_publisher(self) -> Publisher | None:
        """Under EXACTLY_ONCE on a backend with `transactions`: a publisher whose messages
        become visible only together with this subscription's acknowledgements (one broker
        transaction), used for what handlers send and for dead letters. None elsewhere."""
        return None

    @property
    def native(self) -> Any:
        """The broker client's consumer object (Kafka `Consumer`, aio-pika `Queue`), if any."""
        return None

    def describe(self) -> dict[str, Any]:
        """The effective client settings, for logs and `Consumer.describe()`."""
        return {}


class Publisher(ABC):
    """Publishes for one producer, with one guarantee."""

    @abstractmethod
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish all `messages`, pipelined, and return when the guarantee is met.

        AT_LEAST_ONCE: every message is confirmed by the broker, or `PublishError` is raised
        (carrying the broker's reason). EXACTLY_ONCE (backends with `transactions` only): the
        same, and the call is one transaction: all of `messages` become visible, or none.
        AT_MOST_ONCE: handed to the client; no confirmation awaited.
        """

    async def publish_to_group(self, group: str, messages: Sequence[Outgoing]) -> None:
        """Publish so that only `group` of each message's topic receives it (dead-letter
        replay), confirmed like `publish`. Optional: the default says it is not supported."""
        raise NotImplementedError(f"{type(self).__name__} cannot publish to a single group")

    @abstractmethod
    async def close(self) -> None:
        """Flush what is pending (bounded) and release the client."""

    @property
    def native(self) -> Any:
        """The broker client's producer object (Kafka `Producer`, aio-pika `Channel`), if any."""
        return None

    def describe(self) -> dict[str, Any]:
        """The effective client settings, for logs and `Producer.describe()`."""
        return {}


class Backend(ABC):
    """One connection to one broker, made from a URL and backend-native options."""

    system: str = "msgkit"
    """The broker's name in traces and metrics (OpenTelemetry's `messaging.system`)."""
    first_fetch_grace: float = 0.0
    """Seconds a new member's first fetch may take beyond a quiet queue's wait (dead-letter
    reads add it to their first wait, so a slow start-up is not taken for an empty queue)."""
    quiet_after: float | None = None
    """Seconds after which a fetch that brought nothing means the queue is empty (memory://
    delivers in-process: at once); None: readers wait their own `idle`."""
    capabilities: Capabilities = Capabilities()
    single_send_options: Mapping[str, Any] = MappingProxyType({})
    """Producer options for sends that are each awaited alone (dead letters): a client that
    holds sends back to batch them (Kafka's `linger.ms`) would make each one wait."""

    @property
    def asyncapi_protocol(self) -> str | None:
        """The AsyncAPI server protocol (`kafka`, `amqp`); None: no server to describe."""
        return None

    def asyncapi_bindings(self, part: str, topic: str, group: str | None = None
                          ) -> dict[str, Any]:
        """AsyncAPI 3.0 bindings on this broker of a `"channel"` (the topic), a `"receive"`
        operation (of `group`), a `"send"` operation or a `"message"`; none by default."""
        return {}

    def lone_send_options(self, options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Publisher options for `Producer.send` (each call awaited alone) where they should
        differ from the producer's own `options` (Kafka: no linger); None: the same."""
        return None

    def __init__(self, url: URL, options: Mapping[str, Any]) -> None:
        self.url = url
        self.options = dict(options)

    @abstractmethod
    async def connect(self) -> None:
        """Reach the broker, or raise `BrokerUnavailableError` after a bounded wait."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection this backend opened."""

    @abstractmethod
    def validate_topic(self, topic: str) -> None:
        """Raise `InvalidTopicError` (saying what to change) for a name the broker would reject.

        Called before any network call; group names go through it too.
        """

    @abstractmethod
    async def publisher(
        self,
        guarantee: Guarantee,
        *,
        required_groups: Sequence[str] = (),
        options: Mapping[str, Any],
    ) -> Publisher:
        """A publisher for `guarantee`. `required_groups` must exist (and so keep messages)
        for every topic it publishes to, even before any of their consumers started."""

    @abstractmethod
    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join the group and return once deliveries can flow (assignment done, queue bound)."""

    @property
    def connected(self) -> bool:
        """False while the backend knows it lost the broker (reconnecting): the worker's
        `/readyz` says not ready. Backends whose client reconnects silently say True."""
        return True

    async def lag(self, topic: str, group: str) -> dict[str, int]:
        """Messages of `topic` waiting for `group`, per partition or queue (an operator's
        view: the broker's own numbers, not this process's); empty when the broker knows no
        such topic or group. Optional: the default says the backend cannot tell."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell a group's lag")

    def span_attributes(self, message: Message) -> Mapping[str, Any]:
        """The broker's own attributes of a received message for a trace (OpenTelemetry's
        names: Kafka's partition, offset and key, RabbitMQ's routing key)."""
        return {}

    @property
    def native(self) -> Any:
        """The broker client's connection object, if any."""
        return None
