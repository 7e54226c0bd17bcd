"""The FastAPI example as a real server process (uvicorn) on each broker: an HTTP request
publishes, the app's own subscriber receives it, and shutdown drains and exits cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from msgkit.testing import eventually
from msgkit.testing.system import free_port

WAIT = 60.0


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.shop_api:app",
                             "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def post(port: int, path: str, body: dict[str, object]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status), json.loads(answer.read())


def up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("backend", ["kafka", "amqp"])
async def test_a_request_publishes_and_the_apps_subscriber_receives_it(
    backend: str, unique_name: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    url = str(request.getfixturevalue(f"{backend}_url"))
    receipts, port = tmp_path / "receipts", free_port()
    env = {**os.environ, "MSGKIT_URL": url, "SHOP_TOPIC": unique_name,
           "SHOP_RECEIPTS": str(receipts)}
    server = start_server(env, port)
    try:
        deadline = time.monotonic() + WAIT
        while not await asyncio.to_thread(up, port):
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the server did not start"
            await asyncio.sleep(0.2)
        orders = [{"order_id": f"o-{n}", "customer": "ada", "email": f"ada{n}@example.com",
                   "amount": 10.0} for n in range(5)]
        for order in orders:
            status, answer = await asyncio.to_thread(post, port, "/orders", order)
            assert status == 200 and answer["message_id"]
        await eventually(lambda: receipts.exists() and len(receipts.read_text().splitlines()) >= 5,
                         timeout=WAIT, message="the app's subscriber received every order")
        assert sorted(line.split()[0] for line in receipts.read_text().splitlines()) == \
            [f"o-{n}" for n in range(5)]
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts the app down (its lifespan drains and closes the broker), then
        # re-raises the signal it caught: the exit is -SIGTERM.
        code = await asyncio.to_thread(server.wait, WAIT)
        output = server.stdout.read().decode()  # type: ignore[union-attr]
        assert code in (0, -signal.SIGTERM) and "Traceback" not in output, output
    finally:
        if server.poll() is None:
            server.kill()
