"""Prometheus metrics on every backend: counts that match what was sent, handled, failed,
retried and dead-lettered; the group's lag counting what it missed while stopped, and the
lag gauge at zero once it drained; in-flight and buffered gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

import msgkit
from msgkit.dedup import Dedup
from msgkit.failure import dead_letter_topic
from msgkit.metrics import Metrics
from msgkit.testing import Collector, Holding, eventually

WAIT = 30.0


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def lag_samples(registry: CollectorRegistry, topic: str) -> list[float]:
    return [s.value for m in registry.collect() if m.name == "msgkit_consumer_lag_messages"
            for s in m.samples if s.labels["topic"] == topic]


async def test_counts_match_what_was_sent_handled_retried_and_dead_lettered(
    msgkit_url: str, unique_name: str,
) -> None:
    registry = CollectorRegistry()
    async with msgkit.connect(msgkit_url, instruments=[Metrics(registry)]) as broker:
        system = broker.backend.system
        got = Collector(fail=lambda msg: msg.value.startswith(b"bad"))
        policy = msgkit.FailurePolicy(max_attempts=2, delays=())
        await broker.consumer(unique_name, group="g", failure=policy).start(got)
        values = [b"ok%d" % i for i in range(8)] + [b"bad1", b"bad2"]
        await broker.producer(required_groups=("g",)).send_many(unique_name, values)
        topic, group = {"system": system, "topic": unique_name}, {"group": "g"}

        def handled(outcome: str) -> float:
            return sample(registry, "msgkit_handled_messages_total", **topic, **group,
                          outcome=outcome)

        await got.wait_for(8, timeout=WAIT)
        await eventually(lambda: handled("dead_lettered") == 2, timeout=WAIT)
    assert sample(registry, "msgkit_published_messages_total", **topic, outcome="ok") == 10
    assert sample(registry, "msgkit_publish_duration_seconds_count", **topic) == 1  # one call
    assert handled("handled") == 8
    assert handled("failed") == 4 and handled("retried") == 2 and handled("dead_lettered") == 2
    assert sample(registry, "msgkit_handler_duration_seconds_count", **topic, **group) == 12
    letters = {"system": system, "topic": dead_letter_topic(unique_name, "g")}
    assert sample(registry, "msgkit_published_messages_total", **letters, outcome="ok") == 2


async def test_lag_counts_what_a_stopped_group_missed_and_falls_to_zero_once_drained(
    msgkit_url: str, unique_name: str,
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, lag_interval=0.1)
    async with msgkit.connect(msgkit_url, instruments=[metrics]) as broker:
        producer = broker.producer(required_groups=("g",))
        first, seen = broker.consumer(unique_name, group="g"), Collector()
        await first.start(seen)
        await producer.send(unique_name, b"first")
        await seen.wait_for(1, timeout=WAIT)
        await first.stop()
        await producer.send_many(unique_name, [b"x"] * 5)

        async def behind(count: int) -> bool:
            return sum((await first.lag()).values()) == count

        await eventually(lambda: behind(5), timeout=WAIT,
                         message="5 messages behind while the group is stopped")
        again = Collector()
        second = broker.consumer(unique_name, group="g")
        await second.start(again)
        await again.wait_for(5, timeout=WAIT)
        await eventually(lambda: bool(lag_samples(registry, unique_name))
                         and sum(lag_samples(registry, unique_name)) == 0, timeout=WAIT,
                         message="the lag gauge at zero")
        await eventually(lambda: behind(0), timeout=WAIT, message="nothing behind once drained")
        in_flight = registry.get_sample_value("msgkit_in_flight_messages", {
            "system": broker.backend.system, "topic": unique_name, "group": "g"})
        assert in_flight == 0  # present (the consumer runs), and nothing left in flight
        assert registry.get_sample_value("msgkit_buffered_messages", {
            "system": broker.backend.system, "topic": unique_name, "group": "g"}) == 0


async def test_in_flight_and_buffered_gauges_follow_a_blocked_handler(
    msgkit_url: str, unique_name: str,
) -> None:
    registry = CollectorRegistry()
    async with msgkit.connect(msgkit_url, instruments=[Metrics(registry)]) as broker:
        labels = {"system": broker.backend.system, "topic": unique_name, "group": "g"}
        held = Holding(lambda msg: True)
        await broker.consumer(unique_name, group="g").start(held)
        await broker.producer(required_groups=("g",)).send_many(unique_name, [b"x"] * 5)

        def gauges() -> tuple[float | None, float | None]:
            return (registry.get_sample_value("msgkit_in_flight_messages", labels),
                    registry.get_sample_value("msgkit_buffered_messages", labels))

        try:  # messages that arrive one by one are fetched beside the blocked handler too
            await eventually(lambda: gauges() == (5, 4), timeout=WAIT,
                             message="5 held, 4 waiting")
        finally:
            held.release()  # else a failure here hangs the broker's graceful close
        await eventually(lambda: gauges() == (0, 0), timeout=WAIT, message="all finished")


async def test_exactly_once_handler_sends_are_counted_once(
    msgkit_url: str, unique_name: str,
) -> None:
    registry = CollectorRegistry()
    async with msgkit.connect(msgkit_url, instruments=[Metrics(registry)]) as broker, \
            Dedup("memory://") as store:
        out = f"{unique_name}.out"
        system = broker.backend.system

        async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
            await ctx.send(out, msg.value)

        transactions = broker.capabilities.transactions
        await broker.consumer(unique_name, group="g", guarantee=msgkit.Guarantee.EXACTLY_ONCE,
                              dedup=None if transactions else store).start(relay)
        got = Collector()
        await broker.consumer(out, group="verify").start(got)
        await broker.producer(required_groups=("g",)).send_many(unique_name, [b"a", b"b", b"c"])
        await got.wait_for(3, timeout=WAIT)
    assert sample(registry, "msgkit_published_messages_total", system=system, topic=out,
                  outcome="ok") == 3


async def test_a_batch_consumer_counts_each_message_of_its_batches(
    msgkit_url: str, unique_name: str,
) -> None:
    registry = CollectorRegistry()
    async with msgkit.connect(msgkit_url, instruments=[Metrics(registry)]) as broker:
        labels = {"system": broker.backend.system, "topic": unique_name, "group": "g"}
        ok: list[bytes] = []

        async def handle(msgs: list[msgkit.Message]) -> None:
            if any(m.value.startswith(b"bad") for m in msgs):
                raise ValueError("a bad one in the batch")
            ok.extend(m.value for m in msgs)

        policy = msgkit.FailurePolicy(max_attempts=1, delays=())
        await broker.consumer(unique_name, group="g", batch=10, failure=policy).start(handle)
        values = [b"ok%d" % i for i in range(8)] + [b"bad1", b"bad2"]
        await broker.producer(required_groups=("g",)).send_many(unique_name, values)

        def handled(outcome: str) -> float:
            return sample(registry, "msgkit_handled_messages_total", **labels, outcome=outcome)

        await eventually(lambda: handled("handled") == 8 and handled("dead_lettered") == 2,
                         timeout=WAIT, message="8 handled, 2 dead-lettered")
    assert handled("failed") == 2 and sorted(ok) == sorted(values[:8])
    assert sample(registry, "msgkit_handler_duration_seconds_count", **labels) == 10
