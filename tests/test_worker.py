"""`msgkit run`: readiness before, during and after subscription and while draining, and a
SIGTERM in the middle of a burst that loses nothing and exits 0 (a real process, real
brokers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import msgkit
from msgkit.testing import Collector, Holding, eventually
from msgkit.testing.system import free_port
from msgkit.worker import Worker

WAIT = 60.0


def get(port: int, path: str) -> tuple[int | None, bytes]:
    """The HTTP status and body of `path`, or (None, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as error:
        return int(error.code), b""
    except OSError:
        return None, b""


async def status(port: int, path: str) -> int | None:
    return (await asyncio.to_thread(get, port, path))[0]


def start_worker(env: dict[str, str], port: int, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """`msgkit run` in a session of its own (so its worker processes can be killed with it),
    writing to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "msgkit.cli", "run",
                                 "examples.payments_service:broker", "--port", str(port), *options],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_all(worker: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


async def until_status(port: int, path: str, want: int) -> None:
    async def answers() -> bool:
        return await status(port, path) == want

    await eventually(answers, timeout=WAIT, interval=0.1, message=f"{path} answering {want}")


async def test_ready_only_between_subscribing_and_draining(unique_name: str) -> None:
    broker = msgkit.connect(f"memory://{unique_name}")
    held = Holding(lambda msg: True)
    broker.subscriber(unique_name, group="g")(held)
    worker = Worker(broker, port=0, drain_timeout=WAIT)
    assert not worker.ready()
    running = asyncio.ensure_future(worker.run())
    await eventually(lambda: worker.subscribed, timeout=WAIT)
    assert worker.health is not None
    port = worker.health.port
    assert worker.ready() and await status(port, "/readyz") == 200
    await broker.producer().send(unique_name, b"slow")
    await eventually(lambda: bool(held.started), timeout=WAIT)
    worker.stop()
    await eventually(lambda: worker.draining, timeout=WAIT)
    assert not worker.ready() and await status(port, "/readyz") == 503
    assert await status(port, "/healthz") == 200
    held.release()
    assert await asyncio.wait_for(running, WAIT) == 0


@pytest.mark.parametrize("backend", ["kafka", "amqp"])
async def test_sigterm_mid_burst_loses_nothing_and_exits_0(
    backend: str, unique_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{backend}_url"))
    ledger, port = tmp_path / "ledger", free_port()
    env = {**os.environ, "MSGKIT_URL": url, "PAYMENTS_TOPIC": unique_name,
           "PAYMENTS_LEDGER": str(ledger), "PAYMENTS_WORK_SECONDS": "0.3"}
    log = tmp_path / "worker.log"
    worker = start_worker(env, port, log)
    try:
        await until_status(port, "/readyz", 200)
        async with msgkit.connect(url) as broker:
            ids = await broker.producer(required_groups=("payments",)).send_many(
                unique_name, [b"order-%d" % n for n in range(200)])

            def charged() -> set[str]:
                return set(ledger.read_text().split()) if ledger.exists() else set()

            await eventually(lambda: len(charged()) >= 20, timeout=WAIT, message="charging")
            _, metrics = await asyncio.to_thread(get, port, "/metrics")
            assert b"msgkit_handled_messages_total" in metrics
            worker.send_signal(signal.SIGTERM)
            answers = []
            deadline = time.monotonic() + WAIT
            while worker.poll() is None and time.monotonic() < deadline:
                answers.append(await status(port, "/readyz"))
                await asyncio.sleep(0.02)
            assert worker.wait(WAIT) == 0, log.read_text()
            assert 503 in answers, answers  # not ready while draining
            # What the worker did not charge is still with the broker: another charges it.
            rest = Collector()
            await broker.consumer(unique_name, group="payments").start(rest)
            await eventually(lambda: charged() | rest.ids >= set(ids), timeout=WAIT,
                             message="every order charged by the worker or after it")
            # What the worker finished while draining was acknowledged: not charged twice.
            assert not charged() & rest.ids
        print(f"\n    {backend}: {len(charged())} charged before SIGTERM's drain ended, "
              f"{len(rest.ids)} after; 200 sent")
    finally:
        kill_all(worker)


async def test_workers_run_as_processes_of_their_own_and_stop_together(
    amqp_url: str, unique_name: str, tmp_path: Path,
) -> None:
    port, log = free_port(span=2), tmp_path / "worker.log"
    env = {**os.environ, "MSGKIT_URL": amqp_url, "PAYMENTS_TOPIC": unique_name,
           "PAYMENTS_LEDGER": str(tmp_path / "ledger")}
    parent = start_worker(env, port, log, "--workers", "2")
    try:
        try:
            await until_status(port, "/readyz", 200)
            await until_status(port + 1, "/readyz", 200)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the workers wrote:\n{log.read_text()}") from None
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(parent.wait, WAIT) == 0, log.read_text()
        assert await status(port, "/healthz") is None and await status(port + 1, "/healthz") is None
    finally:
        kill_all(parent)
