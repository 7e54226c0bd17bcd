"""`Producer`: encodes values and hands them to the backend's publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from msgkit.backend import Publisher
from msgkit.codec import SendHeaders
from msgkit.encoded import Encoded, encode_messages
from msgkit.errors import ClosedError
from msgkit.guarantee import Guarantee
from msgkit.instrument import observed_publish
from msgkit.message import Key, Outgoing

if TYPE_CHECKING:
    from msgkit.broker import Broker

V = TypeVar("V")

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
        self._lone: Publisher | None = None
        self._opening = asyncio.Lock()
        self._topics: set[str] = set()
        self._closed = False

    async def send(
        self,
        topic: str,
        value: object,
        *,
        key: Key | None = None,
        headers: SendHeaders | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Send one message; `value` is bytes, str, a dict/list (JSON) or a pydantic model.

        `key` and header values are text or bytes (header values may be None); a list of
        (name, value) pairs sends a header name more than once (Kafka only keeps repeats)."""
        out = self.build(topic, value, key=key, headers=headers, idempotency_key=idempotency_key)
        publisher = self._lone or await self._open_lone()
        if self._broker.instruments:
            await self._observed(publisher.publish, (out,), copies=False)
        else:
            await publisher.publish((out,))
        return out.id

    async def send_many(
        self,
        topic: str,
        values: Iterable[V],
        *,
        key: Callable[[V], Key | None] | None = None,
        headers: SendHeaders | None = None,
        idempotency_key: Callable[[V], str | None] | None = None,
    ) -> list[str]:
        """Send many messages pipelined (the client batches them); returns their ids in order.

        `key` and `idempotency_key` are functions of each value.
        """
        batch = self._outgoing(topic, values, key, headers, idempotency_key)
        if batch:
            await self.publish_built(batch)
        return batch.ids

    def build(
        self,
        topic: str,
        value: object,
        *,
        key: Key | None = None,
        headers: SendHeaders | None = None,
        idempotency_key: str | None = None,
    ) -> Outgoing:
        """The message `send` would publish, encoded but not sent (for outboxes)."""
        return self._outgoing(
            topic, (value,), None if key is None else lambda _: key, headers,
            None if idempotency_key is None else lambda _: idempotency_key,
        )[0]

    async def publish_built(self, messages: Sequence[Outgoing]) -> None:
        """Publish messages `build` made (as `send` would: tracing adds its context)."""
        publisher = self._publisher or await self._open()
        if self._broker.instruments:
            await self._observed(publisher.publish, messages, copies=False)
        else:
            await publisher.publish(messages)

    async def publish_raw(self, messages: Sequence[Outgoing]) -> None:
        """Publish copies of messages exactly as they are (dead letters, replays)."""
        for out in messages:
            self._check_topic(out.topic)
        publisher = self._publisher or await self._open()
        if self._broker.instruments:
            await self._observed(publisher.publish, messages, copies=True)
        else:
            await publisher.publish(messages)

    async def _observed(self, publish: Callable[[Sequence[Outgoing]], Awaitable[None]],
                        messages: Sequence[Outgoing], *, copies: bool) -> None:
        await observed_publish(self._broker.instruments, self._broker.backend.system,
                               messages, publish, copies=copies)

    def describe(self) -> dict[str, Any]:
        """The guarantee and the effective client settings."""
        publisher = self._publisher or self._lone
        settings = publisher.describe() if publisher else {}
        return {"guarantee": self.guarantee.value, "required_groups": self.required_groups,
                "client": settings}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def native(self) -> Any:
        """The broker client's producer (None before the first send): `send_many`'s, or
        `send`'s while only that was used (Kafka gives `send` a client without linger)."""
        publisher = self._publisher or self._lone
        return publisher.native if publisher else None

    async def close(self) -> None:
        self._closed = True
        lone, self._lone = self._lone, None
        for publisher in {id(p): p for p in (self._publisher, lone) if p is not None}.values():
            await publisher.close()
        self._publisher = None

    async def __aenter__(self) -> Producer:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _outgoing(
        self,
        topic: str,
        values: Iterable[V],
        key: Callable[[V], Key | None] | None,
        headers: SendHeaders | None,
        idempotency_key: Callable[[V], str | None] | None,
    ) -> Encoded:
        """`values` as messages to `topic`, after the producer's own checks."""
        if self._closed or self._broker.closed:
            raise ClosedError("this producer's broker is closed; send before closing it")
        if topic not in self._topics:
            self._check_topic(topic)
        return encode_messages(topic, values, key, headers, idempotency_key)

    def _check_topic(self, topic: str) -> None:
        self._broker.validate_topic(topic)
        self._topics.add(topic)

    async def _open_lone(self) -> Publisher:
        """The publisher of `send`: on Kafka at least once, one that sends each message at
        once (awaited alone, it has nothing to wait for); else the producer's own."""
        lone = (self._broker.backend.lone_send_options(self._options)
                if self.guarantee is Guarantee.AT_LEAST_ONCE else None)
        if lone is None:
            self._lone = self._publisher or await self._open()
            return self._lone
        async with self._opening:
            if self._closed or self._broker.closed:
                raise ClosedError("this producer's broker is closed; send before closing it")
            if self._lone is None:
                self._lone = await self._broker.backend.publisher(
                    self.guarantee, required_groups=self.required_groups, options=lone)
            return self._lone

    async def _open(self) -> Publisher:
        async with self._opening:
            if self._closed or self._broker.closed:
                raise ClosedError("this producer's broker is closed; send before closing it")
            if self._publisher is None:
                self._publisher = await self._broker.backend.publisher(
                    self.guarantee, required_groups=self.required_groups, options=self._options
                )
            return self._publisher
