"""The failure policy end to end: in-process retries, delayed retries that block nothing,
dead letters with every failure header, non-retryable failures, a dead-letter outage,
replay, and one poison message among thousands."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from pydantic import BaseModel

import msgkit
from msgkit import headers as h
from msgkit.dlq import DeadLetterQueue
from msgkit.failure import TRACEBACK_LIMIT
from msgkit.testing.collect import Collector, eventually
from msgkit.testing.conformance.outage import DeadLetterOutage
from msgkit.testing.conformance.support import WAIT, dead_letters, requires

DELAY = 3.0
"""The broker-delayed retry's wait: long enough for later messages to pass the waiting one."""
GOOD = 2000


class PermanentError(Exception):
    """Listed in `non_retryable`."""


class Vetoed(Exception):
    """Refused by the policy's `retry_if`."""


class Strict(BaseModel):
    n: int


def quick(**changes: Any) -> msgkit.FailurePolicy:
    """A policy whose in-process waits are milliseconds."""
    return replace(msgkit.FailurePolicy(backoff=0.001, backoff_max=0.01), **changes)


class FailureContract:
    async def test_a_handler_raising_cancelled_error_or_generator_exit_fails_only_its_message(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        tries: Counter[bytes] = Counter()
        good = Collector()

        async def handler(msg: msgkit.Message) -> None:
            tries[msg.value] += 1
            if msg.value == b"cancelled":  # an inner task someone cancelled
                inner = asyncio.ensure_future(asyncio.sleep(5))
                inner.cancel()
                await inner
            if msg.value == b"generator-exit":
                raise GeneratorExit
            await good(msg)

        dead = await dead_letters(msgkit_broker, unique_name, "g")
        consumer = msgkit_broker.consumer(unique_name, group="g", failure=quick(retries=2, delays=()))
        await consumer.start(handler)
        producer = msgkit_broker.producer()
        for value in (b"cancelled", b"generator-exit", b"after-1", b"after-2"):
            await producer.send(unique_name, value, key="one-key")
        await good.wait_for(2, timeout=WAIT)
        letters = await dead.wait_for(2, timeout=WAIT)
        assert sorted(m.value for m in letters) == [b"cancelled", b"generator-exit"]
        assert {m.headers[h.DLQ_EXCEPTION_TYPE] for m in letters} == {"msgkit.errors.HandlerAbortedError"}
        assert tries[b"cancelled"] == tries[b"generator-exit"] == 3, "1 try + 2 in-process retries"
        await eventually(lambda: consumer.in_flight == 0, timeout=WAIT, message="nothing held")
        await asyncio.wait_for(consumer.stop(), WAIT)

    async def test_in_process_retries_succeed_without_a_redelivery(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        tries: list[int] = []
        done = Collector()

        async def flaky(msg: msgkit.Message) -> None:
            tries.append(msg.attempt)
            if len(tries) < 3:
                raise ConnectionError("downstream not ready")
            await done(msg)

        await msgkit_broker.consumer(unique_name, group="g", failure=quick(retries=3)).start(flaky)
        sent = await msgkit_broker.producer().send(unique_name, b"x")
        [msg] = await done.wait_for(1, timeout=WAIT)
        assert msg.id == sent
        assert tries == [1, 1, 1], "all three tries belong to the first delivery"
        assert h.FIRST_FAILURE_AT not in msg.headers

    async def test_delayed_retry_lets_later_messages_of_its_key_through(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "delayed_redelivery")
        handled_at: dict[tuple[str, int], float] = {}

        async def stamp(msg: msgkit.Message) -> None:
            handled_at[msg.id, msg.attempt] = time.monotonic()

        got = Collector(fail=lambda m: m.value == b"slow" and m.attempt == 1, on_message=stamp)
        policy = msgkit.FailurePolicy(delays=(DELAY,), max_attempts=2)
        await msgkit_broker.consumer(unique_name, group="g", failure=policy).start(got)
        producer = msgkit_broker.producer()
        # One key for all: the waiting copy must not hold its key (or partition) meanwhile.
        slow = await producer.send(unique_name, b"slow", key="k")
        await got.wait_failures(1, timeout=WAIT)
        later = await producer.send_many(unique_name, [f"later-{n}" for n in range(5)],
                                         key=lambda _: "k")
        await got.wait_for(6, timeout=WAIT)
        assert [m.id for m in got.messages] == [*later, slow], "a later message waited for the retry"
        retry = got.messages[5]
        assert retry.attempt == 2 and retry.value == b"slow" and retry.key == "k"
        assert float(retry.header(h.FIRST_FAILURE_AT) or "") <= time.time()
        failed = handled_at[slow, 1]
        print(f"later messages handled {handled_at[later[-1], 1] - failed:.3f}s after the failure, "
              f"the retry {handled_at[slow, 2] - failed:.3f}s after it (delay {DELAY}s)")

    async def test_exhausted_retries_dead_letter_with_every_failure_header(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        started = time.time()
        tries: list[msgkit.Message] = []

        async def fails(msg: msgkit.Message) -> None:
            tries.append(msg)
            raise LookupError("no such customer " + "x" * TRACEBACK_LIMIT)  # beyond the bound

        policy = quick(retries=1, delays=(0.0, 0.1))
        await msgkit_broker.consumer(unique_name, group="g", failure=policy).start(fails)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        sent = await msgkit_broker.producer().send(unique_name, b"poison", key="p",
                                                   headers={"trace": "t-1"})
        [msg] = await dead.wait_for(1, timeout=WAIT)
        assert [m.attempt for m in tries] == [1, 1, 2, 2, 3, 3]
        assert msg.id == sent and msg.value == b"poison" and msg.key == "p"
        headers = msg.headers
        assert headers["trace"] == "t-1" and h.ATTEMPT not in headers
        assert headers[h.DLQ_ORIGINAL_TOPIC] == unique_name
        assert headers[h.DLQ_GROUP] == "g"
        assert headers[h.DLQ_ATTEMPTS] == "3"
        assert headers[h.DLQ_EXCEPTION_TYPE] == "builtins.LookupError"
        reason, trace = msg.header(h.DLQ_EXCEPTION_MESSAGE) or "", msg.header(h.DLQ_TRACEBACK) or ""
        assert reason.startswith("no such customer xxx") and len(reason) <= TRACEBACK_LIMIT
        assert trace.startswith("Traceback (most recent call last)") and len(trace) <= TRACEBACK_LIMIT
        first = float(msg.header(h.FIRST_FAILURE_AT) or "")
        last = float(msg.header(h.DLQ_LAST_FAILURE_AT) or "")
        assert started <= first <= last <= time.time()
        # Where the broker kept it (`Delivery.origin`) differs per backend: tests/test_dlq.py.
        # The first failure time travelled unchanged through both broker-delayed hops.
        assert {m.headers[h.FIRST_FAILURE_AT] for m in tries if m.attempt > 1} == \
            {headers[h.FIRST_FAILURE_AT]}

    async def test_non_retryable_failures_go_straight_to_the_dead_letter_topic(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        tries: Counter[bytes] = Counter()

        async def handler(msg: msgkit.Message) -> None:
            tries[msg.value] += 1
            if msg.value == b"permanent":
                raise PermanentError("card reported stolen")
            if msg.value == b"vetoed":
                raise Vetoed("the policy's retry_if says no")
            Strict.model_validate({"n": "not a number"})  # pydantic ValidationError

        policy = quick(retries=3, delays=(0.0, 0.0), non_retryable=(PermanentError,),
                       retry_if=lambda exc: not isinstance(exc, Vetoed))
        await msgkit_broker.consumer(unique_name, group="g", failure=policy).start(handler)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        producer = msgkit_broker.producer()
        for value in (b"permanent", b"vetoed", b"invalid"):
            await producer.send(unique_name, value)
        await dead.wait_for(3, timeout=WAIT)
        assert tries == {b"permanent": 1, b"vetoed": 1, b"invalid": 1}
        types = {m.value: m.headers[h.DLQ_EXCEPTION_TYPE] for m in dead.messages}
        assert types == {
            b"permanent": f"{__name__}.PermanentError",
            b"vetoed": f"{__name__}.Vetoed",
            b"invalid": "pydantic_core._pydantic_core.ValidationError",
        }
        assert {m.headers[h.DLQ_ATTEMPTS] for m in dead.messages} == {"1"}

    async def test_dead_letter_outage_keeps_the_message_until_its_copy_is_stored(
        self, msgkit_broker: msgkit.Broker, unique_name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        outage = DeadLetterOutage(msgkit_broker, monkeypatch)
        got = Collector(fail=lambda m: m.value == b"poison")
        policy = msgkit.FailurePolicy(delays=())
        # The retried copy holds one worker (and its key); the second worker serves the rest.
        first = msgkit_broker.consumer(unique_name, group="g", concurrency=2, failure=policy)
        await first.start(got)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        producer = msgkit_broker.producer()
        poison = await producer.send(unique_name, b"poison", key="p")
        await eventually(lambda: outage.refused >= 2, timeout=WAIT,
                         message="the dead-letter publish tried again")
        assert first.in_flight == 1, "the poison message was settled without its copy"
        good = await producer.send(unique_name, b"good", key="other")
        await eventually(lambda: good in got.ids, timeout=WAIT, message="other keys flow meanwhile")
        # Stopping gives up on the copy: the broker keeps the message for the next member.
        await first.stop()
        second = msgkit_broker.consumer(unique_name, group="g", failure=policy)
        await second.start(got)
        await eventually(lambda: [m.id for m in got.failures].count(poison) >= 2, timeout=WAIT,
                         message="the unacknowledged poison message back in the group")
        healed = time.time()
        outage.active = False
        [msg] = await dead.wait_for(1, timeout=WAIT)
        assert msg.id == poison and msg.value == b"poison"
        assert float(msg.header(h.DLQ_LAST_FAILURE_AT) or "") <= healed, "stamped when stored, not failed"
        await eventually(lambda: second.in_flight == 0, timeout=WAIT,
                         message="the poison message settled once its copy was stored")

    async def test_a_password_in_a_handler_exception_reaches_no_dead_letter_or_log(
        self, msgkit_broker: msgkit.Broker, unique_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def handler(msg: msgkit.Message) -> None:
            raise ConnectionError("cannot reach postgresql://app:hunter2@db:5432/orders"
                                  "?sslpassword=hunter3")

        await msgkit_broker.consumer(unique_name, group="g", failure=quick(delays=())).start(handler)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        await msgkit_broker.producer().send(unique_name, b"x")
        [msg] = await dead.wait_for(1, timeout=WAIT)
        shown = f"{msg.headers} {caplog.text}"
        assert "postgresql://app:***@db:5432" in (msg.header(h.DLQ_EXCEPTION_MESSAGE) or "")
        assert "hunter2" not in shown and "hunter3" not in shown

    async def test_replayed_dead_letter_is_handled_once_the_cause_is_fixed(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        broken = True
        handled = Collector()

        async def handler(msg: msgkit.Message) -> None:
            if broken:
                raise TimeoutError("payment service down")
            await handled(msg)

        await msgkit_broker.consumer(unique_name, group="g", failure=quick(delays=(0.0,))).start(handler)
        sent = await msgkit_broker.producer().send(unique_name, {"order": 1}, key="o-1",
                                                   headers={"trace": "t-1"})
        dlq = DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0)

        async def listed() -> None:
            while not await dlq.messages():
                pass

        await asyncio.wait_for(listed(), WAIT)
        broken = False
        try:
            assert await dlq.replay() == 1
        except NotImplementedError:
            pytest.skip("the backend's publisher cannot publish to a single group")
        [msg] = await handled.wait_for(1, timeout=WAIT)
        assert msg.id == sent and msg.attempt == 1 and msg.key == "o-1"
        assert msg.json() == {"order": 1} and msg.headers["trace"] == "t-1"
        assert not any(k.startswith(h.DLQ_PREFIX) for k in msg.headers)
        assert h.FIRST_FAILURE_AT not in msg.headers
        assert await dlq.messages() == []

    async def test_one_poison_message_among_thousands(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        seed = random.randrange(1 << 30)
        print(f"poison seed: {seed}")
        rng = random.Random(seed)
        values = [{"n": n} for n in range(GOOD)]
        at = rng.randrange(GOOD + 1)
        values.insert(at, {"n": -1, "poison": 1})
        got = Collector(fail=lambda m: b"poison" in m.value)
        policy = quick(retries=1, delays=(0.0, 0.05))
        consumer = msgkit_broker.consumer(unique_name, group="g", concurrency=8, failure=policy)
        await consumer.start(got)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        producer = msgkit_broker.producer()
        # Keys repeat, so the poison message's key also carries good messages behind it.
        ids = await producer.send_many(unique_name, values, key=lambda v: f"k{v['n'] % 50}")
        poison = ids[at]
        good = set(ids) - {poison}
        await eventually(lambda: good <= got.ids, timeout=WAIT, message=f"all {GOOD} good messages")
        [msg] = await dead.wait_for(1, timeout=WAIT)
        assert msg.id == poison and msg.headers[h.DLQ_ATTEMPTS] == "3"
        assert got.ids == good
        assert {m.id for m in got.failures} == {poison}
        await eventually(lambda: consumer.in_flight == 0, timeout=WAIT, message="nothing held")
        after = await producer.send(unique_name, b"after", key=msg.key)
        await eventually(lambda: after in got.ids, timeout=WAIT, message="the consumer goes on")
        assert consumer.running and len(dead.messages) == 1
