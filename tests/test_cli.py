"""`msgkit dlq` as a user runs it: a separate process against a real broker."""

import asyncio
import subprocess
import sys

import msgkit
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import eventually


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "msgkit.cli", "dlq", *args],
                          capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_dlq_commands_list_show_replay_and_purge(amqp_url: str, unique_name: str) -> None:
    async with msgkit.connect(amqp_url) as broker:
        failing = {"a", "b"}
        handled: list[str] = []

        async def handler(msg: msgkit.Message) -> None:
            if msg.key in failing:
                raise LookupError(f"no customer for {msg.key}")
            handled.append(msg.id)

        await broker.consumer(unique_name, group="g",
                              failure=msgkit.FailurePolicy(delays=())).start(handler)
        producer = broker.producer()
        ids = [await producer.send(unique_name, b"{}", key=k) for k in "ab"]
        dlq = DeadLetterQueue(broker, unique_name, "g", idle=1.0)

        async def both_dead() -> None:
            while len(await dlq.messages()) < 2:
                pass

        await asyncio.wait_for(both_dead(), 60)
        failing.clear()

        common = (unique_name, "--group", "g", "--url", amqp_url)
        listing = await asyncio.to_thread(_cli, "list", *common)
        assert all(i in listing for i in ids) and "LookupError" in listing
        assert "guest:guest" not in listing
        shown = await asyncio.to_thread(_cli, "show", *common[:3], ids[0], "--url", amqp_url)
        assert "no customer for a" in shown and "Traceback" in shown
        replayed = await asyncio.to_thread(_cli, "replay", *common, "--key", "a")
        assert "replayed 1 message(s)" in replayed
        purged = await asyncio.to_thread(_cli, "purge", *common, "--yes")
        assert "purged 1 message(s)" in purged
        await eventually(lambda: bool(handled), timeout=30, message="the replayed message handled")
        assert handled == [ids[0]]
        assert await dlq.messages() == []
