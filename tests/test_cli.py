"""`msgkit dlq` as a user runs it: a separate process against a real broker."""

import asyncio
import re
import subprocess
import sys
from urllib.parse import urlsplit

import aio_pika
import pytest

import msgkit
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import Collector, eventually


def _cli(*args: str, status: int = 0) -> str:
    return _msgkit("dlq", *args, status=status)


def _msgkit(*args: str, status: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "msgkit.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == status, done.stdout + done.stderr
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

        # A URL naming several nodes, the first of them down, works as one node does.
        netloc = urlsplit(amqp_url).netloc
        nodes = amqp_url.replace(netloc, netloc.replace("@", "@127.0.0.1:1,", 1), 1)
        common = (unique_name, "--group", "g", "--url", nodes, "--idle", "0.5")
        listing = await asyncio.to_thread(_cli, "list", *common)
        assert all(i in listing for i in ids) and "LookupError" in listing
        assert "guest:guest" not in listing
        shown = await asyncio.to_thread(_cli, "show", *common[:3], ids[0], *common[3:])
        assert "no customer for a" in shown and "Traceback" in shown
        ambiguous = await asyncio.to_thread(_cli, "show", *common[:3], ids[0][:10], "--url",
                                            amqp_url, "--idle", "0.5", status=1)
        assert "2 dead letters match" in ambiguous, "a prefix names one dead letter, or none"
        assert re.search(r"msgkit-dlq-last-failure-at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown)
        replayed = await asyncio.to_thread(_cli, "replay", *common, "--key", "a")
        assert "replayed 1 message(s)" in replayed
        purged = await asyncio.to_thread(_cli, "purge", *common, "--yes")
        assert "purged 1 message(s)" in purged
        await eventually(lambda: bool(handled), timeout=30, message="the replayed message handled")
        assert handled == [ids[0]]
        assert await dlq.messages() == []


@pytest.mark.parametrize("command", ["list", "show", "replay", "purge"])
async def test_dlq_commands_on_a_mistyped_group_fail_and_create_nothing_on_rabbitmq(
    amqp_url: str, unique_name: str, command: str
) -> None:
    async with msgkit.connect(amqp_url) as broker:  # the topic and a real group exist
        await broker.consumer(unique_name, group="g").start(Collector())
    extra = {"show": ["some-id"], "purge": ["--yes"]}.get(command, [])
    out = await asyncio.to_thread(_cli, command, unique_name, *extra[:1], "--group", "typo",
                                  "--url", amqp_url, *extra[1:], status=1)
    assert "no dead letters of" in out and "typo" in out
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for queue in (f"{unique_name}.typo.dlq.dlq", f"{unique_name}.typo"):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(queue, passive=True)
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_exchange(f"{unique_name}.typo.dlq", passive=True)


async def test_dlq_list_on_a_mistyped_topic_fails_and_creates_no_kafka_topic(
    kafka_url: str, unique_name: str
) -> None:
    out = await asyncio.to_thread(_cli, "list", unique_name, "--group", "g", "--url", kafka_url,
                                  status=1)
    assert "no dead letters of" in out
    async with msgkit.connect(kafka_url) as broker:
        topics = await asyncio.to_thread(lambda: broker.native.list_topics(timeout=10).topics)
    assert not [t for t in topics if t.startswith(unique_name)], "a read created topics"


def test_dlq_list_on_memory_says_the_dead_letters_live_in_another_process() -> None:
    out = _cli("list", "orders", "--group", "g", "--url", "memory://", status=1)
    assert "inside the process" in out


@pytest.mark.parametrize("backend", ["kafka", "amqp"])
async def test_lag_shows_what_waits_for_each_group(
    backend: str, unique_name: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{backend}_url"))
    async with msgkit.connect(url) as broker:
        await broker.producer(required_groups=("g",)).send_many(unique_name, [b"x"] * 5)
    out = await asyncio.to_thread(_msgkit, "lag", unique_name, "-g", "g", "-g", "unknown",
                                  "--url", url)
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")]
    waiting = [row for row in rows if row[0] == "g"]
    assert waiting and waiting[-1][-1] == "5", out  # the total (Kafka) or the queue (RabbitMQ)
    if backend == "amqp":
        assert ["unknown", "no such topic or group", "-"] in rows, out
