"""Consuming one group queue: aio-pika's consumer callback fills a buffer that `fetch` drains.

The broker bounds what this consumer holds with `basic.qos(prefetch)`. aio-pika's robust
channel re-declares the queue, its binding and the consumer after a reconnect; deliveries
of the lost channel are requeued by the broker, so they are dropped from the buffer here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiormq
from aio_pika import RobustChannel
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustQueue

from msgkit.backend import Delivery, Subscription
from msgkit.errors import BrokerUnavailableError, ConsumerLostError, MsgkitError
from msgkit.logs import get_logger
from msgkit.message import Headers, Message
from msgkit_rabbitmq import wire
from msgkit_rabbitmq.acks import AckBatcher

if TYPE_CHECKING:
    from msgkit_rabbitmq.backend import RabbitMQBackend

log = get_logger("msgkit.rabbitmq")


class RabbitMQDelivery(Delivery):
    __slots__ = ("_sub",)

    def __init__(self, message: Message, sub: RabbitMQSubscription) -> None:
        self.message = message
        self._sub = sub

    async def ack(self) -> None:
        if not self.ack_nowait():
            # At-most-once acks before the handler: the ack must be on the wire before the
            # handler's effects, or a crash right after them would bring the message back.
            channel = self._unacked_channel()
            if channel is not None:
                await channel.basic_ack(self.message.native.delivery_tag or 0)

    def ack_nowait(self) -> bool:
        if self._sub.ack_now:
            return False
        channel = self._unacked_channel()
        if channel is not None:  # the batcher writes it with the next acks
            self._sub.acks(channel).ack(self.message.native.delivery_tag or 0)
        return True

    def _unacked_channel(self) -> aiormq.abc.AbstractChannel | None:
        """The channel to ack this delivery on, taken out of the unacked ones; None if it
        was settled already."""
        sub = self._sub
        if self not in sub.unacked:
            if sub.closed:
                raise BrokerUnavailableError(
                    f"message {self.message.id} was acked after its consumer closed; "
                    "RabbitMQ delivers it again"
                )
            return None
        sub.unacked.discard(self)
        incoming: AbstractIncomingMessage = self.message.native
        try:
            return incoming.channel
        except Exception:
            raise BrokerUnavailableError(
                f"the channel of message {self.message.id} closed before its ack; "
                "RabbitMQ delivers it again"
            ) from None

    @property
    def origin(self) -> Mapping[str, str]:
        """Where the message was first published (`exchange`, `routing-key`) and the group
        `queue`, through every redelivery copy; `retry-queue` for a delayed copy."""
        incoming: AbstractIncomingMessage = self.message.native
        exchange, routing_key = wire.first_route(incoming)
        where = {"exchange": exchange, "routing-key": routing_key, "queue": self._sub.queue_name}
        retry_queue = wire.retried_in(incoming)
        if retry_queue is not None:
            where["retry-queue"] = retry_queue
        return where

    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None:
        sub = self._sub
        if self not in sub.unacked and not sub.closed:
            return  # settled already
        redeliverer = await sub.backend.redeliverer()
        await redeliverer.send_copy(sub.queue_name, sub.private, self.message, delay, headers)
        await self.ack()


class RabbitMQSubscription(Subscription):
    def __init__(
        self,
        backend: RabbitMQBackend,
        topic: str,
        queue_name: str,
        *,
        private: bool,
        channel: RobustChannel,
        prefetch: int,
        ack_now: bool,
        describe: dict[str, Any],
    ) -> None:
        self.backend = backend
        self.topic = topic
        self.queue_name = queue_name
        self.private = private
        self.unacked: set[RabbitMQDelivery] = set()
        self.ack_now = ack_now
        self._channel = channel
        self._prefetch = prefetch
        self._describe = describe
        self._queue: AbstractRobustQueue | None = None
        self._tag: str | None = None
        self._buffer: deque[AbstractIncomingMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self._lost: MsgkitError | None = None
        self._acks: AckBatcher | None = None

    async def start(self, queue: AbstractRobustQueue, arguments: Mapping[str, Any] | None) -> None:
        self._queue = queue
        self._tag = await queue.consume(self._on_message, arguments=dict(arguments or {}) or None)

    def acks(self, channel: aiormq.abc.AbstractChannel) -> AckBatcher:
        """The ack batcher of `channel`: delivery tags start again on a reopened channel."""
        batcher = self._acks
        if batcher is None or batcher.channel is not channel:
            batcher = self._acks = AckBatcher(channel)
        return batcher

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        if not self.ack_now:
            with contextlib.suppress(Exception):  # a closed channel: dropped in fetch
                self.acks(incoming.channel).delivered(incoming.delivery_tag or 0)
        self._buffer.append(incoming)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        loop = asyncio.get_running_loop()
        buffer = self._buffer
        topic = self.topic
        while True:
            if self._lost is not None:
                raise self._lost
            if self.closed:
                return ()
            out: list[RabbitMQDelivery] = []
            while buffer and len(out) < max_messages:
                incoming = buffer.popleft()
                try:
                    incoming.channel  # noqa: B018 - raises for a delivery of a lost channel
                except Exception:
                    continue  # the broker requeued it when the channel closed
                out.append(RabbitMQDelivery(wire.to_message(topic, incoming), self))
            if out:
                self.unacked.update(out)
                return out
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def lose(self, reason: str | MsgkitError) -> None:
        """The connection closed for good under this subscription (or the broker refused
        it back: then `reason` is that error)."""
        self._lost = ConsumerLostError(reason) if isinstance(reason, str) else reason
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        self.backend.forget(self)
        with contextlib.suppress(Exception):
            if self._queue is not None and self._tag is not None:
                await asyncio.wait_for(self._queue.cancel(self._tag), 5)
        # Give back everything delivered and not settled: one nack of "all outstanding"
        # (tag 0, multiple) on the live channel; acks sent before it still count.
        self._buffer.clear()
        self.unacked.clear()
        if self._acks is not None:
            await self._acks.flush()  # acks made before the nack below must stay acks
        with contextlib.suppress(Exception):
            channel = await asyncio.wait_for(self._channel.get_underlay_channel(), 1)
            await channel.basic_nack(0, multiple=True, requeue=True, wait=False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._channel.close(), 5)

    @property
    def native(self) -> AbstractRobustQueue | None:
        return self._queue

    def describe(self) -> dict[str, Any]:
        return {**self._describe, "prefetch": self._prefetch, "consumer_tag": self._tag}
