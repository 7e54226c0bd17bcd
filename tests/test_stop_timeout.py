"""The stop timeout's edges on the memory broker: a handler that swallows cancellation, the
worker's drain, and the setting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import msgkit
from msgkit.dedup import Dedup
from msgkit.testing import Collector, Holding, eventually
from msgkit.worker import Worker
from msgkit_memory.backend import MemorySubscription

WAIT = 30.0


async def test_stop_returns_when_a_handler_ignores_cancellation(
    unique_name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("msgkit.consumer.CANCEL_GRACE", 0.2)
    done = asyncio.Event()

    async def stubborn(msg: msgkit.Message) -> None:
        while not done.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # what a handler must not do
                await done.wait()

    async with msgkit.connect(f"memory://{unique_name}") as broker:
        consumer = broker.consumer(unique_name, group="g")
        await consumer.start(stubborn)
        try:
            await broker.producer().send(unique_name, b"x")
            await eventually(lambda: consumer.in_flight == 1, timeout=WAIT)
            await asyncio.wait_for(consumer.stop(timeout=0.1), WAIT)
            assert consumer.running, "the consumer that would not stop is left running"
            assert "ignored cancellation" in caplog.text
            await asyncio.wait_for(consumer.stop(), 1)  # a second stop() returns at once
        finally:
            done.set()  # else the loop's own shutdown would wait on the handler forever
        await asyncio.wait_for(consumer.wait(), WAIT)


async def test_two_stops_at_once_cancel_the_handler_once(unique_name: str) -> None:
    """The second stop's timeout passes while the first one's cancelled handler cleans up:
    it must not cut that cleanup (which releases claims, rolls back)."""
    cleans_up = Holding(lambda msg: True, cleanup=0.2)
    async with msgkit.connect(f"memory://{unique_name}") as broker:
        consumer = broker.consumer(unique_name, group="g")
        await consumer.start(cleans_up)
        await broker.producer().send(unique_name, b"x")
        await eventually(lambda: bool(cleans_up.started), timeout=WAIT)
        await asyncio.wait_for(asyncio.gather(consumer.stop(timeout=0.1),
                                              consumer.stop(timeout=0.15)), WAIT)
        assert cleans_up.cancelled == [b"x"], "the cleanup was cut"


async def test_run_returns_normally_after_a_stop_past_its_timeout(unique_name: str) -> None:
    async with msgkit.connect(f"memory://{unique_name}") as broker:
        consumer = broker.consumer(unique_name, group="g")
        hanging = Holding(lambda msg: True)
        running = asyncio.ensure_future(consumer.run(hanging))
        await broker.producer().send(unique_name, b"x")
        await eventually(lambda: bool(hanging.started), timeout=WAIT)
        await consumer.stop(timeout=0.1)
        await asyncio.wait_for(running, WAIT)  # raised CancelledError when the cut reached it


async def test_the_timeout_does_not_cut_the_subscription_closing(
    unique_name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handlers finished in time; closing the subscription (as Kafka leaves its group)
    takes longer than the timeout: it is not cancelled, and what was fetched and not
    handled goes to the next member."""
    closing = MemorySubscription.close

    async def slow_close(self: MemorySubscription) -> None:
        await asyncio.sleep(0.3)
        await closing(self)

    monkeypatch.setattr(MemorySubscription, "close", slow_close)
    handled = Collector()

    async def brief(msg: msgkit.Message) -> None:
        await asyncio.sleep(0.05)
        await handled(msg)

    async with msgkit.connect(f"memory://{unique_name}") as broker:
        consumer = broker.consumer(unique_name, group="g", prefetch=10)
        await consumer.start(brief)
        ids = await broker.producer().send_many(unique_name, [b"x"] * 5)
        await eventually(lambda: consumer.in_flight == 5, timeout=WAIT)
        await consumer.stop(timeout=0.2)
        assert "cancelling" not in caplog.text and not consumer.running
        monkeypatch.setattr(MemorySubscription, "close", closing)
        rest = Collector()
        await broker.consumer(unique_name, group="g").start(rest)
        await eventually(lambda: handled.ids | rest.ids == set(ids), timeout=WAIT,
                         message="the unhandled messages reach the next member")


async def test_a_cut_off_message_releases_its_idempotency_claim(unique_name: str) -> None:
    """Its redelivery runs at once, not after the lease (an hour here) runs out."""
    dedup = Dedup("memory://", lease=3600.0)
    async with msgkit.connect(f"memory://{unique_name}") as broker:
        consumer = broker.consumer(unique_name, group="g", dedup=dedup)
        await consumer.start(Holding(lambda msg: True))
        sent = await broker.producer().send(unique_name, b"x", idempotency_key="k")
        await eventually(lambda: consumer.in_flight == 1, timeout=WAIT)
        await consumer.stop(timeout=0.1)
        rest = Collector()
        await broker.consumer(unique_name, group="g", dedup=dedup).start(rest)
        await eventually(lambda: rest.ids == {sent}, timeout=WAIT, message="handled again")


async def test_worker_drain_cancels_a_hanging_handler_and_exits_0(unique_name: str) -> None:
    broker = msgkit.connect(f"memory://{unique_name}")
    hangs = Holding(lambda msg: True)
    broker.subscriber(unique_name, group="g")(hangs)
    worker = Worker(broker, drain_timeout=0.1)
    running = asyncio.ensure_future(worker.run())
    await eventually(lambda: worker.subscribed, timeout=WAIT)
    await broker.producer().send(unique_name, b"x")
    await eventually(lambda: bool(hangs.started), timeout=WAIT)
    worker.stop()
    assert await asyncio.wait_for(running, WAIT) == 0
    assert hangs.cancelled == [b"x"]


STUBBORN_SERVICE = """
import asyncio, contextlib, msgkit

broker = msgkit.connect("memory://stubborn")


@broker.subscriber("orders", group="g")
async def stubborn(msg: msgkit.Message) -> None:
    print("handling", flush=True)
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


async def start() -> msgkit.Broker:
    started = await connect()
    await broker.producer().send("orders", b"x")
    return started

connect, broker.start = broker.start, start
"""


def test_a_worker_whose_handler_ignores_cancellation_exits_1_not_never(tmp_path: Path) -> None:
    (tmp_path / "stubborn_service.py").write_text(STUBBORN_SERVICE)
    worker = subprocess.Popen(
        [sys.executable, "-m", "msgkit.cli", "run", "stubborn_service:broker", "--drain-timeout", "0.1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert worker.stdout is not None
    try:
        for line in worker.stdout:  # the worker's log lines, then the handler's
            if line == b"handling\n":
                break
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(WAIT)
        output = worker.stdout.read().decode()
        assert code == 1, output
        assert "ignored cancellation" in output
    finally:
        worker.kill()
        worker.stdout.close()


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGKIT_STOP_TIMEOUT", "inf")
    assert math.isinf(msgkit.Settings().stop_timeout)
    monkeypatch.setenv("MSGKIT_STOP_TIMEOUT", "0")
    with pytest.raises(ValueError, match="stop_timeout"):
        msgkit.Settings()


async def test_a_graceful_stop_within_the_timeout_logs_nothing(
    unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with msgkit.connect(f"memory://{unique_name}") as broker:
        consumer = broker.consumer(unique_name, group="g")
        await consumer.start(Collector())
        await consumer.stop(timeout=WAIT)
    assert not caplog.records
