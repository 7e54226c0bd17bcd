"""OpenTelemetry tracing (`pip install 'msgkit[otel]'`: `opentelemetry-api` only; the
application configures the SDK and its exporter).

    broker = msgkit.connect(url, instruments=[Tracing()])

A send is a PRODUCER span whose W3C trace context travels in the message's headers
(`traceparent`, `tracestate`); handling is a CONSUMER span continuing it, so a handler's
`ctx.send` is its child and one trace follows a message across services. Retry copies, dead
letters and replays keep the headers they had, so every later attempt and a replay from the
dead-letter queue continue the same trace. A message written to the outbox gets a `create`
span in the writer's trace; the relay's send links to it and the consumer continues it.
Foreign producers' trace headers are honoured. Attributes follow OpenTelemetry's messaging
conventions; failures are recorded on the span.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from msgkit.instrument import HandleObservation, Instrument, PublishObservation, Source
from msgkit.message import Message, Outgoing, merged
from msgkit.url import redact


class _HeaderGetter(Getter[Any]):
    """Reads a trace context from message headers: a mapping or multi-mapping of str or
    bytes (a foreign producer's headers arrive as they were sent)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = carrier.getall(key, ()) if hasattr(carrier, "getall") else (
            [carrier[key]] if key in carrier else [])
        out = [v.decode("ascii", "ignore") if isinstance(v, bytes) else v
               for v in values if isinstance(v, (str, bytes))]
        return out or None

    def keys(self, carrier: Any) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()
_MAX_LINKS = 128
"""Links on one send span of copies; a batch beyond that links its first ones."""


class Tracing(Instrument):
    """Spans for sends and handling; `tracer_provider` defaults to the global one."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("msgkit", tracer_provider=tracer_provider)

    def publishing(self, system: str, messages: Sequence[Outgoing], *, copies: bool
                   ) -> PublishObservation:
        topic = messages[0].topic
        attributes: dict[str, Any] = {
            "messaging.system": system, "messaging.destination.name": topic,
            "messaging.operation.type": "send", "messaging.operation.name": "send",
        }
        if len(messages) == 1:
            attributes["messaging.message.id"] = messages[0].id
        else:
            attributes["messaging.batch.message_count"] = len(messages)
        # Copies keep their headers byte for byte, trace context included: their send is
        # linked to the context each carries (an outbox row's creation, a dead letter's trace).
        links = [] if not copies else [
            trace.Link(linked) for out in messages[:_MAX_LINKS]
            if (linked := trace.get_current_span(propagate.extract(out.headers, getter=_GETTER))
                .get_span_context()).is_valid]
        span = self._tracer.start_span(f"send {topic}", kind=SpanKind.PRODUCER,
                                       attributes=attributes, links=links)
        if not copies:
            messages = _carrying(messages, span)
        return _Publish(span, messages)

    def creating(self, messages: Sequence[Outgoing]) -> Sequence[Outgoing]:
        """A `create <topic>` span per message written to the outbox, a child of the
        current span; the relay's later send links to it."""
        out: list[Outgoing] = []
        for message in messages:
            span = self._tracer.start_span(f"create {message.topic}", kind=SpanKind.PRODUCER,
                                           attributes={
                "messaging.destination.name": message.topic,
                "messaging.operation.type": "create", "messaging.operation.name": "create",
                "messaging.message.id": message.id})
            out.extend(_carrying([message], span))
            span.end()
        return out

    def handling(self, source: Source, message: Message, *, current: bool = True
                 ) -> HandleObservation:
        parent = propagate.extract(message.headers, getter=_GETTER)
        attributes: dict[str, Any] = {
            "messaging.system": source.system, "messaging.destination.name": source.topic,
            "messaging.operation.type": "process", "messaging.operation.name": "process",
            "messaging.message.id": message.id, "msgkit.message.attempt": message.attempt,
            **source.native_attributes(message),
        }
        if source.group is not None:
            attributes["messaging.consumer.group.name"] = source.group
        span = self._tracer.start_span(f"process {source.topic}", context=parent,
                                       kind=SpanKind.CONSUMER, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span)) if current else None
        return _Handle(span, token)


def _carrying(messages: Sequence[Outgoing], span: trace.Span) -> Sequence[Outgoing]:
    """`messages` with `span`'s context in their headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    if not carrier:
        return messages
    return [out._replace(headers=_with(out.headers, carrier)) for out in messages]


def _with(headers: Mapping[str, Any], carrier: Mapping[str, str]) -> Mapping[str, Any]:
    if type(headers) is dict:
        return {**headers, **carrier}
    return merged(headers, carrier)  # type: ignore[arg-type]


class _Publish(PublishObservation):
    def __init__(self, span: trace.Span, messages: Sequence[Outgoing]) -> None:
        self._span = span
        self.messages = messages

    def done(self, error: BaseException | None) -> None:
        if error is not None:
            _record(self._span, error)
        self._span.end()


class _Handle(HandleObservation):
    def __init__(self, span: trace.Span, token: object) -> None:
        self._span = span
        self._token = token

    def outcome(self, outcome: str, error: BaseException | None = None) -> None:
        self._span.set_attribute("msgkit.outcome", outcome)
        if error is not None:
            _record(self._span, error)

    def done(self) -> None:
        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
        self._span.end()


def _record(span: trace.Span, error: BaseException) -> None:
    """The exception as an event and the span's status, URL secrets redacted as in logs."""
    text = redact(str(error))
    span.record_exception(error, attributes={
        "exception.message": text,
        "exception.stacktrace": redact("".join(traceback.format_exception(error))),
    })
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {text}"))
