"""One OpenTelemetry trace per order across the example's services, on every backend: the
order service's send, payments, inventory and confirmations, and the receipt that fails,
is retried, dead-lettered and replayed. Foreign trace headers are honoured."""

from __future__ import annotations

import collections

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import msgkit
from examples.orders.flow import run
from msgkit.testing import Collector
from msgkit.tracing import Tracing


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def attr(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


async def test_one_trace_follows_an_order_through_every_service_retry_and_dead_letter(
    msgkit_url: str, spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    await run(msgkit_url, quiet=True, instruments=[Tracing(provider)])
    traces: dict[int, list[ReadableSpan]] = collections.defaultdict(list)
    for span in exporter.get_finished_spans():
        traces[span.context.trace_id].append(span)
    # order-3's receipt fails: its trace is the one with a dead letter in it.
    [poisoned] = [t for t in traces.values()
                  if any(attr(s, "msgkit.outcome") == "dead_lettered" for s in t)]
    by_group = collections.defaultdict(list)
    for span in poisoned:
        if span.kind is SpanKind.CONSUMER:
            by_group[attr(span, "messaging.consumer.group.name")].append(span)
    assert {"payments", "inventory", "confirmations", "receipts"} <= by_group.keys()
    # the order's event was created in the outbox, in the order service's trace; the relay's
    # send links to it, and the consumers continue it
    [root] = [s for s in poisoned if s.parent is None]
    assert root.kind is SpanKind.PRODUCER and root.name.startswith("create shop.orders.")
    assert attr(root, "messaging.operation.type") == "create"
    relayed = [s for t in traces.values() for s in t if s.name.startswith("send shop.orders.")]
    assert any(link.context.span_id == root.context.span_id for s in relayed for link in s.links)
    ids = {s.context.span_id: s for s in poisoned}
    # payments' own send is a child of its handling, which continues the order's send
    [payment] = by_group["payments"]
    assert payment.parent is not None and payment.parent.span_id == root.context.span_id
    children = [s for s in poisoned if s.parent and s.parent.span_id == payment.context.span_id]
    assert any(s.kind is SpanKind.PRODUCER and s.name.startswith("send shop.payments.")
               for s in children)
    [inventory] = by_group["inventory"]
    assert inventory.parent is not None and ids[inventory.parent.span_id].kind is SpanKind.PRODUCER
    # the receipt: three failed attempts (retried, retried, dead-lettered), then the replay
    receipts = sorted(by_group["receipts"], key=lambda s: s.start_time or 0)
    outcomes = [attr(s, "msgkit.outcome") for s in receipts]
    assert outcomes == ["retried", "retried", "dead_lettered", "handled"], outcomes
    assert [attr(s, "msgkit.message.attempt") for s in receipts][:3] == [1, 2, 3]
    failed = receipts[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" and "MailServerDown" in str(attr(e, "exception.type"))  # type: ignore[arg-type]
               for e in failed.events)
    assert all(attr(s, "messaging.system") == msgkit.connect(msgkit_url).backend.system
               for s in poisoned if s is not root)  # an outbox write knows no broker
    # every placed order has a trace of its own; the rejected one's event was never consumed
    orders = [t for t in traces.values()
              if any(s.name.startswith("create shop.orders.") and s.parent is None for s in t)]
    assert sorted(any(s.kind is SpanKind.CONSUMER for s in t) for t in orders) == [False] + [True] * 4


async def test_a_foreign_trace_context_in_the_headers_is_continued(
    msgkit_url: str, unique_name: str, spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = f"00-{trace_id}-{parent_id}-01"
    async with msgkit.connect(msgkit_url, instruments=[Tracing(provider)]) as traced, \
            msgkit.connect(msgkit_url) as plain:
        got = Collector()
        await traced.consumer(unique_name, group="g").start(got)
        producer = plain.producer(required_groups=("g",))
        await producer.send(unique_name, b"text", headers={"traceparent": traceparent})
        await producer.send(unique_name, b"bytes", headers={"traceparent": traceparent.encode()})
        await got.wait_for(2, timeout=30)
    consumed = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(consumed) == 2
    for span in consumed:
        assert f"{span.context.trace_id:032x}" == trace_id
        assert span.parent is not None and f"{span.parent.span_id:016x}" == parent_id
