"""Fidelity: keys, values and header values reach the handler, every retry copy, the dead
letter and its replay exactly as the producer gave them, binary and null ones included."""

from __future__ import annotations

import asyncio

import pytest

import msgkit
from msgkit import headers as h
from msgkit.dlq import DeadLetterQueue
from msgkit.errors import SerializationError
from msgkit.testing.collect import Collector
from msgkit.testing.conformance.support import WAIT, fast_retries, requires

BINARY_KEY = b"\x00\x00\x00\x00\x07binkey\xff"
"""A schema-registry-framed key (magic byte, schema id) that is not UTF-8."""
BINARY = b"\xff\xfe\x00"
VALUE = b"\x00\x80\xff payload"
HEADERS: dict[str, str | bytes | None] = {"bin": BINARY, "text": "ünïcode", "none": None}


def user_headers(msg: msgkit.Message) -> dict[str, object]:
    """The user's headers (RabbitMQ sorts a table's names, so order is not compared here)."""
    return {k: v for k, v in msg.headers.items() if not k.lower().startswith(h.PREFIX)}


class FidelityContract:
    async def test_binary_key_and_header_values_reach_the_handler_byte_for_byte(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(got)
        producer = msgkit_broker.producer()
        binary = await producer.send(unique_name, VALUE, key=BINARY_KEY, headers=HEADERS)
        text = await producer.send(unique_name, b"t", key="ключ", headers={"h": "v"})
        utf8 = await producer.send(unique_name, b"u", key="ключ".encode())
        by_id = {m.id: m for m in await got.wait_for(3, timeout=WAIT)}
        msg = by_id[binary]
        assert (msg.key, msg.key_bytes, msg.value) == (BINARY_KEY, BINARY_KEY, VALUE)
        assert user_headers(msg) == HEADERS, msg.headers
        assert msg.header("bin") is None and msg.header("text") == "ünïcode"
        assert by_id[text].key == "ключ" and by_id[text].headers["h"] == "v"
        assert by_id[utf8].key == "ключ", "a bytes key that is UTF-8 arrives as text everywhere"

    async def test_retry_copies_dead_letters_and_replays_keep_key_value_and_headers(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        broken = True
        tries = Collector(fail=lambda _: broken)
        await msgkit_broker.consumer(unique_name, group="g", failure=fast_retries(3)).start(tries)
        sent = await msgkit_broker.producer().send(unique_name, VALUE, key=BINARY_KEY,
                                                   headers=HEADERS)
        dlq = DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0)
        letters: list[msgkit.Message] = []
        while not letters:
            letters = await asyncio.wait_for(dlq.messages(), WAIT)
        [letter] = letters
        assert [m.attempt for m in tries.failures] == [1, 2, 3]
        for msg in (*tries.failures, letter):
            assert (msg.id, msg.key, msg.value) == (sent, BINARY_KEY, VALUE)
            assert user_headers(msg) == HEADERS, f"attempt {msg.attempt} changed them"
        broken = False
        try:
            assert await dlq.replay() == 1
        except NotImplementedError:
            pytest.skip("the backend's publisher cannot publish to a single group")
        [replayed] = await tries.wait_for(1, timeout=WAIT)
        assert (replayed.id, replayed.key, replayed.value, replayed.attempt) == (
            sent, BINARY_KEY, VALUE, 1)
        assert user_headers(replayed) == HEADERS

    async def test_repeated_header_names_keep_every_value_in_order_across_hops(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        pairs: list[tuple[str, str | bytes | None]] = [
            ("dup", "1"), ("other", b"\xff"), ("dup", "2"), ("dup", None)]
        if not msgkit_broker.capabilities.repeated_headers:
            with pytest.raises(SerializationError, match="more than once"):
                await msgkit_broker.producer().send(unique_name, b"x", headers=pairs)
            return
        tries = Collector(fail=lambda m: m.attempt < 2)
        await msgkit_broker.consumer(unique_name, group="g", failure=fast_retries(2)).start(tries)
        await msgkit_broker.producer().send(unique_name, b"x", headers=pairs)
        [done] = await tries.wait_for(1, timeout=WAIT)
        for msg in (tries.failures[0], done):
            assert [(k, v) for k, v in msg.headers.items() if not k.startswith(h.PREFIX)] == pairs
            assert msg.headers.getall("dup") == ["1", "2", None] and msg.headers["dup"] == "1"

    async def test_headers_other_than_text_bytes_or_none_are_refused_before_sending(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        producer = msgkit_broker.producer()
        for bad in ({"n": 5}, {"n": 1.5}, [("n",)], "n=1"):
            with pytest.raises(SerializationError, match="header"):
                await producer.send(unique_name, b"x", headers=bad)  # type: ignore[arg-type]
        with pytest.raises(SerializationError, match="key must be str or bytes"):
            await producer.send(unique_name, b"x", key=5)  # type: ignore[arg-type]
        requires(msgkit_broker, "consumer_groups")
        got = Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(got)
        await producer.send(unique_name, b"ok")
        [msg] = await asyncio.wait_for(got.wait_for(1, timeout=WAIT), WAIT)
        assert msg.value == b"ok", "nothing of the refused sends went out"
