"""`Delivery.redeliver`: a confirmed copy sent to this group's queue only, then the ack.

RabbitMQ 4 ignores client-set `x-` headers and `basic.nack(requeue)` can neither change
headers nor count attempts, so the copy carries msgkit's headers (`msgkit-attempt`) and
goes through the default exchange straight to the group queue (no other group sees it).
It also carries the route the message was first published with, for `Delivery.origin`.
With a delay it goes to `<queue>.retry.<ms>` instead: a queue without consumers whose
message TTL dead-letters it back to the group queue. No plugin is needed, and a delayed
message never blocks the messages behind it in the group queue.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiormq.exceptions as amqp_errors
from aio_pika import RobustChannel

from msgkit.errors import PublishError
from msgkit.message import Headers, Message, Outgoing, merged
from msgkit_rabbitmq import topology, wire
from msgkit_rabbitmq.publisher import close_quietly, transient, underlay

if TYPE_CHECKING:
    from msgkit_rabbitmq.backend import RabbitMQBackend


class Redeliverer:
    """One confirm channel per backend for redelivery copies and retry-queue declarations."""

    def __init__(self, backend: RabbitMQBackend, channel: RobustChannel) -> None:
        self._backend = backend
        self.channel = channel
        self._declared: set[str] = set()

    async def send_copy(
        self, queue: str, private: bool, msg: Message, delay: float, headers: Headers
    ) -> None:
        """Stores the copy (broker-confirmed) or raises, leaving the original unacked."""
        target, ms = topology.retry_queue(queue, delay) if delay > 0 else (queue, 0)
        exchange, routing_key = wire.first_route(msg.native)
        copy = merged(headers, {wire.FIRST_EXCHANGE: exchange, wire.FIRST_ROUTING_KEY: routing_key})
        out = Outgoing(msg.topic, msg.value, msg.key, copy, msg.id, msg.timestamp, msg.properties)
        # The routing key of the copy is the queue name, so the key travels as a header.
        props = wire.properties(out, persistent=True, key_header=msg.key)
        deadline = asyncio.get_running_loop().time() + self._backend.settings.publish_timeout
        for attempt in range(3):
            try:
                async with asyncio.timeout_at(deadline):
                    if delay > 0 and target not in self._declared:
                        await self._declare_retry(target, queue, ms, private)
                    channel = await underlay(self.channel)
                    await channel.basic_publish(
                        out.value, exchange="", routing_key=target, properties=props,
                        mandatory=True, wait=False,
                    )
                return
            except TimeoutError:
                raise PublishError(
                    f"RabbitMQ did not confirm the redelivery of {msg.id} in time",
                    reason="timeout",
                ) from None
            except amqp_errors.PublishError as exc:
                # The retry queue expired or was deleted: declare it again, once.
                self._declared.discard(target)
                if attempt or delay <= 0:
                    reason = getattr(exc.frame, "reply_text", None) or "returned"
                    raise PublishError(
                        f"could not redeliver {msg.id}: queue {target!r} is gone ({reason})",
                        reason=reason,
                    ) from None
            except amqp_errors.DeliveryError as exc:
                await self._renew()  # a refusing channel may go on refusing (see publisher)
                raise PublishError(
                    f"RabbitMQ refused the redelivery of {msg.id}: {exc}", reason=str(exc.frame)
                ) from None
            except BaseException as exc:
                if not transient(exc):
                    raise
                await asyncio.sleep(0.1)
                await self._renew()
        raise PublishError(f"could not redeliver {msg.id}", reason="connection")

    async def _renew(self) -> None:
        old, self.channel = self.channel, await self._backend.confirm_channel()
        asyncio.get_running_loop().create_task(close_quietly(old))

    async def _declare_retry(self, name: str, queue: str, ms: int, private: bool) -> None:
        settings = self._backend.settings
        args = topology.retry_arguments(settings.queue_type, queue, ms, private=private)
        await self.channel.ready()
        await self.channel.declare_queue(
            name, durable=not private, exclusive=private, arguments=args, robust=False,
        )
        topology.note("queue", name)
        self._declared.add(name)
