"""`Producer`: encodes values and hands them to the backend's publisher."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from msgkit import headers as h
from msgkit.backend import Publisher
from msgkit.codec import check_headers, encode
from msgkit.errors import ClosedError, SerializationError
from msgkit.guarantee import Guarantee
from msgkit.message import Outgoing

if TYPE_CHECKING:
    from msgkit.broker import Broker

V = TypeVar("V")

# Ids are unique per process (random prefix) and cheap (a counter): no uuid per message.
# A forked child draws a new prefix, or it would repeat its parent's ids.
_ID_PREFIX = ""
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count(1)


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_message_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


class Producer:
    """Sends messages with one delivery guarantee. Made by `Broker.producer()`.

    `send` returns the message id once the guarantee is met: for at-least-once, when the
    broker confirmed the write.
    """

    def __init__(
        self,
        broker: Broker,
        guarantee: Guarantee,
        *,
        required_groups: Sequence[str] = (),
        options: Mapping[str, Any],
    ) -> None:
        self._broker = broker
        self.guarantee = guarantee
        self.required_groups = tuple(required_groups)
        self._options = dict(options)
        self._publisher: Publisher | None = None
        self._opening = asyncio.Lock()
        self._topics: set[str] = set()
        self._closed = False

    async def send(
        self,
        topic: str,
        value: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Send one message; `value` is bytes, str, a dict/list (JSON) or a pydantic model."""
        out = self._outgoing(topic, value, key, headers, idempotency_key)
        await (self._publisher or await self._open()).publish((out,))
        return out.id

    async def send_many(
        self,
        topic: str,
        values: Iterable[V],
        *,
        key: Callable[[V], str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: Callable[[V], str | None] | None = None,
    ) -> list[str]:
        """Send many messages pipelined (the client batches them); returns their ids in order.

        `key` and `idempotency_key` are functions of each value.
        """
        batch = [
            self._outgoing(
                topic, v, key(v) if key else None, headers,
                idempotency_key(v) if idempotency_key else None,
            )
            for v in values
        ]
        if batch:
            await (self._publisher or await self._open()).publish(batch)
        return [out.id for out in batch]

    def build(
        self,
        topic: str,
        value: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Outgoing:
        """The message `send` would publish, encoded but not sent (for outboxes)."""
        return self._outgoing(topic, value, key, headers, idempotency_key)

    async def publish_raw(self, messages: Sequence[Outgoing]) -> None:
        """Publish already-built messages as they are (used by dead-lettering and replay)."""
        for out in messages:
            self._check_topic(out.topic)
        await (self._publisher or await self._open()).publish(messages)

    def describe(self) -> dict[str, Any]:
        """The guarantee and the effective client settings."""
        settings = self._publisher.describe() if self._publisher else {}
        return {"guarantee": self.guarantee.value, "required_groups": self.required_groups,
                "client": settings}

    @property
    def native(self) -> Any:
        """The broker client's producer (None before the first send)."""
        return self._publisher.native if self._publisher else None

    async def close(self) -> None:
        self._closed = True
        if self._publisher is not None:
            publisher, self._publisher = self._publisher, None
            await publisher.close()

    async def __aenter__(self) -> Producer:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _outgoing(
        self,
        topic: str,
        value: object,
        key: str | None,
        headers: Mapping[str, str] | None,
        idempotency_key: str | None,
    ) -> Outgoing:
        if self._closed or self._broker.closed:
            raise ClosedError("this producer's broker is closed; send before closing it")
        if topic not in self._topics:
            self._check_topic(topic)
        if key is not None and not isinstance(key, str):
            raise SerializationError(f"key must be a str, not {type(key).__name__}")
        payload, content_type = encode(value)
        out_headers = check_headers(headers) if headers else {}
        if content_type is not None:
            out_headers[h.CONTENT_TYPE] = content_type
        message_id = new_message_id()
        out_headers[h.MESSAGE_ID] = message_id
        if idempotency_key is not None:
            out_headers[h.IDEMPOTENCY_KEY] = idempotency_key
        return Outgoing(topic, payload, key, out_headers, message_id, time.time())

    def _check_topic(self, topic: str) -> None:
        self._broker.validate_topic(topic)
        self._topics.add(topic)

    async def _open(self) -> Publisher:
        async with self._opening:
            if self._closed or self._broker.closed:
                raise ClosedError("this producer's broker is closed; send before closing it")
            if self._publisher is None:
                self._publisher = await self._broker.backend.publisher(
                    self.guarantee, required_groups=self.required_groups, options=self._options
                )
            return self._publisher
