"""The README's programs (its python blocks that call `asyncio.run`) run as written."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import msgkit

README = Path(__file__).resolve().parent.parent / "README.md"
PROGRAMS: list[str] = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
            if "asyncio.run(" in block]


def program(marker: str) -> str:
    [found] = [block for block in PROGRAMS if marker in block]
    return found


def test_the_readme_has_the_programs_these_tests_run() -> None:
    assert len(PROGRAMS) == 2, "a new README program needs a test here"


async def run(source: str, url: str | None) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "MSGKIT_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    if url is not None:
        env["MSGKIT_URL"] = url
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", source, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def test_the_first_example_prints_what_it_handled() -> None:
    process = await run(program("async def main()"), url=None)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    assert out.decode().splitlines() == ["charging o-1"]


async def test_the_service_example_handles_messages_and_stops_on_sigterm(
    amqp_url: str, unique_name: str
) -> None:
    process = await run(program("broker.serve()"), url=amqp_url)
    stdout = process.stdout
    assert stdout is not None
    try:
        async with msgkit.connect(amqp_url) as broker:
            producer = broker.producer(required_groups=("payments",))
            await producer.send("orders", {"order_id": unique_name, "amount": 1.0})
        async def handled() -> None:  # (a queue kept from an earlier run may hold others)
            while (line := await stdout.readline()) != f"charging {unique_name}\n".encode():
                assert line, "the service exited"

        await asyncio.wait_for(handled(), 60)
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(stdout.read(), 30)
        assert await process.wait() == 0, rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
