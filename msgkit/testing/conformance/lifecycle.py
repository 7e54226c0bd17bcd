"""Starting, stopping and dying: nothing is lost, in-flight work is finished or handed on."""

from __future__ import annotations

import asyncio

import msgkit
from msgkit.testing.collect import Collector, Holding, eventually
from msgkit.testing.conformance.support import (
    WAIT,
    graceful_stop,
    requires,
)


class LifecycleContract:
    async def test_graceful_stop_finishes_and_acknowledges_in_flight(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        await graceful_stop(msgkit_broker, unique_name)

    async def test_stop_leaves_fetched_unstarted_messages_to_the_group(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "redelivers_unacked")
        release = asyncio.Event()
        first: list[str] = []

        async def blocks(msg: msgkit.Message) -> None:
            first.append(msg.id)
            await release.wait()

        consumer = msgkit_broker.consumer(unique_name, group="g", prefetch=10)
        await consumer.start(blocks)
        ids = await msgkit_broker.producer().send_many(unique_name, [b"x"] * 10)
        await eventually(lambda: consumer.in_flight > 1, timeout=WAIT,
                         message="more fetched while the first one runs")
        stopping = asyncio.create_task(consumer.stop())
        await eventually(lambda: consumer.in_flight == 1, timeout=WAIT,
                         message="stop() let go of the nine not started")
        assert not stopping.done(), "stop() returned while a handler was still running"
        release.set()
        await asyncio.wait_for(stopping, WAIT)
        assert len(first) == 1, "stop() ran messages that had not started"
        after = Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(after)
        await eventually(lambda: after.ids == set(ids) - set(first), timeout=WAIT,
                         message="the unstarted messages go to the next member")

    async def test_stop_mid_stream_then_resume_loses_nothing(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector()

        async def slowish(msg: msgkit.Message) -> None:
            await asyncio.sleep(0.002)
            await got(msg)

        first = msgkit_broker.consumer(unique_name, group="g", concurrency=4)
        await first.start(slowish)
        ids = set(await msgkit_broker.producer().send_many(unique_name, [b"x"] * 300))
        await got.wait_for(20, timeout=WAIT)
        await first.stop()
        assert len(got.messages) < 300, "stopped too late to test resuming"
        await msgkit_broker.consumer(unique_name, group="g", concurrency=4).start(got)
        await eventually(lambda: got.ids == ids, timeout=WAIT, message="every message handled")

    async def test_killed_consumer_in_flight_messages_go_to_another_member(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "redelivers_unacked")
        started = asyncio.Event()

        async def hangs(msg: msgkit.Message) -> None:
            started.set()
            await asyncio.Event().wait()

        doomed = msgkit_broker.consumer(unique_name, group="g")
        await doomed.start(hangs)
        task = asyncio.create_task(doomed.wait())  # cancelling the wait kills the consumer
        sent = await msgkit_broker.producer().send(unique_name, b"orphan")
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()  # a hard stop: the handler never finishes, nothing is acknowledged
        await asyncio.gather(task, return_exceptions=True)
        survivor = Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(survivor)
        await survivor.wait_for(1, timeout=WAIT)
        assert survivor.ids == {sent}

    async def test_stop_cancels_a_handler_past_its_timeout_and_the_message_returns(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "redelivers_unacked")
        hangs = Holding(lambda msg: True)
        consumer = msgkit_broker.consumer(unique_name, group="g")
        await consumer.start(hangs)
        sent = await msgkit_broker.producer().send(unique_name, b"never finishes")
        await eventually(lambda: bool(hangs.started), timeout=WAIT, message="the handler started")
        await asyncio.wait_for(consumer.stop(timeout=0.2), WAIT)
        assert hangs.cancelled == [b"never finishes"] and not consumer.running
        survivor = Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(survivor)
        await survivor.wait_for(1, timeout=WAIT)
        assert survivor.ids == {sent}

    async def test_broker_close_cancels_hanging_handlers_after_the_stop_timeout_setting(
        self, msgkit_url: str, unique_name: str
    ) -> None:
        broker = msgkit.connect(msgkit_url, settings=msgkit.Settings(stop_timeout=0.2))
        await broker.start()
        started: list[str] = []

        async def hangs(msg: msgkit.Message) -> None:
            started.append(msg.topic)
            await asyncio.Event().wait()

        topics = [f"{unique_name}-a", f"{unique_name}-b"]
        consumers = [broker.consumer(topic, group="g") for topic in topics]
        for consumer in consumers:
            await consumer.start(hangs)
        for topic in topics:
            await broker.producer().send(topic, b"never finishes")
        await eventually(lambda: sorted(started) == topics, timeout=WAIT,
                         message="both handlers started")
        await asyncio.wait_for(broker.close(), WAIT)
        assert not any(consumer.running for consumer in consumers)

    async def test_concurrent_open_and_close(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        async def cycle(n: int) -> None:
            consumer = msgkit_broker.consumer(unique_name, group=f"g{n % 3}")
            await consumer.start(Collector())
            producer = msgkit_broker.producer()
            await producer.send(unique_name, f"{n}")
            await consumer.stop()
            await producer.close()

        await asyncio.gather(*(cycle(n) for n in range(6)))
        got = Collector()
        await msgkit_broker.consumer(unique_name, group="after").start(got)
        sent = await msgkit_broker.producer().send(unique_name, b"still works")
        await eventually(lambda: sent in got.ids, timeout=WAIT, message="broker still usable")

    async def test_broker_close_stops_consumers_and_rejects_sends(
        self, msgkit_url: str, unique_name: str
    ) -> None:
        broker = msgkit.connect(msgkit_url)
        await broker.start()
        consumer = broker.consumer(unique_name, group="g")
        await consumer.start(Collector())
        producer = broker.producer()
        await producer.send(unique_name, b"before close")
        await broker.close()
        assert not consumer.running
        try:
            await producer.send(unique_name, b"after close")
        except msgkit.ClosedError as exc:
            assert "closed" in str(exc)
        else:
            raise AssertionError("send on a closed broker did not raise ClosedError")
