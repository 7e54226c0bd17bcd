"""`Producer`: encodes values and hands them to the backend's publisher."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from multidict import MultiDict

from msgkit import headers as h
from msgkit.backend import Publisher
from msgkit.codec import SendHeaders, check_headers, check_key, encode
from msgkit.errors import ClosedError
from msgkit.guarantee import Guarantee
from msgkit.instrument import observed_publish
from msgkit.message import NO_PROPERTIES, Key, Outgoing

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


_new_tuple = tuple.__new__


def new_message_id() -> str:
    return "%s%012x" % (_ID_PREFIX, next(_ID_COUNTER))  # noqa: UP031 - faster than an f-string


def encode_messages(
    topic: str,
    values: Iterable[V],
    key: Callable[[V], Key | None] | None = None,
    headers: SendHeaders | None = None,
    idempotency_key: Callable[[V], str | None] | None = None,
) -> list[Outgoing]:
    """`values` as messages to `topic`, encoded as a producer sends them (no broker needed:
    the outbox stores them so). `key` and `idempotency_key` are functions of each value.

    What is the same for the whole batch (checks, user headers, the send time) is done
    once: this loop is most of the cost of a pipelined send."""
    user_headers = check_headers(headers) if headers else None
    now = time.time()
    id_header, type_header, key_header = h.MESSAGE_ID, h.CONTENT_TYPE, h.IDEMPOTENCY_KEY
    out: list[Outgoing] = []
    append = out.append
    for value in values:
        k = key(value) if key is not None else None
        if k is not None and type(k) is not str:
            k = check_key(k)
        payload, content_type = (value, None) if type(value) is bytes else encode(value)
        message_id = new_message_id()
        out_headers: Any
        if not user_headers:
            out_headers = {id_header: message_id}
        elif type(user_headers) is dict:
            out_headers = {**user_headers, id_header: message_id}
        else:  # a name repeats: kept in order, as given
            out_headers = MultiDict(user_headers)
            out_headers[id_header] = message_id
        if content_type is not None:
            out_headers[type_header] = content_type
        if idempotency_key is not None:
            ik = idempotency_key(value)
            if ik is not None:
                out_headers[key_header] = ik
        # What Outgoing(...) does, without its Python-level __new__ (a third of the cost)
        append(_new_tuple(Outgoing, (topic, payload, k, out_headers, message_id, now,
                                     NO_PROPERTIES)))
    return out


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
        return [out.id for out in batch]

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
    ) -> list[Outgoing]:
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
