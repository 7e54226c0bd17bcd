"""Failures: redelivery with an attempt count, undecodable payloads, at-most-once.
The failure policy end to end is in `failures.py`."""

from __future__ import annotations

from pydantic import BaseModel

import msgkit
from msgkit import headers as h
from msgkit.testing.collect import Collector, eventually
from msgkit.testing.conformance.support import WAIT, dead_letters, fast_retries


class Payment(BaseModel):
    order_id: int
    amount: float


class RedeliveryContract:
    async def test_failed_handler_redelivers_with_next_attempt(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector(fail=lambda m: m.attempt == 1)
        consumer = msgkit_broker.consumer(unique_name, group="g", failure=fast_retries())
        await consumer.start(got)
        sent = await msgkit_broker.producer().send(unique_name, b"flaky", key="k",
                                                   headers={"keep": "me"})
        [msg] = await got.wait_for(1, timeout=WAIT)
        assert msg.id == sent and msg.attempt == 2
        assert msg.value == b"flaky" and msg.key == "k" and msg.headers["keep"] == "me"
        assert [f.attempt for f in got.failures] == [1]

    async def test_undecodable_payload_is_dead_lettered_and_consumer_goes_on(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        paid: list[Payment] = []

        async def handler(payment: Payment) -> None:
            paid.append(payment)

        consumer = msgkit_broker.consumer(unique_name, group="g", failure=fast_retries(5))
        await consumer.start(handler)
        producer = msgkit_broker.producer()
        bad = await producer.send(unique_name, {"order_id": "not a number"})
        await producer.send(unique_name, b"{not json")
        await producer.send(unique_name, Payment(order_id=1, amount=9.5))
        dead = await dead_letters(msgkit_broker, unique_name, "g")
        await eventually(lambda: paid == [Payment(order_id=1, amount=9.5)], timeout=WAIT,
                         message="the good payment handled")
        await dead.wait_for(2, timeout=WAIT)
        assert bad in dead.ids
        for msg in dead.messages:  # not retried: decoding cannot succeed later
            assert msg.headers[h.DLQ_ATTEMPTS] == "1"
            assert msg.headers[h.DLQ_EXCEPTION_TYPE] == "msgkit.errors.DecodeError"
        assert consumer.running

    async def test_at_most_once_consumer_does_not_redeliver(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector(fail=lambda m: m.value == b"boom")
        consumer = msgkit_broker.consumer(
            unique_name, group="g", guarantee=msgkit.Guarantee.AT_MOST_ONCE,
            failure=fast_retries(),
        )
        await consumer.start(got)
        producer = msgkit_broker.producer()
        await producer.send(unique_name, b"boom", key="same")
        await producer.send(unique_name, b"after", key="same")
        await got.wait_for(1, timeout=WAIT)
        await producer.send(unique_name, b"last", key="same")
        await got.wait_for(2, timeout=WAIT)
        assert [f.value for f in got.failures] == [b"boom"]
        assert got.values == [b"after", b"last"]
