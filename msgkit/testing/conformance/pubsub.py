"""Publish/subscribe: what is sent arrives intact, to the right topic, nothing lost."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

import msgkit
from msgkit import headers as h
from msgkit.testing.collect import Collector
from msgkit.testing.conformance.support import WAIT


class Order(BaseModel):
    id: int
    item: str


class PubSubContract:
    async def test_payload_key_and_headers_round_trip(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(got)
        producer = msgkit_broker.producer()
        before = time.time()
        ids = [
            await producer.send(unique_name, b"\x00\xffraw", key="k1", headers={"a": "1"}),
            await producer.send(unique_name, "text ü", key="k2"),
            await producer.send(unique_name, {"n": [1, 2]}, headers={"trace": "t-1"}),
            await producer.send(unique_name, Order(id=7, item="book"), idempotency_key="order-7"),
        ]
        msgs = sorted(await got.wait_for(4, timeout=WAIT), key=lambda m: ids.index(m.id))
        assert [m.id for m in msgs] == ids
        raw, text, obj, model = msgs
        assert raw.value == b"\x00\xffraw" and raw.key == "k1" and raw.headers["a"] == "1"
        assert text.text() == "text ü" and text.key == "k2"
        assert obj.json() == {"n": [1, 2]} and obj.headers["trace"] == "t-1"
        assert obj.content_type == h.JSON
        assert model.decode(Order) == Order(id=7, item="book")
        assert model.idempotency_key == "order-7" and model.key is None
        for msg in msgs:
            assert msg.topic == unique_name and msg.attempt == 1
            assert before - 5 <= msg.timestamp <= time.time() + 5

    async def test_send_many_delivers_every_message(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector()
        await msgkit_broker.consumer(unique_name, group="g", concurrency=4).start(got)
        values = [{"i": i} for i in range(300)]
        ids = await msgkit_broker.producer().send_many(
            unique_name, values, key=lambda v: f"k{v['i'] % 7}"
        )
        assert len(set(ids)) == 300
        await got.wait_for(300, timeout=WAIT)
        assert got.ids == set(ids)

    async def test_several_topics_at_once(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        topics = [f"{unique_name}-{i}" for i in range(3)]
        collectors = {t: Collector() for t in topics}
        for topic, got in collectors.items():
            await msgkit_broker.consumer(topic, group="g").start(got)
        producer = msgkit_broker.producer()
        await asyncio.gather(*(
            producer.send(topic, f"{topic}:{n}") for topic in topics for n in range(20)
        ))
        for topic, got in collectors.items():
            await got.wait_for(20, timeout=WAIT)
            assert {m.text() for m in got.messages} == {f"{topic}:{n}" for n in range(20)}
            assert {m.topic for m in got.messages} == {topic}

    async def test_concurrent_publishers_and_competing_consumers_lose_nothing(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector()
        for _ in range(3):
            await msgkit_broker.consumer(unique_name, group="g", concurrency=4).start(got)
        producers = [msgkit_broker.producer() for _ in range(4)]

        async def publish(p: msgkit.Producer, n: int) -> list[str]:
            return [await p.send(unique_name, f"{n}", key=f"k{i % 5}") for i in range(100)]

        sent = {i for ids in await asyncio.gather(*(publish(p, n) for n, p in enumerate(producers)))
                for i in ids}
        await got.wait_for(400, timeout=WAIT)
        assert got.ids == sent
