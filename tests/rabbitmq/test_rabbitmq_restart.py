"""RabbitMQ adapter: the broker restarts (`rabbitmqctl stop_app` / `start_app`) while
messages are published and consumed; nothing confirmed is lost and everyone resumes alone."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

import msgkit
from msgkit.testing import Collector, eventually


async def _rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {err.decode()}"


def _local_server(url: str) -> bool:
    return shutil.which("rabbitmqctl") is not None and \
        urlsplit(url).hostname in ("127.0.0.1", "localhost")


async def test_broker_restart_loses_no_confirmed_message(
    amqp_url: str, unique_name: str, report: Callable[[str], None]
) -> None:
    if not _local_server(amqp_url):
        pytest.skip("needs the local RabbitMQ server and rabbitmqctl to restart it")
    got, private = Collector(), Collector()
    confirmed: list[str] = []
    stop = asyncio.Event()
    async with msgkit.connect(amqp_url, reconnect_interval=0.5) as consumers, \
            msgkit.connect(amqp_url, reconnect_interval=0.5) as producers:  # publish_timeout 30 s
        consumer = consumers.consumer(unique_name, group="g", concurrency=4)
        await consumer.start(got)
        await consumers.consumer(unique_name).start(private)  # its queue dies with the node
        producer = producers.producer()
        impatient = producers.producer(publish_timeout=1.0)
        await impatient.send_many(unique_name, [b"warm-up"])  # its channel is open

        async def publish() -> None:  # pipelined batches: many sends in flight at the drop
            n = 0
            while not stop.is_set():
                confirmed.extend(await producer.send_many(
                    unique_name, [f"{n + i}" for i in range(200)], key=lambda v: f"k{int(v) % 4}"))
                n += 200

        publishing = asyncio.create_task(publish())
        try:
            await eventually(lambda: len(got.messages) >= 20, message="flowing before restart")
            await _rabbitmqctl("stop_app")
            try:
                at_stop = len(confirmed)
                started = time.monotonic()
                with pytest.raises(msgkit.PublishError):
                    await impatient.send(unique_name, b"during the outage")
                assert time.monotonic() - started < 5, "send did not fail within its bound"
            finally:
                await _rabbitmqctl("start_app")
            restarted = len(got.messages)
            back = time.monotonic()
            # Sends in flight at the drop must not wait out publish_timeout (30 s).
            await eventually(lambda: len(confirmed) >= at_stop + 400, timeout=15,
                             message="publishing resumed by itself")
            resumed = time.monotonic() - back
            await eventually(lambda: len(got.messages) >= restarted + 20, timeout=60,
                             message="consuming resumed by itself")
            private_before = len(private.messages)
            await eventually(lambda: len(private.messages) >= private_before + 20, timeout=60,
                             message="the private queue was declared again and consumed")
        finally:
            stop.set()
            await asyncio.wait_for(publishing, 60)
        await eventually(lambda: set(confirmed) <= got.ids, timeout=60,
                         message="every confirmed message consumed")
        assert consumer.running
    report(f"rabbitmq restart: {len(confirmed)} confirmed, 0 lost; the batches in flight "
          f"confirmed {resumed:.2f}s after start_app")
