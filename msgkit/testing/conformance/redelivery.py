"""Failures: redelivery with an attempt count, dead-lettering, and consumers that survive."""

from __future__ import annotations

import time

from pydantic import BaseModel

import msgkit
from msgkit import headers as h
from msgkit.consumer import DLQ_GROUP
from msgkit.testing.collect import Collector, eventually
from msgkit.testing.conformance.support import WAIT, fast_retries, requires


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

    async def test_exhausted_attempts_go_to_the_dead_letter_topic(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        failing = Collector(fail=lambda m: True)
        await msgkit_broker.consumer(unique_name, group="g", failure=fast_retries(3)).start(failing)
        sent = await msgkit_broker.producer().send(unique_name, b"poison", key="p",
                                                   headers={"keep": "me"})
        dead = Collector()
        dlq = msgkit.dead_letter_topic(unique_name, "g")
        await msgkit_broker.consumer(dlq, group=DLQ_GROUP, start="earliest").start(dead)
        [msg] = await dead.wait_for(1, timeout=WAIT)
        assert [f.attempt for f in failing.failures] == [1, 2, 3]
        assert msg.id == sent and msg.value == b"poison" and msg.key == "p"
        assert msg.headers["keep"] == "me"
        assert msg.headers[h.DLQ_ORIGINAL_TOPIC] == unique_name
        assert msg.headers[h.DLQ_GROUP] == "g"
        assert msg.headers[h.DLQ_ATTEMPTS] == "3"
        assert msg.headers[h.DLQ_EXCEPTION_TYPE] == "builtins.RuntimeError"
        assert "collector told to fail" in msg.headers[h.DLQ_EXCEPTION_MESSAGE]
        assert "Traceback" in msg.headers[h.DLQ_TRACEBACK]

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
        dead = Collector()
        dlq = msgkit.dead_letter_topic(unique_name, "g")
        await msgkit_broker.consumer(dlq, group=DLQ_GROUP, start="earliest").start(dead)
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

    async def test_delayed_redelivery_lets_later_messages_through(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "delayed_redelivery")
        delay = 1.5
        got = Collector(fail=lambda m: m.value == b"slow" and m.attempt == 1)
        policy = msgkit.FailurePolicy(max_attempts=3, delays=(delay,))
        await msgkit_broker.consumer(unique_name, group="g", failure=policy).start(got)
        producer = msgkit_broker.producer()
        # One key for all: on partitioned brokers only a key's messages keep their order,
        # and the retried copy must not hold that key while it waits.
        await producer.send(unique_name, b"slow", key="k")
        await got.wait_failures(1, timeout=WAIT)
        failed_at = time.monotonic()
        for n in range(5):
            await producer.send(unique_name, f"fast-{n}", key="k")
        await got.wait_for(6, timeout=WAIT)
        retried_after = time.monotonic() - failed_at
        assert got.values[:5] == [f"fast-{n}".encode() for n in range(5)]
        assert got.values[5] == b"slow" and got.messages[5].attempt == 2
        assert retried_after >= delay * 0.8, f"redelivered after {retried_after:.2f}s"
