"""Every program in examples/getting_started/ runs as the Getting started page says, on
memory://, Kafka and RabbitMQ. Each run gets a topic of its own (ORDERS_TOPIC), so messages
left on a shared broker by earlier runs never reach it."""

from __future__ import annotations

import re
import signal

from tests.docs.support import GETTING_STARTED, finish, read_until, start

TESTED = {"first_program.py", "send.py", "service.py"}


def test_every_getting_started_program_has_a_test() -> None:
    assert {p.name for p in GETTING_STARTED.glob("*.py")} == TESTED


async def test_the_first_program_prints_what_it_handled(url: str, unique_name: str) -> None:
    process = await start(GETTING_STARTED / "first_program.py", url, unique_name)
    assert await finish(process) == ["charging o-1"]


async def test_send_prints_the_message_id(url: str, unique_name: str) -> None:
    process = await start(GETTING_STARTED / "send.py", url, unique_name, "o-7")
    [line] = await finish(process)
    assert re.fullmatch(r"sent o-7 as message \S+", line), line


async def test_the_service_handles_what_send_sends_and_stops_on_sigterm(
    url: str, unique_name: str
) -> None:
    service = await start(GETTING_STARTED / "service.py", url, unique_name, merged=True)
    try:
        await read_until(service, "worker ready")
        if not url.startswith("memory:"):  # memory:// lives inside one process
            sender = await start(GETTING_STARTED / "send.py", url, unique_name, unique_name)
            await finish(sender)
            await read_until(service, f"charging {unique_name}")
        service.send_signal(signal.SIGTERM)
        await finish(service, timeout=30)
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()
