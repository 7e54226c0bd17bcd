"""The message model: `Message` is what handlers receive, `Outgoing` what backends publish."""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, TypeVar

from pydantic import TypeAdapter, ValidationError

from msgkit import headers as h
from msgkit.errors import DecodeError

T = TypeVar("T")

_adapters: dict[Any, TypeAdapter[Any]] = {}
_new = object.__new__


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(model)
    return adapter


class Outgoing(NamedTuple):
    """One message on its way to the broker, already encoded (a tuple: cheap to make).

    `headers` holds the user's headers plus msgkit's own (`msgkit-id`, ...).
    """

    topic: str
    value: bytes
    key: str | None
    headers: Mapping[str, str]
    id: str
    timestamp: float


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """A received message. Immutable; `value` is the raw payload.

    `attempt` is 1 on first delivery and grows with each redelivery. `timestamp` is the
    producer's send time in seconds since the epoch. `native` is the broker client's own
    message object (Kafka `Message`, aio-pika `IncomingMessage`), for what msgkit does not cover.
    """

    topic: str
    value: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = ""
    idempotency_key: str | None = None
    attempt: int = 1
    timestamp: float = 0.0
    native: Any = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        topic: str,
        value: bytes,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str = "",
        idempotency_key: str | None = None,
        attempt: int = 1,
        timestamp: float = 0.0,
        native: Any = None,
    ) -> None:
        # Written by hand: the generated frozen __init__ calls object.__setattr__ per field,
        # which made building a message cost as much as the rest of receiving it.
        s = _SETTERS
        s[0](self, topic)
        s[1](self, value)
        s[2](self, key)
        s[3](self, {} if headers is None else headers)
        s[4](self, id)
        s[5](self, idempotency_key)
        s[6](self, attempt)
        s[7](self, timestamp)
        s[8](self, native)

    @classmethod
    def from_wire(
        cls,
        topic: str,
        value: bytes,
        key: str | None,
        headers: Mapping[str, str],
        *,
        timestamp: float,
        fallback_id: str,
        attempt: int | None = None,
        native: Any = None,
    ) -> Message:
        """Build a message from what a backend received; msgkit headers fill in the fields."""
        if attempt is None:
            attempt = attempt_of(headers.get(h.ATTEMPT))
        get = headers.get
        # This runs for every received message: filled in directly, as __init__ does, but
        # without the cost of calling the class.
        msg = _new(cls)
        s = _SETTERS
        s[0](msg, topic)
        s[1](msg, value)
        s[2](msg, key)
        s[3](msg, headers)
        s[4](msg, get(h.MESSAGE_ID) or fallback_id)
        s[5](msg, get(h.IDEMPOTENCY_KEY))
        s[6](msg, attempt)
        s[7](msg, timestamp)
        s[8](msg, native)
        return msg

    @property
    def content_type(self) -> str | None:
        return self.headers.get(h.CONTENT_TYPE)

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


def attempt_of(header: str | None) -> int:
    """The delivery attempt a `msgkit-attempt` header value says (1 if missing or not a
    plain number: a foreign producer's header must not break receiving)."""
    return int(header) if header is not None and header.isascii() and header.isdigit() else 1


# The slots' own setters (a frozen class refuses ordinary assignment), in field order.
_SETTERS = tuple(Message.__dict__[f.name].__set__ for f in fields(Message))
