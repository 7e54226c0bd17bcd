"""Batch consumers (`batch=`): every message once, in lists of at most the batch size, key
order kept; a failing or undecodable message is settled alone; stop finishes the batch."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from typing import Any

import pytest
from pydantic import BaseModel

import msgkit
from msgkit import headers as h
from msgkit.dedup import Dedup
from msgkit.message import Key
from msgkit.testing.collect import eventually
from msgkit.testing.conformance.support import (
    WAIT,
    dead_letters,
    fast_retries,
    graceful_stop,
    requires,
)


class Order(BaseModel):
    n: int


class BatchCollector:
    """A batch handler recording each call; raises when `fail` matches any message."""

    def __init__(self, fail: bytes | None = None) -> None:
        self.calls: list[list[msgkit.Message]] = []
        self.done: list[msgkit.Message] = []
        self._fail = fail

    async def __call__(self, msgs: list[msgkit.Message]) -> None:
        self.calls.append(list(msgs))
        if self._fail is not None and any(m.value == self._fail for m in msgs):
            raise ConnectionError(f"refused {self._fail!r}")
        self.done.extend(msgs)


class BatchContract:
    async def test_batch_handler_gets_every_message_once_within_the_batch_size(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        rng = random.Random(seed)
        got = BatchCollector()
        await msgkit_broker.consumer(unique_name, group="g", batch=8).start(got)
        keys = [f"k{rng.randrange(5)}" for _ in range(60)]
        sent = await msgkit_broker.producer().send_many(
            unique_name, [f"{key}-{n}" for n, key in enumerate(keys)],
            key=lambda value: value.split("-")[0])
        await eventually(lambda: len(got.done) >= len(sent), timeout=WAIT,
                         message=f"{len(sent)} messages")
        assert Counter(m.id for m in got.done) == Counter(sent), "lost or repeated"
        assert all(1 <= len(call) <= 8 for call in got.calls)
        per_key: dict[Key | None, list[int]] = defaultdict(list)
        for msg in got.done:
            per_key[msg.key].append(int(msg.value.split(b"-")[1]))
        assert all(order == sorted(order) for order in per_key.values()), per_key

    async def test_failing_message_of_a_batch_is_dead_lettered_alone(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = BatchCollector(fail=b"poison")
        await msgkit_broker.consumer(unique_name, group="g", batch=10,
                                     failure=fast_retries(2)).start(got)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        values = [f"ok-{n}".encode() for n in range(20)]
        values.insert(7, b"poison")
        sent = await msgkit_broker.producer().send_many(unique_name, values)
        [letter] = await dead.wait_for(1, timeout=WAIT)
        assert letter.id == sent[7] and letter.value == b"poison"
        assert letter.headers[h.DLQ_EXCEPTION_TYPE] == "builtins.ConnectionError"
        assert letter.headers[h.DLQ_ATTEMPTS] == "2"
        await eventually(lambda: {m.id for m in got.done} >= set(sent) - {sent[7]},
                         timeout=WAIT, message="every other message handled")
        assert sent[7] not in {m.id for m in got.done}
        assert any(len(call) == 1 and call[0].id == sent[7] for call in got.calls), \
            "the poison message was never tried alone"

    async def test_batch_of_models_dead_letters_an_undecodable_payload_alone(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        orders: list[Order] = []

        async def handle(batch: list[Order]) -> None:
            orders.extend(batch)

        await msgkit_broker.consumer(unique_name, group="g", batch=10).start(handle)
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        values: list[Any] = [{"n": n} for n in range(5)]
        values.insert(2, b"{not json")
        sent = await msgkit_broker.producer().send_many(unique_name, values)
        [letter] = await dead.wait_for(1, timeout=WAIT)
        assert letter.id == sent[2]
        assert letter.headers[h.DLQ_EXCEPTION_TYPE] == "msgkit.errors.DecodeError"
        await eventually(lambda: len(orders) >= 5, timeout=WAIT, message="5 orders")
        assert sorted(o.n for o in orders) == [0, 1, 2, 3, 4]

    async def test_stop_finishes_and_acknowledges_the_batch_in_hand(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        await graceful_stop(msgkit_broker, unique_name, batch=50)

    async def test_killed_batch_consumer_hands_its_unfinished_batch_on(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "redelivers_unacked")
        started = asyncio.Event()

        async def hangs(msgs: list[msgkit.Message]) -> None:
            started.set()
            await asyncio.Event().wait()

        doomed = msgkit_broker.consumer(unique_name, group="g", batch=10)
        await doomed.start(hangs)
        task = asyncio.create_task(doomed.wait())  # cancelling the wait kills the consumer
        sent = await msgkit_broker.producer().send_many(unique_name, [b"a", b"b", b"c"])
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()  # the handler never returns: nothing of its batch is acknowledged
        await asyncio.gather(task, return_exceptions=True)
        survivor = BatchCollector()
        await msgkit_broker.consumer(unique_name, group="g", batch=10).start(survivor)
        await eventually(lambda: {m.id for m in survivor.done} >= set(sent), timeout=WAIT,
                         message="the killed consumer's messages at another member")

    async def test_batch_consumer_refuses_what_it_cannot_promise(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        with pytest.raises(msgkit.ConfigurationError, match="one batch at a time"):
            msgkit_broker.consumer(unique_name, group="g", batch=10, concurrency=4)
        with pytest.raises(msgkit.ConfigurationError, match="drop batch="):
            msgkit_broker.consumer(unique_name, group="g", batch=10,
                                   guarantee=msgkit.Guarantee.EXACTLY_ONCE,
                                   dedup=Dedup("memory://"))
        with pytest.raises(msgkit.ConfigurationError, match="smaller than batch"):
            msgkit_broker.consumer(unique_name, group="g", batch=10, prefetch=5)

        async def one(msg: msgkit.Message) -> None:
            return None

        with pytest.raises(msgkit.HandlerError, match="takes a list"):
            await msgkit_broker.consumer(unique_name, group="g", batch=10).start(one)
