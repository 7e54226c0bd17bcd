"""The message model: `Message` is what handlers receive, `Outgoing` what backends publish."""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias, TypeVar

from multidict import MultiDict, MultiMapping
from pydantic import TypeAdapter, ValidationError

from msgkit import headers as h
from msgkit.errors import DecodeError

T = TypeVar("T")

Key: TypeAlias = str | bytes
"""A message key: text, or bytes when it is not UTF-8 text (or sent as bytes to memory://)."""
HeaderValue: TypeAlias = (
    str | bytes | bool | int | float | Decimal | datetime | list[Any] | dict[str, Any] | None
)
"""A header value. msgkit sends `str`, `bytes` and `None`; the other types arrive only in
RabbitMQ headers from other clients (AMQP's typed field values) and travel on unchanged."""
Headers: TypeAlias = MultiMapping[HeaderValue]
"""A message's headers, in order. A name may repeat (Kafka allows it): `headers[name]` and
`get` give its first value, `getall(name)` all of them."""
Properties: TypeAlias = Mapping[str, Any]
"""Broker message properties outside the headers, as the client reads them (RabbitMQ:
`correlation_id`, `reply_to`, `type`, `app_id`, `content_type`, `content_encoding`,
`priority`; none on Kafka). Carried unchanged to retry copies, dead letters
and replays."""


class _NoProperties(Mapping[str, Any]):
    """The properties of a message without any: empty, immutable, one shared instance that
    copies and pickles keep (a `MappingProxyType` cannot be pickled)."""

    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"

    def __reduce__(self) -> str:
        return "NO_PROPERTIES"  # pickled by name: the module's instance


NO_PROPERTIES: Properties = _NoProperties()

_adapters: dict[Any, TypeAdapter[Any]] = {}
_new = object.__new__


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(model)
    return adapter


