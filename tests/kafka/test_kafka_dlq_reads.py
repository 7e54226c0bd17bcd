"""A dead-letter read on Kafka ends at the end of each partition (librdkafka's
PARTITION_EOF), not after a quiet wait: `idle` here is far longer than the deadlines."""

from __future__ import annotations

import asyncio

import pytest

import msgkit
from msgkit.dlq import DeadLetterQueue
from msgkit.testing import eventually

LONG_IDLE = 120.0
"""A read that waited for quiet would outlast every deadline below."""


async def _dead_letter(broker: msgkit.Broker, topic: str, count: int,
                       guarantee: msgkit.Guarantee) -> msgkit.Consumer:
    async def fail(msg: msgkit.Message) -> None:
        raise ValueError(msg.value)

    consumer = broker.consumer(topic, group="g", guarantee=guarantee,
                               failure=msgkit.FailurePolicy(delays=()))
    await consumer.start(fail)
    await broker.producer().send_many(topic, [f"{n}" for n in range(count)])
    return consumer


@pytest.mark.parametrize("guarantee", [msgkit.Guarantee.AT_LEAST_ONCE,
                                       msgkit.Guarantee.EXACTLY_ONCE])
async def test_reads_end_at_the_end_of_the_dead_letters(
    kafka: msgkit.Broker, unique_name: str, guarantee: msgkit.Guarantee
) -> None:
    # Exactly-once dead letters are written in transactions: each partition ends in a
    # commit marker that no record shows, and the read must still see its end.
    consumer = await _dead_letter(kafka, unique_name, 5, guarantee)
    dlq = DeadLetterQueue(kafka, unique_name, "g", idle=LONG_IDLE)
    found: list[msgkit.Message] = []

    async def read_all() -> bool:
        found[:] = await asyncio.wait_for(dlq.messages(), 30)
        return len(found) == 5

    await eventually(read_all, timeout=90, message="the 5 dead letters read")
    assert sorted(m.text() for m in found) == [f"{n}" for n in range(5)]
    assert await asyncio.wait_for(dlq.purge(), 30) == 5
    assert await asyncio.wait_for(dlq.messages(), 30) == []  # an empty queue ends too
    await consumer.stop()
