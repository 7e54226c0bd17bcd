"""Instruments: what msgkit tells tracing and metrics about publishing and handling.

    broker = msgkit.connect(url, instruments=[Tracing(), Metrics()])

An instrument sees every publish call (`publishing`) and every message handled
(`handling`), on every backend, with what happened to it. A broker without instruments
calls nothing: producers and consumers check one empty tuple.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from msgkit.logs import get_logger
from msgkit.message import Message, Outgoing

if TYPE_CHECKING:
    from msgkit.consumer import Consumer

log = get_logger("msgkit.instrument")

OUTCOMES = ("handled", "failed", "retried", "dead_lettered", "discarded", "deduplicated")
"""What `HandleObservation.outcome` may report: the handler returned (`handled`) or raised
(`failed`, then `retried`, `dead_lettered`, or `discarded` by a policy without dead
letters), or the idempotency store skipped the message (`deduplicated`)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message is handled: its topic, the group, the broker system (`kafka`,
    `rabbitmq`, `memory`), and the backend's own attributes of a message (Kafka partition,
    offset and key; RabbitMQ routing key) in OpenTelemetry's names."""

    topic: str
    group: str | None
    system: str
    native_attributes: Callable[[Message], Mapping[str, Any]] = field(
        default=lambda message: {}, compare=False)


class PublishObservation:
    """One publish call under way; `done` is called once, with the error if it failed."""

    messages: Sequence[Outgoing]
    """What to publish: the instrument may have added headers (a trace context)."""

    def done(self, error: BaseException | None) -> None:
        """The broker confirmed the messages (or the call failed with `error`)."""


class HandleObservation:
    """One message being handled; `outcome` may be called several times (e.g. failed, then
    retried), `done` once at the end."""

    def outcome(self, outcome: str, error: BaseException | None = None) -> None:
        """One of `OUTCOMES`."""

    def done(self) -> None:
        """Handling ended (whatever the outcome)."""


class Instrument:
    """Base of instruments; every hook defaults to doing nothing."""

    def publishing(self, system: str, messages: Sequence[Outgoing], *, copies: bool
                   ) -> PublishObservation | None:
        """A producer is about to publish `messages` (all to one topic). `copies`: they are
        dead letters or replays, whose headers must stay as they were."""
        return None

    def creating(self, messages: Sequence[Outgoing]) -> Sequence[Outgoing] | None:
        """`messages` are written for a later send (the outbox): return them with what
        must travel in their headers (a trace context), or None to leave them."""
        return None

    def handling(self, source: Source, message: Message, *, current: bool = True
                 ) -> HandleObservation | None:
        """A consumer is about to handle `message` (in the task that will run the handler).
        `current`: the handler handles this message alone, so its context (a span) may be
        made current until `done`; False for the messages of a batch handler."""
        return None

    def watch(self, consumer: Consumer) -> None:
        """A consumer started (for gauges such as its lag); `forget` when it stopped."""

    def forget(self, consumer: Consumer) -> None:
        """The consumer stopped."""


async def observed_publish(instruments: Sequence[Instrument], system: str,
                           messages: Sequence[Outgoing],
                           publish: Callable[[Sequence[Outgoing]], Awaitable[None]],
                           *, copies: bool = False) -> None:
    """`publish(messages)` as each instrument sees it (and may add headers to): one
    observation per topic, since spans and metrics are per destination."""
    start = 0
    while start < len(messages):
        topic, end = messages[start].topic, start + 1
        while end < len(messages) and messages[end].topic == topic:
            end += 1
        await _observed_publish(instruments, system, messages[start:end], publish, copies)
        start = end


async def _observed_publish(instruments: Sequence[Instrument], system: str,
                            messages: Sequence[Outgoing],
                            publish: Callable[[Sequence[Outgoing]], Awaitable[None]],
                            copies: bool) -> None:
    observations = []
    for instrument in instruments:
        try:
            observation = instrument.publishing(system, messages, copies=copies)
        except Exception:
            log.exception("instrument %r failed on a publish; publishing without it", instrument)
            continue
        if observation is not None:
            messages = observation.messages
            observations.append(observation)
    error: BaseException | None = None
    try:
        await publish(messages)
    except BaseException as exc:
        error = exc
        raise
    finally:
        for observation in observations:
            _quietly(observation.done, error)


def created(instruments: Sequence[Instrument], messages: Sequence[Outgoing]) -> Sequence[Outgoing]:
    """`messages` as each instrument's `creating` returned them."""
    for instrument in instruments:
        try:
            messages = instrument.creating(messages) or messages
        except Exception:
            log.exception("instrument %r failed on an outbox write; writing without it", instrument)
    return messages


HANDLING: ContextVar[Sequence[HandleObservation]] = ContextVar("msgkit_handling", default=())
"""The observations of the message this task is handling."""


async def observed_handling(instruments: Sequence[Instrument], source: Source,
                            message: Message, handle: Callable[[], Awaitable[None]]) -> None:
    """Runs `handle()` (the handling of `message`) with each instrument's observation set.
    A failing instrument is logged and left out: it never fails or stalls the message."""
    observations = observations_of(instruments, source, message)
    token = HANDLING.set(observations)
    try:
        await handle()
    finally:
        HANDLING.reset(token)
        finished(observations)


def observations_of(instruments: Sequence[Instrument], source: Source, message: Message,
                    current: bool = True) -> list[HandleObservation]:
    """Each instrument's observation of `message` (a failing instrument is left out)."""
    observations = []
    for instrument in instruments:
        try:
            observation = instrument.handling(source, message, current=current)
        except Exception:
            log.exception("instrument %r failed on message %s; handling it without",
                          instrument, message.id)
            continue
        if observation is not None:
            observations.append(observation)
    return observations


def finished(observations: Sequence[HandleObservation]) -> None:
    for observation in reversed(observations):
        _quietly(observation.done)


def report(outcome: str, error: BaseException | None = None) -> None:
    """Tells the observations of the message being handled (none: nothing) its outcome."""
    for observation in HANDLING.get():
        _quietly(observation.outcome, outcome, error)


def _quietly(call: Callable[..., None], *args: Any) -> None:
    try:
        call(*args)
    except Exception:
        log.exception("instrument callback %r failed", call)
