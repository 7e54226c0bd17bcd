"""What tracing and metrics cost per message: msgkit with an instrument against msgkit
without, on every backend, in one run (send_many chunks -> a handler, concurrency 1).

Tracing uses the OpenTelemetry SDK with a span processor that drops the spans (the cost of
making them, not of exporting); metrics use a registry of their own. The ratio is
instrumented over plain throughput; the note's per-message cost is (1/with - 1/without).
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from bench.flow import send_to_handler
from bench.harness import Case, Countdown
from msgkit.instrument import Instrument
from msgkit.metrics import Metrics
from msgkit.tracing import Tracing


class _Drop(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _tracing() -> Instrument:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Drop()))
    return Tracing(provider)


def _metrics() -> Instrument:
    return Metrics(CollectorRegistry(), lag_interval=3600)


async def plain(url: str, n: int) -> float:
    return await send_to_handler(url, n, Countdown(n + 1))


async def traced(url: str, n: int) -> float:
    return await send_to_handler(url, n, Countdown(n + 1), instruments=[_tracing()])


async def measured(url: str, n: int) -> float:
    return await send_to_handler(url, n, Countdown(n + 1), instruments=[_metrics()])


_SIZES = {"memory": 100_000, "kafka": 50_000, "amqp": 10_000}
CASES = [
    Case(f"{label} on, send_many->handler", backend, "msgkit, instruments off", run, plain,
         messages=n, notes="baseline: the same msgkit flow without instruments")
    for backend, n in _SIZES.items()
    for label, run in (("tracing", traced), ("metrics", measured))
]
