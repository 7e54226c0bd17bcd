"""Exactly-once on Kafka: what a handler sends, its retry copies and dead letters commit in
one transaction with the consumed offsets, one transaction per batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence

import pytest
from confluent_kafka import KafkaError, KafkaException

import msgkit
from msgkit.consumer import DLQ_GROUP
from msgkit.errors import ConfigurationError, ConsumerLostError, PublishError
from msgkit.message import Outgoing
from msgkit.testing import Collector, eventually
from msgkit.testing.conformance.support import WAIT, fast_retries
from msgkit_kafka.publisher import KafkaPublisher
from msgkit_kafka.subscription import KafkaSubscription
from msgkit_kafka.transaction import TransactionalProducer

EOS = msgkit.Guarantee.EXACTLY_ONCE
WaitCommitted = Callable[[str, str, int, int], Awaitable[None]]
Committed = Callable[[str, str, int], Awaitable[int]]
SubOf = Callable[[msgkit.Consumer], KafkaSubscription]


async def test_handler_output_and_consumed_offsets_commit_together(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted, sub_of: SubOf
) -> None:
    out = f"{unique_name}.out"

    async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        await ctx.send(out, msg.value.upper(), key=msg.key)

    consumer = kafka1.consumer(unique_name, group="eos", guarantee=EOS, concurrency=4)
    await consumer.start(relay)
    outputs = Collector()
    await kafka1.consumer(out, group="verify").start(outputs)
    ids = await kafka1.producer().send_many(unique_name, [f"m{i}".encode() for i in range(50)])

    got = await outputs.wait_for(50, timeout=WAIT)
    assert sorted(m.value for m in got) == sorted(f"M{i}".encode() for i in range(50))
    # Each output's idempotency key comes from its input: a redone input repeats it.
    assert {m.idempotency_key for m in got} == {f"{i}/0" for i in ids}
    await wait_committed("eos", unique_name, 0, 50)
    txn = sub_of(consumer)._txn
    assert txn is not None and txn.commits >= 1
    assert consumer.prefetch == 512  # a batch is a transaction: larger ones cost less each
    client = consumer.describe()["client"]
    assert client["isolation.level"] == "read_committed"
    assert client["transactions"]["transactional.id"].startswith("msgkit-eos-")


async def test_a_failed_attempt_sends_nothing_and_its_retry_copy_is_transactional(
    kafka1: msgkit.Broker, unique_name: str
) -> None:
    out = f"{unique_name}.out"

    async def flaky(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        await ctx.send(out, msg.value + f"@{msg.attempt}".encode())
        if msg.value == b"a" and msg.attempt == 1:
            raise RuntimeError("first attempt fails after sending")

    await kafka1.consumer(unique_name, group="eos", guarantee=EOS,
                          failure=fast_retries()).start(flaky)
    outputs = Collector()
    await kafka1.consumer(out, group="verify").start(outputs)
    producer = kafka1.producer()
    await producer.send(unique_name, b"a")
    await outputs.wait_for(1, timeout=WAIT)
    # Anything the failed attempt had sent would be in the one-partition topic before this.
    await producer.send(unique_name, b"b")
    got = await outputs.wait_for(2, timeout=WAIT)
    assert [m.value for m in got] == [b"a@2", b"b@1"]


async def test_dead_letter_commits_with_the_input_offset(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted
) -> None:
    async def reject(msg: msgkit.Message) -> None:
        raise ValueError("not for us")

    policy = msgkit.FailurePolicy(non_retryable=(ValueError,))
    consumer = kafka1.consumer(unique_name, group="eos", guarantee=EOS, failure=policy)
    await consumer.start(reject)
    dead = Collector()
    await kafka1.consumer(msgkit.dead_letter_topic(unique_name, "eos"),
                          group=DLQ_GROUP).start(dead)
    sent = await kafka1.producer().send(unique_name, b"poison")
    [msg] = await dead.wait_for(1, timeout=WAIT)
    assert msg.id == sent and (msg.header(msgkit.headers.DLQ_EXCEPTION_TYPE) or "").endswith("ValueError")
    await wait_committed("eos", unique_name, 0, 1)
    assert consumer._dead_letters is None, "dead-lettered outside the transaction"


async def test_a_failed_commit_aborts_and_the_batch_is_handled_again(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted,
    monkeypatch: pytest.MonkeyPatch, sub_of: SubOf,
) -> None:
    real_commit = TransactionalProducer.commit
    failures = [KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected"))]

    async def failing_once(self: TransactionalProducer, *args: object, **kw: object) -> None:
        if failures:
            raise failures.pop()
        await real_commit(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TransactionalProducer, "commit", failing_once)
    seen: list[bytes] = []

    async def handler(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        seen.append(msg.value)
        await ctx.send(f"{unique_name}.out", msg.value)  # so the batch is a transaction

    values = [f"m{i}".encode() for i in range(10)]
    await kafka1.producer().send_many(unique_name, values)
    consumer = kafka1.consumer(unique_name, group="eos", guarantee=EOS, prefetch=10)
    await consumer.start(handler)
    await wait_committed("eos", unique_name, 0, 10)
    txn = sub_of(consumer)._txn
    assert txn is not None and txn.aborts == 1
    # The first batch was handled, its commit failed, and everything came back from offset 0
    # (in smaller transactions: the batch after a failed commit is halved).
    redone = len(seen) - len(values)
    assert redone >= 1 and seen[:redone] == values[:redone] and seen[redone:] == values
    assert txn.commits >= 2 and txn.limit == 10


async def test_exactly_once_producer_commits_each_send_many_as_one_transaction(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    got = Collector()
    await kafka.consumer(unique_name, group="verify").start(got)
    producer = kafka.producer(guarantee=EOS)
    ids = await producer.send_many(unique_name, [b"x", b"y", b"z"])
    received = await got.wait_for(3, timeout=WAIT)
    assert {m.id for m in received} == set(ids)
    assert producer.describe()["client"]["transactional.id"].startswith("msgkit-producer-")


async def test_exactly_once_without_a_group_is_refused(kafka: msgkit.Broker, unique_name: str) -> None:
    with pytest.raises(ConfigurationError, match="group="):
        await kafka.consumer(unique_name, guarantee=EOS).start(Collector())


async def test_a_batch_that_sent_nothing_commits_its_offsets_without_a_transaction(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_transaction(self: TransactionalProducer) -> None:
        raise AssertionError("a batch without output began a transaction")

    monkeypatch.setattr(TransactionalProducer, "begin", no_transaction)
    got = Collector()
    await kafka1.consumer(unique_name, group="eos", guarantee=EOS, prefetch=2).start(got)
    await kafka1.producer().send_many(unique_name, [b"1", b"2", b"3", b"4", b"5"])
    await got.wait_for(5, timeout=WAIT)
    await wait_committed("eos", unique_name, 0, 5)


async def test_consumer_stopped_mid_batch_aborts_and_the_next_member_redoes_it(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted
) -> None:
    release = asyncio.Event()
    started: list[bytes] = []

    async def stuck(msg: msgkit.Message) -> None:
        started.append(msg.value)
        await release.wait()

    first = kafka1.consumer(unique_name, group="eos", guarantee=EOS, prefetch=4)
    task = asyncio.create_task(first.run(stuck))
    await kafka1.producer().send_many(unique_name, [b"0", b"1", b"2", b"3"])
    await eventually(lambda: bool(started), timeout=WAIT, message="the batch started")
    task.cancel()  # hard stop: the batch is unsettled, so its transaction aborts
    await asyncio.gather(task, return_exceptions=True)

    again = Collector()
    await kafka1.consumer(unique_name, group="eos", guarantee=EOS).start(again)
    assert [m.value for m in await again.wait_for(4, timeout=WAIT)] == [b"0", b"1", b"2", b"3"]
    await wait_committed("eos", unique_name, 0, 4)


@pytest.mark.parametrize("fails", ["producing", "confirming"])
async def test_a_failed_publish_into_the_transaction_aborts_and_redoes_the_batch(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted,
    monkeypatch: pytest.MonkeyPatch, sub_of: SubOf, fails: str,
) -> None:
    """The client refuses the output at once (`producing`), or the broker later, after the
    handler returned (`confirming`): either dooms the transaction."""
    out = f"{unique_name}.out"
    real_produce = KafkaPublisher.produce
    failures = [PublishError("injected: the broker refused it", reason="injected")]

    async def failing_once(
        self: KafkaPublisher, messages: Sequence[Outgoing]
    ) -> asyncio.Future[None] | None:
        if not (failures and any(m.topic == out for m in messages)):
            return await real_produce(self, messages)
        if fails == "producing":
            raise failures.pop()
        confirmed = await real_produce(self, messages)
        assert confirmed is not None
        refused = asyncio.get_running_loop().create_future()
        refusal = failures.pop()
        confirmed.add_done_callback(lambda _: refused.set_exception(refusal))
        return refused

    monkeypatch.setattr(KafkaPublisher, "produce", failing_once)

    async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        await ctx.send(out, msg.value)

    outputs = Collector()
    await kafka1.consumer(out, group="verify").start(outputs)
    # Default prefetch: the batch (5) is smaller, so fetch waits in the open transaction
    # while the failed publish ends it.
    consumer = kafka1.consumer(unique_name, group="eos", guarantee=EOS)
    await consumer.start(relay)
    values = [f"m{i}".encode() for i in range(5)]
    await kafka1.producer().send_many(unique_name, values)

    await wait_committed("eos", unique_name, 0, 5)  # not stuck behind the failed publish
    txn = sub_of(consumer)._txn
    assert txn is not None and txn.aborts >= 1 and not failures
    await eventually(lambda: sorted(outputs.values) == values, timeout=WAIT,
                     message="every input's output committed once after the redo")


async def test_a_transaction_that_cannot_end_stops_the_consumer_and_commits_nothing(
    kafka1: msgkit.Broker, unique_name: str, committed: Committed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def fails(self: TransactionalProducer, *args: object, **kw: object) -> bool:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "injected: broker gone"))

    monkeypatch.setattr(TransactionalProducer, "commit", fails)
    monkeypatch.setattr(TransactionalProducer, "abort", fails)

    async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        await ctx.send(f"{unique_name}.out", msg.value)

    consumer = kafka1.consumer(unique_name, group="eos", guarantee=EOS)
    await consumer.start(relay)
    await kafka1.producer().send_many(unique_name, [b"a", b"b", b"c"])
    with pytest.raises(ConsumerLostError, match="ending a Kafka transaction"):
        await asyncio.wait_for(consumer.wait(), WAIT)
    assert await committed("eos", unique_name, 0) < 0  # the batch is left to the next owner


async def test_a_transactional_call_that_never_returns_replaces_the_producer(
    kafka1: msgkit.Broker, unique_name: str, wait_committed: WaitCommitted,
    monkeypatch: pytest.MonkeyPatch, sub_of: SubOf,
) -> None:
    """librdkafka can block in send_offsets_to_transaction past its timeout while a group
    coordinator moves: the batch is redone on a new producer instead of waiting forever."""
    monkeypatch.setattr("msgkit_kafka.transaction._GRACE", 0.5)
    real_start = TransactionalProducer.start
    hangs = threading.Event()  # released at the end: the stuck thread then returns
    wedged: list[_Wedged] = []

    async def start_wedged_once(self: TransactionalProducer) -> None:
        await real_start(self)
        if not wedged:
            self._timeout = 1.0  # the call's own timeout, which librdkafka overran
            wedged.append(_Wedged(self.native.producer, hangs))
            self.native.producer = wedged[0]  # type: ignore[assignment]

    monkeypatch.setattr(TransactionalProducer, "start", start_wedged_once)
    outputs = Collector()
    await kafka1.consumer(f"{unique_name}.out", group="verify").start(outputs)

    async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        await ctx.send(f"{unique_name}.out", msg.value)

    consumer = kafka1.consumer(unique_name, group="eos", guarantee=EOS)
    try:
        await consumer.start(relay)
        await kafka1.producer().send_many(unique_name, [b"a", b"b", b"c"])
        await wait_committed("eos", unique_name, 0, 3)
        got = await outputs.wait_for(3, timeout=WAIT)
    finally:
        hangs.set()
    assert sorted(m.value for m in got) == [b"a", b"b", b"c"]  # the wedged batch: aborted
    txn = sub_of(consumer)._txn
    assert txn is not None and txn.aborts == 1 and consumer.running


class _Wedged:
    """A producer whose send_offsets_to_transaction blocks until `released`."""

    def __init__(self, producer: object, released: threading.Event) -> None:
        self._producer = producer
        self._released = released

    def send_offsets_to_transaction(self, *args: object) -> None:
        self._released.wait()

    def __getattr__(self, name: str) -> object:
        return getattr(self._producer, name)
