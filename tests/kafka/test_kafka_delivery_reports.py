"""Counting delivery reports without a lock: a batch resolves once, after its last report,
whichever threads serve the reports; a message Kafka refuses fails the batch with the reason."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError

import msgkit
from msgkit.testing import Collector
from msgkit_kafka.publisher import _Batch


class _Record:
    def topic(self) -> str:
        return "t"


async def test_reports_from_two_threads_resolve_the_batch_after_the_last() -> None:
    per_thread = 50_000
    batch = _Batch(2 * per_thread + 1, asyncio.get_running_loop())
    start = threading.Barrier(2)

    def report(n: int) -> None:
        start.wait()
        for _ in range(n):
            batch.report(None, _Record())

    threads = [threading.Thread(target=report, args=(per_thread,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    for _ in range(3):  # the threads are done: whatever they scheduled runs in these turns
        await asyncio.sleep(0)
    assert not batch.future.done(), "resolved before its last report"
    batch.report(None, _Record())
    await asyncio.wait_for(batch.future, 5)  # a lost count would never resolve it


async def test_unsent_messages_count_and_a_failed_report_carries_the_reason() -> None:
    batch = _Batch(5, asyncio.get_running_loop())

    def poll_thread() -> None:
        batch.report(None, _Record())
        batch.report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), _Record())
        batch.report(None, _Record())

    thread = threading.Thread(target=poll_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    batch.unsent(2)  # produce() refused the last two: they will never be reported
    with pytest.raises(msgkit.PublishError) as info:
        await asyncio.wait_for(batch.future, 5)
    assert info.value.reason and "too large" in info.value.reason.lower()


async def test_a_message_kafka_refuses_fails_the_send_and_the_producer_goes_on(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    got = Collector()
    await kafka.consumer(unique_name, group="g").start(got)
    small: dict[str, Any] = {"message.max.bytes": 1000}
    producer = kafka.producer(**small)
    with pytest.raises(msgkit.PublishError) as info:
        await producer.send_many(unique_name, [b"a", b"b", b"x" * 5000, b"c"])
    assert info.value.reason and "too large" in info.value.reason.lower()
    await producer.send(unique_name, b"after")
    received = await got.wait_for(3)
    assert {m.value for m in received} == {b"a", b"b", b"after"}  # the rest was never sent
