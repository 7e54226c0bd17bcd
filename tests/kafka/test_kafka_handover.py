"""The consumer thread's hand-over to the event loop (the inbox): no broker needed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from confluent_kafka import Message as Record

from msgkit.backend import SubscriptionSpec
from msgkit.guarantee import Guarantee
from msgkit_kafka.subscription import KafkaSubscription

TOPIC = "t"


def records(first: int, n: int) -> list[Record]:
    return [Record(topic=TOPIC, partition=0, offset=i, key=None, value=b"v%d" % i)
            for i in range(first, first + n)]


@pytest.fixture
async def sub() -> AsyncIterator[KafkaSubscription]:
    """A subscription whose consumer thread never starts: the test plays the thread."""
    spec = SubscriptionSpec(TOPIC, "g", prefetch=100, start="earliest",
                            guarantee=Guarantee.AT_LEAST_ONCE)
    sub = KafkaSubscription(spec, {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
                            retry_topic=None, retry_publisher=None, limit=1024, timeout=1,
                            close_timeout=1, tansu=None)
    sub._poller.tracker.assign([(TOPIC, 0)])
    yield sub
    sub._poller.consumer.close()


def hand(sub: KafkaSubscription, batch: list[Record]) -> None:
    """What the consumer thread does with a batch, from another thread."""
    thread = threading.Thread(target=sub._poller._hand, args=(batch, TOPIC))
    thread.start()
    thread.join()


async def test_records_handed_over_while_a_fetch_waits_wake_it(sub: KafkaSubscription) -> None:
    fetching = asyncio.ensure_future(sub.fetch(100))
    await asyncio.sleep(0)  # the fetch found nothing and waits
    assert sub.waiters
    hand(sub, records(0, 3))
    got = await asyncio.wait_for(fetching, 5)
    assert [d.message.value for d in got] == [b"v0", b"v1", b"v2"]


async def test_records_handed_over_between_fetches_are_taken_without_a_wake_up(
    sub: KafkaSubscription,
) -> None:
    sub._poller._hand(records(0, 2), TOPIC)
    assert not sub.waiters and list(sub.inbox)  # nobody to wake: it waits in the inbox
    got = await asyncio.wait_for(sub.fetch(100), 5)
    assert [d.message.value for d in got] == [b"v0", b"v1"]


async def test_end_of_partitions_comes_after_the_records_handed_over_before_it(
    sub: KafkaSubscription,
) -> None:
    sub._poller._hand(records(0, 2), TOPIC)
    sub._poller._post(None)  # every partition read to its end
    got = await asyncio.wait_for(sub.fetch(100), 5)
    assert len(got) == 2
    assert await asyncio.wait_for(sub.fetch(100), 5) == ()
    sub._poller._hand(records(2, 1), TOPIC)  # more arrived after the end
    got = await asyncio.wait_for(sub.fetch(100), 5)
    assert [d.message.value for d in got] == [b"v2"]


async def test_thread_stops_taking_when_only_a_small_batch_would_fit(
    sub: KafkaSubscription,
) -> None:
    poller = sub._poller  # limit 1024: drained to 512, at least 256 records per hand-over
    poller.sent, sub.finished = 700, 0
    poller._flow()
    assert not poller.blocked
    poller.sent = 800  # 224 would fit: not worth a hand-over while the loop is busy
    poller._flow()
    assert poller.blocked
    sub.finished = 290  # 510 outstanding: below the low-water mark
    poller._flow()
    assert not poller.blocked
