"""Deduplication through a real consumer on every broker backend (`msgkit_url`)."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

import msgkit
from msgkit.consumer import DLQ_GROUP
from msgkit.dedup import (
    ClaimResult,
    Dedup,
    DedupClaim,
    IdempotencyStore,
    Scope,
    StoreUnavailableError,
    open_store,
)
from msgkit.dedup.conformance import unreachable_url_like
from msgkit.dedup.deduplicator import COMPLETE_ATTEMPTS
from msgkit.message import Message
from msgkit.testing.collect import Collector, eventually
from msgkit.testing.conformance.support import fast_retries, requires

WAIT = 30.0
"""Deadline for anything crossing a real broker (group joins, redeliveries)."""


class Crash(RuntimeError):
    """The consumer 'dies' here: the message stays unacknowledged."""


class _CrashingClaim:
    """Marks the key done, then fails before the consumer can acknowledge the message."""

    def __init__(self, claim: DedupClaim) -> None:
        self._claim = claim

    async def complete(self) -> None:
        await self._claim.complete()
        raise Crash("crashed after marking the key done, before the ack")

    async def release(self) -> None:
        await self._claim.release()


class Watched:
    """A `Dedup` that counts the deliveries it settled as duplicates.

    With `crash_after_complete`, every claim it hands out crashes right after `complete()`.
    """

    def __init__(self, dedup: Dedup, *, crash_after_complete: bool = False) -> None:
        self.dedup = dedup
        self.crash_after_complete = crash_after_complete
        self.skipped: list[Message] = []

    async def claim(self, msg: Message, group: str | None) -> DedupClaim | _CrashingClaim | None:
        claim = await self.dedup.claim(msg, group)
        if claim is None:
            self.skipped.append(msg)
            return None
        return _CrashingClaim(claim) if self.crash_after_complete else claim

    async def close(self) -> None:
        await self.dedup.close()


@pytest.fixture
async def sqlite_dedup(sqlite_store_url: str, msgkit_broker: msgkit.Broker) -> AsyncIterator[Dedup]:
    async with Dedup(sqlite_store_url, lease=30) as dedup:
        yield dedup
        await msgkit_broker.close()  # consumers stop before their store closes


async def test_same_message_published_many_times_runs_once(
    msgkit_broker: msgkit.Broker, unique_name: str, store_url: str
) -> None:
    async with Dedup(store_url) as dedup:
        watched = Watched(dedup)
        got = Collector()
        consumer = msgkit_broker.consumer(unique_name, group="g", dedup=watched)
        await consumer.start(got)
        producer = msgkit_broker.producer()
        for key in ["pay-1"] * 5 + ["pay-2"] * 3 + ["pay-1"]:
            await producer.send(unique_name, key, key="orders", idempotency_key=key)
        await eventually(lambda: len(got.messages) + len(watched.skipped) == 9, timeout=WAIT,
                         message="every copy settled")
        assert sorted(m.idempotency_key or "" for m in got.messages) == ["pay-1", "pay-2"]
        await consumer.stop()


async def test_two_groups_each_run_once(
    msgkit_broker: msgkit.Broker, unique_name: str, sqlite_dedup: Dedup
) -> None:
    watched = Watched(sqlite_dedup)
    billing, shipping = Collector(), Collector()
    await msgkit_broker.consumer(unique_name, group="billing", dedup=watched).start(billing)
    await msgkit_broker.consumer(unique_name, group="shipping", dedup=watched).start(shipping)
    producer = msgkit_broker.producer()
    for _ in range(3):
        await producer.send(unique_name, b"order", key="o", idempotency_key="order-7")
    await eventually(
        lambda: len(billing.messages) + len(shipping.messages) + len(watched.skipped) == 6,
        timeout=WAIT, message="every copy settled in both groups",
    )
    assert len(billing.messages) == 1 and len(shipping.messages) == 1


async def test_message_id_is_the_key_when_none_is_given(
    msgkit_broker: msgkit.Broker, unique_name: str, sqlite_dedup: Dedup
) -> None:
    """A producer's own retry re-sends one message id; the user's `key` function wins over it."""
    got = Collector()
    await msgkit_broker.consumer(unique_name, group="g", dedup=sqlite_dedup).start(got)
    by_order = Dedup(sqlite_dedup.store, key=lambda m: m.json()["order"])
    by_order_got = Collector()
    await msgkit_broker.consumer(unique_name, group="by-order", dedup=by_order).start(by_order_got)
    producer = msgkit_broker.producer()
    await producer.send(unique_name, {"order": 1})
    await producer.send(unique_name, {"order": 1})  # another message id: not a duplicate by id
    await got.wait_for(2, timeout=WAIT)
    await by_order_got.wait_for(1, timeout=WAIT)
    assert len({m.id for m in got.messages}) == 2


async def test_redelivery_after_a_crash_before_the_ack_is_skipped(
    msgkit_broker: msgkit.Broker, unique_name: str, sqlite_dedup: Dedup
) -> None:
    """The handler ran and the key was marked done, then the consumer died before acking:
    the broker redelivers, and the handler does not run again."""
    requires(msgkit_broker, "redelivers_unacked")
    handled = Collector()
    dying = Watched(sqlite_dedup, crash_after_complete=True)
    doomed = msgkit_broker.consumer(unique_name, group="g", dedup=dying)
    await doomed.start(handled)  # subscribed before the send, so the group gets the message
    task = asyncio.create_task(doomed.wait())
    await msgkit_broker.producer().send(unique_name, b"charge", idempotency_key="charge-1")
    await handled.wait_for(1, timeout=WAIT)
    task.cancel()  # the process dies (cancels the consumer); the message was never acknowledged
    await asyncio.gather(task, return_exceptions=True)

    survivor = Watched(sqlite_dedup)
    await msgkit_broker.consumer(unique_name, group="g", dedup=survivor).start(handled)
    await eventually(lambda: len(survivor.skipped) == 1, timeout=WAIT,
                     message="the redelivered message settled as a duplicate")
    assert len(handled.messages) == 1
    assert survivor.skipped[0].idempotency_key == "charge-1"


async def test_crash_mid_handler_lets_the_redelivery_run_once_the_lease_expires(
    msgkit_broker: msgkit.Broker, unique_name: str, sqlite_store_url: str
) -> None:
    requires(msgkit_broker, "redelivers_unacked")
    started = asyncio.Event()

    async def hangs(msg: msgkit.Message) -> None:
        started.set()
        await asyncio.Event().wait()

    async with Dedup(sqlite_store_url, lease=1.0, max_poll=0.05) as dedup:
        doomed = msgkit_broker.consumer(unique_name, group="g", dedup=dedup)
        await doomed.start(hangs)
        task = asyncio.create_task(doomed.wait())
        await msgkit_broker.producer().send(unique_name, b"charge", idempotency_key="charge-1")
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()  # dies holding the claim: nothing releases it, its lease must run out
        await asyncio.gather(task, return_exceptions=True)
        survivor = Collector()
        await msgkit_broker.consumer(unique_name, group="g", dedup=dedup).start(survivor)
        [msg] = await survivor.wait_for(1, timeout=WAIT)
        assert msg.idempotency_key == "charge-1"


async def test_failed_attempt_is_retried_then_later_copies_are_skipped(
    msgkit_broker: msgkit.Broker, unique_name: str, sqlite_dedup: Dedup
) -> None:
    """The Watermill bug must not exist: a failure releases the key, so the retry runs."""
    watched = Watched(sqlite_dedup)
    got = Collector(fail=lambda m: m.attempt == 1)
    consumer = msgkit_broker.consumer(unique_name, group="g", dedup=watched,
                                      failure=fast_retries())
    await consumer.start(got)
    producer = msgkit_broker.producer()
    await producer.send(unique_name, b"charge", key="c", idempotency_key="charge-1")
    [msg] = await got.wait_for(1, timeout=WAIT)
    assert msg.attempt == 2 and len(got.failures) == 1 and not watched.skipped
    await producer.send(unique_name, b"charge", key="c", idempotency_key="charge-1")
    await eventually(lambda: len(watched.skipped) == 1, timeout=WAIT, message="the copy skipped")
    assert len(got.messages) == 1


async def test_store_outage_retries_the_message_instead_of_dropping_it(
    msgkit_broker: msgkit.Broker, unique_name: str, redis_store_url: str
) -> None:
    store = open_store(redis_store_url)
    flaky = FlakyStore(store, failures=2)
    got = Collector()
    async with Dedup(flaky) as dedup:
        consumer = msgkit_broker.consumer(unique_name, group="g", dedup=dedup,
                                          failure=fast_retries(5))
        await consumer.start(got)
        await msgkit_broker.producer().send(unique_name, b"charge", idempotency_key="charge-1")
        [msg] = await got.wait_for(1, timeout=WAIT)
        assert msg.attempt == 3 and flaky.failed == 2
        await consumer.stop()  # settled before the store's keys are cleaned up
    await store.close()


async def test_a_failed_done_mark_is_retried_while_the_message_is_held_then_acknowledged(
    msgkit_broker: msgkit.Broker, unique_name: str, redis_store_url: str
) -> None:
    requires(msgkit_broker, "redelivers_unacked")
    store = open_store(redis_store_url)
    outage = COMPLETE_ATTEMPTS + 3  # longer than the store's own quick retries
    flaky = FlakyStore(store, complete_failures=outage)
    got = Collector()
    async with Dedup(flaky) as dedup:
        consumer = msgkit_broker.consumer(unique_name, group="g", dedup=dedup)
        await consumer.start(got)
        await msgkit_broker.producer().send(unique_name, b"charge", idempotency_key="charge-1")
        await got.wait_for(1, timeout=WAIT)
        await eventually(lambda: consumer.in_flight == 0, timeout=WAIT,
                         message="acknowledged once the store took the mark")
        assert flaky.completes_failed == outage
        await consumer.stop()
        later = Watched(dedup)
        again = msgkit_broker.consumer(unique_name, group="g", dedup=later)
        await again.start(got)
        await msgkit_broker.producer().send(unique_name, b"sentinel")
        await got.wait_for(2, timeout=WAIT)
        assert got.values == [b"charge", b"sentinel"] and not later.skipped, "it was acknowledged"
        await again.stop()
    await store.close()


async def test_stopping_while_the_done_mark_fails_releases_the_message_at_once(
    msgkit_broker: msgkit.Broker, unique_name: str, redis_store_url: str
) -> None:
    requires(msgkit_broker, "redelivers_unacked")
    store = open_store(redis_store_url)
    flaky = FlakyStore(store, complete_failures=1_000_000)
    got = Collector()
    async with Dedup(flaky, lease=1) as dedup:
        consumer = msgkit_broker.consumer(unique_name, group="g", dedup=dedup)
        await consumer.start(got)
        await msgkit_broker.producer().send(unique_name, b"charge", idempotency_key="charge-1")
        await got.wait_for(1, timeout=WAIT)
        await eventually(lambda: flaky.completes_failed > COMPLETE_ATTEMPTS, timeout=WAIT,
                         message="the mark is being retried")
        assert consumer.in_flight == 1, "held while the mark is retried"
        await asyncio.wait_for(consumer.stop(), 10)
        flaky._complete_failures = 0  # the store is back
        again = msgkit_broker.consumer(unique_name, group="g", dedup=dedup)
        await again.start(got)
        await got.wait_for(2, timeout=WAIT)  # released, not left on the channel
        assert got.values == [b"charge", b"charge"]
        await again.stop()
    await store.close()


async def test_unreachable_store_dead_letters_without_running_the_handler(
    msgkit_broker: msgkit.Broker, unique_name: str
) -> None:
    url = unreachable_url_like("redis://")
    assert url is not None
    got = Collector()
    async with Dedup(url) as dedup:
        await msgkit_broker.consumer(unique_name, group="g", dedup=dedup,
                                     failure=fast_retries(2)).start(got)
        await msgkit_broker.producer().send(unique_name, b"charge", idempotency_key="charge-1")
        dead = Collector()
        dlq = msgkit.dead_letter_topic(unique_name, "g")
        await msgkit_broker.consumer(dlq, group=DLQ_GROUP, start="earliest").start(dead)
        [msg] = await dead.wait_for(1, timeout=WAIT)
    assert not got.messages
    assert (msg.header(msgkit.headers.DLQ_EXCEPTION_TYPE) or "").endswith("StoreUnavailableError")
    assert "s3cr3t" not in (msg.header(msgkit.headers.DLQ_EXCEPTION_MESSAGE) or "")


async def test_random_duplicates_under_concurrency_run_once_each(
    msgkit_broker: msgkit.Broker, unique_name: str, sqlite_dedup: Dedup
) -> None:
    seed = int(os.environ.get("MSGKIT_TEST_SEED") or random.randrange(2**32))
    print(f"random seed {seed} (rerun with MSGKIT_TEST_SEED={seed})")
    rng = random.Random(seed)
    copies = [f"k{i}" for i in range(40) for _ in range(rng.randint(1, 4))]
    rng.shuffle(copies)
    watched = Watched(sqlite_dedup)
    in_flight = 0
    most = 0

    async def slow(msg: msgkit.Message) -> None:  # holds keys long enough for copies to overlap
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(rng.random() / 100)
        in_flight -= 1

    got = Collector(on_message=slow)
    await msgkit_broker.consumer(unique_name, group="g", dedup=watched, concurrency=8).start(got)
    await msgkit_broker.producer().send_many(unique_name, copies, idempotency_key=lambda k: k)
    await eventually(lambda: len(got.messages) + len(watched.skipped) == len(copies),
                     timeout=WAIT, message=f"all {len(copies)} copies settled (seed {seed})")
    counts = Counter(m.idempotency_key for m in got.messages)
    assert counts == Counter({k: 1 for k in set(copies)}), f"seed {seed}"


class FlakyStore:
    """A real store whose first `failures` claims and first `complete_failures` done-marks
    fail as if it were unreachable."""

    def __init__(self, store: IdempotencyStore, *, failures: int = 0,
                 complete_failures: int = 0) -> None:
        self._store = store
        self._failures = failures
        self._complete_failures = complete_failures
        self.failed = 0
        self.completes_failed = 0

    async def claim(self, scope: Scope, key: str,
                    lease_s: float) -> ClaimResult:
        if self.failed < self._failures:
            self.failed += 1
            raise StoreUnavailableError("store went away (injected)")
        return await self._store.claim(scope, key, lease_s)

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        if self.completes_failed < self._complete_failures:
            self.completes_failed += 1
            raise StoreUnavailableError("store went away (injected)")
        return await self._store.complete(scope, key, token, ttl_s)

    async def release(self, scope: Scope, key: str, token: str) -> None:
        await self._store.release(scope, key, token)

    async def close(self) -> None:
        await self._store.close()
