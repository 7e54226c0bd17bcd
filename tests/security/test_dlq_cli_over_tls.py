"""`msgkit dlq` over the secure connections, as over plain ones: the CLI lists and replays
dead letters with the SASL_SSL or amqps:// URL and never prints the password."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import msgkit
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import eventually
from msgkit_kafka.secure_kafka import SecureKafka
from msgkit_rabbitmq.secure_rabbit import SecureRabbit

WAIT = 60.0


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "msgkit.cli", "dlq", *args],
                          capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(params=["kafka-sasl-ssl", "amqps"])
def secure(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(a URL of alice's, her password)"""
    if request.param == "amqps":
        rabbit: SecureRabbit = request.getfixturevalue("secure_rabbit")
        return str(request.getfixturevalue("amqps_url")), rabbit.passwords["alice"]
    kafka: SecureKafka = request.getfixturevalue("secure_kafka")
    return str(request.getfixturevalue("kafka_sasl_url")), kafka.passwords["alice"]


async def test_dlq_cli_lists_and_replays_over_the_secure_connection(
    secure: tuple[str, str], unique_name: str,
) -> None:
    url, password = secure
    handled: list[str] = []
    broken = True

    async def handle(msg: msgkit.Message) -> None:
        if broken:
            raise LookupError("no such customer")
        handled.append(msg.id)

    async with msgkit.connect(url) as broker:
        await broker.consumer(unique_name, group="g",
                              failure=msgkit.FailurePolicy(delays=())).start(handle)
        ids = [await broker.producer().send(unique_name, b"{}", key=k) for k in "ab"]
        dlq = DeadLetterQueue(broker, unique_name, "g", idle=1.0)
        letters: list[msgkit.Message] = []

        async def read() -> None:
            while len(letters) < 2:
                letters[:] = await dlq.messages()

        await asyncio.wait_for(read(), WAIT)
        common = (unique_name, "--group", "g", "--url", url, "--idle", "0.5")
        listing = await asyncio.to_thread(cli, "list", *common)
        assert all(i in listing for i in ids) and "LookupError" in listing
        broken = False
        replayed = await asyncio.to_thread(cli, "replay", *common)
        await eventually(lambda: sorted(handled) == sorted(ids), timeout=WAIT)
    assert password not in listing + replayed
