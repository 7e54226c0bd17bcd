"""Publishing: confirmed and mandatory (at-least-once) or fire-and-forget (at-most-once).

`publish(batch)` keeps up to `publish_window` confirms in flight. Before the first
message to a topic, the exchange and the producer's required groups (queue + binding) are
declared, so a dead-letter topic keeps its messages before anyone consumes it.

A message the broker returns as unroutable (no queue bound: no consumer group yet and no
required group) raises `PublishError` with the broker's reply text (`NO_ROUTE`). When the
connection drops, unconfirmed messages are sent again once aio-pika has reconnected, until
`publish_timeout`; then `PublishError`. Success is reported only for confirmed messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import aiormq
import aiormq.exceptions as amqp_errors
from aio_pika import RobustChannel
from aio_pika.exchange import ExchangeType

from msgkit.backend import Publisher
from msgkit.errors import PublishError
from msgkit.logs import get_logger
from msgkit.message import HeaderValue, Outgoing
from msgkit_rabbitmq import topology, wire
from msgkit_rabbitmq.refusals import PERMISSIONS_HINT, access_refused

if TYPE_CHECKING:
    from msgkit_rabbitmq.backend import RabbitMQBackend

log = get_logger("msgkit.rabbitmq")

# Errors that mean "the connection or channel went away": send again after reconnecting.
TRANSIENT: tuple[type[BaseException], ...] = (
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.AMQPConnectionError,
    ConnectionError,
    OSError,
)


def transient(exc: BaseException) -> bool:
    """True for a lost connection. aiormq cancels the pending confirms of a closing channel,
    so a CancelledError that is not our own task's cancellation means the same."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is None or task.cancelling() == 0
    return isinstance(exc, TRANSIENT)


async def underlay(channel: RobustChannel) -> aiormq.Channel:
    """aiormq's channel under aio-pika's, once (re)connected: publishing through it directly
    skips building an aio-pika `Message` per message."""
    await channel.ready()
    return cast(aiormq.Channel, await channel.get_underlay_channel())


Route = Callable[[Outgoing], tuple[str, str, "HeaderValue | None"]]
"""exchange, routing key, and the key header to add (None: the routing key is the key)."""


def _to_topic(out: Outgoing) -> tuple[str, str, HeaderValue | None]:
    return (out.topic, *wire.routing_key(out.key))


class _Retry:
    """Marks a message not confirmed because the connection dropped: send it again."""


class _Refused:
    """Marks a message the broker refused (nack): not stored, send it again."""


_FIRST_PAUSE, _MAX_PAUSE = 0.05, 1.0
"""Pauses between tries to send what was not confirmed (doubling)."""


async def _until_closed(tasks: list[asyncio.Task[Any]], channel: aiormq.Channel) -> list[Any]:
    """The publishes' outcomes; those still unconfirmed when the channel closes are cancelled
    (sent again by the caller): after a broker restart their confirmations never came, and
    waiting for them held every send for its whole publish_timeout."""
    outcomes = asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait((outcomes, channel.closing), return_when=asyncio.FIRST_COMPLETED)
    if not outcomes.done():
        for task in tasks:
            task.cancel()
    return await outcomes


async def close_quietly(channel: RobustChannel) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(channel.close(), 5)


