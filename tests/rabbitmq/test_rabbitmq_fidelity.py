"""A message from another AMQP client keeps its standard properties and typed headers through
the handler, a retry copy (delayed too), the dead letter and a replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika

import msgkit
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import Collector

SENT_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PROPERTIES: dict[str, Any] = {"correlation_id": "corr-1", "reply_to": "billing.replies", "type": "order",
              "app_id": "billing-java", "content_type": "application/json",
              "content_encoding": "gzip", "priority": 5}
HEADERS: dict[str, Any] = {
    "int": 5, "big": 1 << 40, "flag": True, "half": 0.5, "price": Decimal("9.99"),
    "when": SENT_AT, "bytes": bytearray(b"\xff\x00"), "none": None, "text": "ünï",
    "table": {"a": 1, "nested": {"b": [1, "x", bytearray(b"\xfe")]}}, "array": [1, "two", None],
}
SHOWN = {**HEADERS, "bytes": b"\xff\x00", "table": {"a": 1, "nested": {"b": [1, "x", b"\xfe"]}}}
"""What the handler sees: AMQP byte arrays as `bytes`, everything else as the client typed it."""
KEY = "orders.eu"


async def publish_foreign(amqp_url: str, topic: str) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topic, ensure=True)
        await exchange.publish(
            aio_pika.Message(b"\x1f\x8b gzip body", headers=HEADERS, timestamp=SENT_AT,
                             message_id="java-1", delivery_mode=2, **PROPERTIES),
            routing_key=KEY,
        )


def user_headers(msg: msgkit.Message) -> dict[str, Any]:
    return {k: v for k, v in msg.headers.items() if not k.startswith("msgkit-")}


def check(msg: msgkit.Message, where: str) -> None:
    assert (msg.id, msg.key, msg.value) == ("java-1", KEY, b"\x1f\x8b gzip body"), where
    assert dict(msg.properties) == {**PROPERTIES, "timestamp": SENT_AT}, where
    assert msg.timestamp == SENT_AT.timestamp(), where
    assert user_headers(msg) == SHOWN, where
    native = msg.native
    assert (native.reply_to, native.correlation_id, native.content_encoding) == (
        "billing.replies", "corr-1", "gzip"), where
    assert isinstance(native.headers["int"], int) and isinstance(native.headers["half"], float)


async def test_a_foreign_message_keeps_properties_and_typed_headers_through_every_hop(
    rabbit: msgkit.Broker, amqp_url: str, unique_name: str
) -> None:
    broken = True
    tries = Collector(fail=lambda _: broken)
    policy = msgkit.FailurePolicy(delays=(0.0, 0.2), max_attempts=3)
    await rabbit.consumer(unique_name, group="g", failure=policy).start(tries)
    await publish_foreign(amqp_url, unique_name)
    dlq = DeadLetterQueue(rabbit, unique_name, "g", idle=1.0)
    letters: list[msgkit.Message] = []
    while not letters:
        letters = await asyncio.wait_for(dlq.messages(), 30)
    [letter] = letters
    assert [m.attempt for m in tries.failures] == [1, 2, 3]
    for msg in tries.failures:
        check(msg, f"attempt {msg.attempt}")
    check(letter, "dead letter")
    assert msg.content_type == "application/json", "the property stands in for msgkit's header"
    broken = False
    assert await dlq.replay() == 1
    [replayed] = await tries.wait_for(1, timeout=30)
    check(replayed, "replay")
    assert replayed.attempt == 1


async def test_bytes_keys_and_header_values_keep_their_type_on_rabbitmq(
    rabbit: msgkit.Broker, unique_name: str
) -> None:
    got = Collector()
    await rabbit.consumer(unique_name, group="g").start(got)
    await rabbit.producer().send(unique_name, b"x", key=b"\xffk" * 200,
                                 headers={"utf8-bytes": b"abc", "text": "abc"})
    [msg] = await got.wait_for(1, timeout=30)
    assert msg.key == b"\xffk" * 200, "a long binary key travels whole in a header"
    assert msg.headers["utf8-bytes"] == b"abc" and msg.headers["text"] == "abc"
