"""Prometheus metrics (`pip install 'msgkit[prometheus]'`, prometheus-client).

    metrics = Metrics()                      # the default registry; or Metrics(registry)
    broker = msgkit.connect(url, instruments=[metrics])

Labels are the broker system, the topic and the group (never message ids or keys, so
their number stays bounded):

| metric | type | labels |
|---|---|---|
| `msgkit_published_messages_total` | counter | system, topic, outcome (`ok`, `error`) |
| `msgkit_publish_duration_seconds` | histogram | system, topic (one per publish call) |
| `msgkit_handled_messages_total` | counter | system, topic, group, outcome (`instrument.OUTCOMES`) |
| `msgkit_handler_duration_seconds` | histogram | system, topic, group |
| `msgkit_in_flight_messages` | gauge | system, topic, group (fetched, not finished) |
| `msgkit_buffered_messages` | gauge | system, topic, group (fetched, no handler started) |
| `msgkit_consumer_lag_messages` | gauge | system, topic, group, partition (or queue) |

Lag comes from the broker (`Backend.lag`), read for every running consumer with a group
every `lag_interval` seconds by a task of its own, never on the path of a message; the
gauges are read when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from msgkit.errors import ConfigurationError
from msgkit.instrument import HandleObservation, Instrument, PublishObservation, Source
from msgkit.logs import get_logger
from msgkit.message import Message, Outgoing

if TYPE_CHECKING:
    from msgkit.consumer import Consumer

log = get_logger("msgkit.metrics")

DEFAULT_LAG_INTERVAL = 15.0


class Metrics(Instrument):
    """Counters and histograms updated as messages go; gauges read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 lag_interval: float = DEFAULT_LAG_INTERVAL) -> None:
        registry = REGISTRY if registry is None else registry
        if any(isinstance(c, _Gauges) for c in getattr(registry, "_collector_to_names", {})):
            raise ConfigurationError(
                "this registry has msgkit's metrics already: make one Metrics() per process "
                "(or per registry) and pass it to every broker")
        self.lag_interval = lag_interval
        publish, handle = ("system", "topic"), ("system", "topic", "group")
        self._published = Counter("msgkit_published_messages", "Messages published, by outcome "
                                  "(ok: confirmed by the broker as the guarantee asks)",
                                  [*publish, "outcome"], registry=registry)
        self._publish_seconds = Histogram("msgkit_publish_duration_seconds", "Seconds from a "
                                          "publish call to its confirmation", publish,
                                          registry=registry)
        self._handled = Counter("msgkit_handled_messages", "Messages consumers handled, by "
                                "outcome", [*handle, "outcome"], registry=registry)
        self._handle_seconds = Histogram("msgkit_handler_duration_seconds", "Seconds a message "
                                         "took to handle and settle", handle, registry=registry)
        self._children: dict[tuple[object, ...], Any] = {}
        """Label children by (metric, labels): `labels()` takes a lock on every call."""
        self.consumers: dict[Consumer, None] = {}
        self.lag: dict[tuple[str, str, str], dict[str, int]] = {}
        """The latest lag per (system, topic, group): partition or queue -> messages."""
        self._lag_task: asyncio.Task[None] | None = None
        registry.register(_Gauges(self))

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def publishing(self, system: str, messages: Sequence[Outgoing], *, copies: bool
                   ) -> PublishObservation:
        return _Publish(self, system, messages)

    def handling(self, source: Source, message: Message, *, current: bool = True
                 ) -> HandleObservation:
        return _Handle(self, source)

    def watch(self, consumer: Consumer) -> None:
        self.consumers[consumer] = None
        if self._lag_task is None or self._lag_task.done():
            self._lag_task = asyncio.get_running_loop().create_task(self._refresh_lag_often())

    def forget(self, consumer: Consumer) -> None:
        self.consumers.pop(consumer, None)
        if not self.consumers and self._lag_task is not None:
            self._lag_task.cancel()
            self._lag_task = None
        key = _consumer_key(consumer)
        if not any(_consumer_key(c) == key for c in self.consumers):
            self.lag.pop(key, None)

    async def refresh_lag(self) -> None:
        """Reads the lag of every running consumer with a group now."""
        for consumer in list(self.consumers):
            if consumer.group is None:
                continue
            try:
                lag = await consumer.lag()
            except Exception as exc:  # the gauge keeps its last value
                log.debug("reading the lag of %r failed: %r", consumer.topic, exc)
                continue
            if consumer in self.consumers:  # it may have stopped meanwhile
                self.lag[_consumer_key(consumer)] = lag

    async def _refresh_lag_often(self) -> None:
        while self.consumers:
            await self.refresh_lag()
            await asyncio.sleep(self.lag_interval)


def _consumer_key(consumer: Consumer) -> tuple[str, str, str]:
    return (consumer._broker.backend.system, consumer.topic, consumer.group or "")


class _Publish(PublishObservation):
    __slots__ = ("_labels", "_metrics", "_started", "messages")

    def __init__(self, metrics: Metrics, system: str, messages: Sequence[Outgoing]) -> None:
        self._metrics = metrics
        self._labels = (system, messages[0].topic)
        self._started = time.perf_counter()
        self.messages = messages

    def done(self, error: BaseException | None) -> None:
        metrics = self._metrics
        metrics.child(metrics._publish_seconds, *self._labels).observe(
            time.perf_counter() - self._started)
        outcome = "ok" if error is None else "error"
        metrics.child(metrics._published, *self._labels, outcome).inc(len(self.messages))


class _Handle(HandleObservation):
    __slots__ = ("_labels", "_metrics", "_started")

    def __init__(self, metrics: Metrics, source: Source) -> None:
        self._metrics = metrics
        self._labels = (source.system, source.topic, source.group or "")
        self._started = time.perf_counter()

    def outcome(self, outcome: str, error: BaseException | None = None) -> None:
        metrics = self._metrics
        metrics.child(metrics._handled, *self._labels, outcome).inc()

    def done(self) -> None:
        metrics = self._metrics
        metrics.child(metrics._handle_seconds, *self._labels).observe(
            time.perf_counter() - self._started)


class _Gauges(Collector):
    """In-flight messages and lag, read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        labels = ["system", "topic", "group"]
        in_flight = GaugeMetricFamily("msgkit_in_flight_messages", "Messages consumers "
                                      "fetched and have not finished", labels=labels)
        buffered = GaugeMetricFamily("msgkit_buffered_messages", "Messages consumers "
                                     "fetched and no handler started yet", labels=labels)
        totals: dict[tuple[str, str, str], list[int]] = {}
        for consumer in list(self._metrics.consumers):
            total = totals.setdefault(_consumer_key(consumer), [0, 0])
            total[0] += consumer.in_flight
            total[1] += consumer.buffered
        for key, (held, waiting) in totals.items():
            in_flight.add_metric(list(key), held)
            buffered.add_metric(list(key), waiting)
        lag = GaugeMetricFamily("msgkit_consumer_lag_messages", "Messages waiting for the "
                                "group, per partition or queue", labels=[*labels, "partition"])
        for key, parts in list(self._metrics.lag.items()):
            for part, count in parts.items():
                lag.add_metric([*key, part], count)
        yield in_flight
        yield buffered
        yield lag