class Outgoing(NamedTuple):
    """One message on its way to the broker, already encoded (a tuple: cheap to make).

    `headers` holds the user's headers plus msgkit's own (`msgkit-id`, ...): a mapping, or
    a `Headers` multi-mapping when a name repeats. `timestamp` 0 means none.
    """

    topic: str
    value: bytes
    key: Key | None
    headers: Mapping[str, HeaderValue]
    id: str
    timestamp: float
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """A received message. Immutable; `value` is the raw payload.

    `attempt` is 1 on first delivery and grows with each redelivery. `timestamp` is the
    producer's send time in seconds since the epoch (0 when the producer set none).
    `native` is the broker client's own message object (Kafka `Message`, aio-pika
    `IncomingMessage`), for what msgkit does not cover.

    `key` and header values are what the producer gave, byte for byte: text (`str`) when
    they are UTF-8, else `bytes` (Kafka carries only bytes, so a `bytes` value that is valid
    UTF-8 arrives as `str`; `key_bytes` gives the bytes either way). `properties` are the
    broker's own message properties (RabbitMQ's `reply_to`, `correlation_id`, ...).
    """

    topic: str
    value: bytes
    key: Key | None = None
    headers: Headers = field(default_factory=MultiDict)
    id: str = ""
    idempotency_key: str | None = None
    attempt: int = 1
    timestamp: float = 0.0
    properties: Properties = field(default_factory=lambda: NO_PROPERTIES)
    native: Any = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        topic: str,
        value: bytes,
        key: Key | None = None,
        headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] | None = None,
        id: str = "",
        idempotency_key: str | None = None,
        attempt: int = 1,
        timestamp: float = 0.0,
        properties: Properties = NO_PROPERTIES,
        native: Any = None,
    ) -> None:
        # Written by hand: the generated frozen __init__ calls object.__setattr__ per field,
        # which made building a message cost as much as the rest of receiving it.
        s = _SETTERS
        s[0](self, topic)
        s[1](self, value)
        s[2](self, key)
        s[3](self, headers if type(headers) is MultiDict else MultiDict(headers or ()))
        s[4](self, id)
        s[5](self, idempotency_key)
        s[6](self, attempt)
        s[7](self, timestamp)
        s[8](self, properties)
        s[9](self, native)

    @classmethod
    def from_wire(
        cls,
        topic: str,
        value: bytes,
        key: Key | None,
        headers: Headers,
        *,
        timestamp: float,
        fallback_id: str,
        attempt: int | None = None,
        properties: Properties = NO_PROPERTIES,
        native: Any = None,
    ) -> Message:
        """Build a message from what a backend received; msgkit headers fill in the fields."""
        if attempt is None:
            attempt = attempt_of(headers.get(h.ATTEMPT))
        get = headers.get
        ik = get(h.IDEMPOTENCY_KEY)
        mid = get(h.MESSAGE_ID)
        # This runs for every received message: filled in directly, as __init__ does, but
        # without the cost of calling the class.
        msg = _new(cls)
        s = _SETTERS
        s[0](msg, topic)
        s[1](msg, value)
        s[2](msg, key)
        s[3](msg, headers)
        s[4](msg, mid if type(mid) is str and mid else text_of(mid) or fallback_id)
        s[5](msg, ik if ik is None or type(ik) is str else text_of(ik))
        s[6](msg, attempt)
        s[7](msg, timestamp)
        s[8](msg, properties)
        s[9](msg, native)
        return msg

    @property
    def content_type(self) -> str | None:
        """The `content-type` header msgkit sets, else the broker's content-type property."""
        return text_of(self.headers.get(h.CONTENT_TYPE)) or self.properties.get("content_type")

    def header(self, name: str) -> str | None:
        """The header's (first) value as text; None when it is missing, null or not text."""
        return text_of(self.headers.get(name))

    @property
    def key_bytes(self) -> bytes | None:
        """The key as the broker stores it (UTF-8 for a text key)."""
        key = self.key
        return key.encode() if isinstance(key, str) else key

    def text(self) -> str:
        """The payload as UTF-8 text; raises `DecodeError` if it is not."""
        try:
            return self.value.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"message {self.id} on {self.topic!r} is not UTF-8 text: {exc}") from exc

    def json(self) -> Any:
        """The payload parsed as JSON; raises `DecodeError` if it is not JSON."""
        try:
            return _json.loads(self.value)
        except ValueError as exc:
            raise DecodeError(f"message {self.id} on {self.topic!r} is not valid JSON: {exc}") from exc

    def decode(self, model: type[T]) -> T:
        """The payload validated into `model` (a pydantic model, dataclass, TypedDict, ...).

        Raises `DecodeError` (non-retryable) when the payload does not fit.
        """
        if model is bytes:
            return self.value  # type: ignore[return-value]
        if model is str:
            return self.text()  # type: ignore[return-value]
        try:
            return _adapter(model).validate_json(self.value)  # type: ignore[no-any-return]
        except ValidationError as exc:
            name = getattr(model, "__name__", repr(model))
            raise DecodeError(
                f"message {self.id} on {self.topic!r} does not decode into {name}: {exc}"
            ) from exc


def attempt_of(header: object) -> int:
    """The delivery attempt a `msgkit-attempt` header value says (1 if missing or not a
    plain number: a foreign producer's header must not break receiving)."""
    if type(header) is not str:
        header = text_of(header)
    return int(header) if header is not None and header.isascii() and header.isdigit() else 1


def text_of(value: object) -> str | None:
    """A header value as text: a str as it is, UTF-8 bytes decoded, anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return None


def text_or_bytes(raw: bytes) -> str | bytes:
    """Bytes off the wire as a key or header value: text when they are UTF-8, else the bytes
    themselves (never decoded with replacement: what was sent is what is passed on)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def merged(headers: Headers, updates: Mapping[str, HeaderValue],
           drop: Iterable[str] = (), drop_prefix: str | None = None) -> MultiDict[HeaderValue]:
    """`headers` in order without the names in `updates` and `drop` (nor, given a
    `drop_prefix`, names starting with it), then `updates`: repeated and null values of
    everything else are kept as they were."""
    skip = set(updates).union(drop)
    out: MultiDict[HeaderValue] = MultiDict()
    add = out.add
    for name, value in headers.items():
        if name not in skip and not (drop_prefix and name.startswith(drop_prefix)):
            add(name, value)
    out.extend(updates)
    return out


# The slots' own setters (a frozen class refuses ordinary assignment), in field order.
_SETTERS = tuple(Message.__dict__[f.name].__set__ for f in fields(Message))