class RabbitMQPublisher(Publisher):
    def __init__(
        self,
        backend: RabbitMQBackend,
        channel: RobustChannel,
        *,
        confirm: bool,
        required_groups: tuple[str, ...],
        timeout: float,
        window: int,
        mandatory: bool,
    ) -> None:
        self._backend = backend
        self._channel = channel
        self._confirm = confirm
        self._required = required_groups
        self._timeout = timeout
        self._window = window
        self._mandatory = mandatory and confirm  # returns can only be matched to confirms
        self._declared: set[str] = set()
        self._declaring = asyncio.Lock()
        self._closed = False

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        await self._publish(messages, _to_topic, declare=True)

    async def publish_to_group(self, group: str, messages: Sequence[Outgoing]) -> None:
        """Straight to the group queue `<topic>.<group>` through the default exchange, so no
        other group sees it; a missing queue is reported as `PublishError` (NO_ROUTE)."""
        topology.validate(group)
        queues = {out.topic: topology.group_queue(out.topic, group) for out in messages}

        def to_group(out: Outgoing) -> tuple[str, str, HeaderValue | None]:
            return "", queues[out.topic], out.key

        await self._publish(messages, to_group, declare=False)

    async def _publish(self, messages: Sequence[Outgoing], route: Route, *, declare: bool) -> None:
        if self._closed:
            raise PublishError("this RabbitMQ publisher is closed", reason="closed")
        if self._backend.refused is not None:  # a publish under way then ends at its deadline
            raise PublishError(f"{self._backend.refused}; {len(messages)} message(s) not sent",
                               reason=str(self._backend.refused))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        pending = messages
        pause = _FIRST_PAUSE
        refused = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    if declare:
                        await self._ensure_topology(pending)
                    failed, refused = await self._send(pending, route)
                    if not failed:
                        return
                    if self._closed:
                        raise PublishError("publisher closed before the broker confirmed",
                                           reason="closed")
                    pending = failed
                    log.info("RabbitMQ %s; resending %d unconfirmed message(s) on a new channel",
                             f"refused {refused} message(s)" if refused else "connection lost",
                             len(failed))
                    await asyncio.sleep(pause)  # let aio-pika notice a loss before renewing
                    pause = min(pause * 2, _MAX_PAUSE)
                    await self._renew()
            except Exception as exc:
                if self._backend.refused is not None:
                    raise PublishError(f"{self._backend.refused}; {len(pending)} message(s) "
                                       "not sent", reason=str(self._backend.refused)) from exc
                if not isinstance(exc, TimeoutError):
                    raise
                why = (f"; it refused (nack) {refused} of them at the last try: a quorum queue "
                       "without a leader, or a full queue with x-overflow=reject-publish"
                       ) if refused else ""
                raise PublishError(
                    f"RabbitMQ at {self._backend.url.redacted} did not confirm "
                    f"{len(pending)} message(s) within publish_timeout={self._timeout}s{why}",
                    reason="nack" if refused else "timeout",
                ) from None

    async def _renew(self) -> None:
        """A new confirm channel in place of the current one. aio-pika's restored channel can
        stay closed after a drop, and on RabbitMQ 3.10 a channel that published to a quorum
        queue while its leader moved is refused (nack) from then on; a new one is not."""
        old = self._channel
        self._channel = await self._backend.confirm_channel()
        asyncio.get_running_loop().create_task(close_quietly(old))

    async def _send(self, messages: Sequence[Outgoing], route: Route
                    ) -> tuple[Sequence[Outgoing], int]:
        """Sends `messages`; returns those to send again (the connection dropped, or the
        broker refused them) and how many of those the broker refused."""
        try:
            channel = await self._underlay()
        except BaseException as exc:
            if transient(exc):
                return messages, 0
            raise
        publish = channel.basic_publish
        persistent = self._confirm
        mandatory = self._mandatory
        if not self._confirm:
            for out in messages:
                exchange, rk, key_header = route(out)
                props = wire.properties(out, persistent=False, key_header=key_header)
                try:
                    await publish(out.value, exchange=exchange, routing_key=rk,
                                  properties=props, wait=False)
                except BaseException as exc:
                    if not transient(exc):
                        raise
                    # at-most-once: lost in the outage, as promised; not sent again
                    raise PublishError(
                        "RabbitMQ connection lost (at-most-once: not resent)", reason="connection"
                    ) from None
            return (), 0
        window = asyncio.Semaphore(self._window)
        tasks: list[asyncio.Task[Any]] = []
        loop = asyncio.get_running_loop()
        try:
            for out in messages:
                exchange, rk, key_header = route(out)
                props = wire.properties(out, persistent=persistent, key_header=key_header)
                await window.acquire()
                task = loop.create_task(publish(
                    out.value, exchange=exchange, routing_key=rk, properties=props,
                    mandatory=mandatory, wait=False,
                ))
                task.add_done_callback(lambda _: window.release())
                tasks.append(task)
                if channel.is_closed:
                    break
            results = await _until_closed(tasks, channel)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        again: list[Outgoing] = []
        refused = 0
        first_error: PublishError | None = None
        for out, result in zip(messages, results, strict=False):
            error = self._classify(out, result)
            if error is _Retry or error is _Refused:
                again.append(out)
                refused += error is _Refused
            elif isinstance(error, PublishError) and first_error is None:
                first_error = error
        again.extend(messages[len(results):])
        if first_error is not None:
            raise first_error
        return again, refused

    def _classify(self, out: Outgoing, result: object
                  ) -> PublishError | type[_Retry] | type[_Refused] | None:
        if not isinstance(result, BaseException):
            return None
        if isinstance(result, amqp_errors.PublishError):
            reason = getattr(result.frame, "reply_text", None) or "returned"
            if self._required:
                # A required queue was deleted under us: declared again on the next publish.
                self._declared.discard(out.topic)
            return PublishError(
                f"RabbitMQ could not route a message to topic {out.topic!r} ({reason}): no "
                "queue is bound to it; start a consumer group first or give the producer "
                "required_groups", reason=reason,
            )
        if isinstance(result, amqp_errors.DeliveryError):
            return _Refused  # a nack: not stored, so sent again until publish_timeout
        if isinstance(result, amqp_errors.ChannelNotFoundEntity):
            self._declared.discard(out.topic)  # the exchange was deleted: declare it again
            return _Retry
        if isinstance(result, amqp_errors.ChannelClosed):
            hint = f"; {PERMISSIONS_HINT}" if access_refused(result) else ""
            return PublishError(
                f"RabbitMQ closed the channel publishing to {out.topic!r}: {result}{hint}",
                reason=str(result),
            )
        if isinstance(result, (*TRANSIENT, asyncio.CancelledError)):
            return _Retry
        return PublishError(f"publish to {out.topic!r} failed: {result!r}", reason=repr(result))

    async def _underlay(self) -> aiormq.Channel:
        return await underlay(self._channel)

    async def _ensure_topology(self, messages: Sequence[Outgoing]) -> None:
        declared = self._declared
        topics = {out.topic for out in messages if out.topic not in declared}
        if not topics:
            return
        async with self._declaring:
            for topic in sorted(topics - self._declared):
                await self._declare(topic)
                self._declared.add(topic)

    async def _declare(self, topic: str) -> None:
        backend = self._backend
        settings = backend.settings
        names = [topology.group_queue(topic, g) for g in self._required]  # raises before I/O
        while True:
            try:
                await self._channel.ready()
                exchange = await self._channel.declare_exchange(
                    topic, ExchangeType(settings.exchange_type), durable=True,
                    arguments=topology.exchange_arguments(settings), robust=False,
                )
                topology.note("exchange", topic)
                for name in names:
                    async with backend.declaring(name):
                        queue = await self._channel.declare_queue(
                            name, durable=True, arguments=backend.group_arguments(),
                            robust=False,
                        )
                    topology.note("queue", name)
                    await queue.bind(exchange, "#", robust=False)
                return
            except amqp_errors.ChannelClosed as exc:
                hint = (PERMISSIONS_HINT if access_refused(exc) else "an exchange or queue of "
                        "that name exists with other settings (delete it or match them)")
                raise PublishError(f"RabbitMQ refused the topology of topic {topic!r}: {exc}; "
                                   f"{hint}", reason=str(exc)) from exc
            except BaseException as exc:
                if not transient(exc):
                    raise
                await asyncio.sleep(0.1)  # reconnecting: bounded by the caller's deadline

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._channel.close(), 5)

    @property
    def native(self) -> RobustChannel:
        return self._channel

    def describe(self) -> dict[str, Any]:
        return {
            "url": self._backend.url.redacted,
            "publisher_confirms": self._confirm,
            "mandatory": self._mandatory,
            "delivery_mode": "persistent" if self._confirm else "transient",
            "publish_window": self._window,
            "publish_timeout": self._timeout,
            "required_groups": self._required,
            "exchange_type": self._backend.settings.exchange_type,
        }

