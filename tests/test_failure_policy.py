"""The failure policy's pieces on the memory backend (every backend runs the conformance ones)."""

import pytest
from pydantic import BaseModel, ValidationError

import msgkit
from msgkit import headers as h
from msgkit.consumer import DLQ_GROUP
from msgkit.failure import until_settled
from msgkit.testing import Collector, eventually


class Strict(BaseModel):
    n: int


def _dlq(broker: msgkit.Broker, topic: str) -> tuple[msgkit.Consumer, Collector]:
    return broker.consumer(topic, group=DLQ_GROUP, start="earliest"), Collector()


async def test_in_process_retries_succeed_without_a_redelivery(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    calls: list[int] = []

    async def flaky(msg: msgkit.Message) -> None:
        calls.append(msg.attempt)
        if len(calls) < 3:
            raise ConnectionError("transient")

    policy = msgkit.FailurePolicy(retries=3, backoff=0.001, backoff_max=0.005)
    await memory_broker.consumer(unique_name, group="g", failure=policy).start(flaky)
    await memory_broker.producer().send(unique_name, b"x")
    await eventually(lambda: len(calls) == 3)
    assert calls == [1, 1, 1], "all three tries belong to the first delivery"


async def test_validation_errors_raised_by_handlers_are_not_retried(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    tries = 0

    async def validates(msg: msgkit.Message) -> None:
        nonlocal tries
        tries += 1
        Strict.model_validate({"n": "nope"})

    policy = msgkit.FailurePolicy(retries=5, delays=(0.0, 0.0))
    await memory_broker.consumer(unique_name, group="g", failure=policy).start(validates)
    dlq, dead = _dlq(memory_broker, msgkit.dead_letter_topic(unique_name, "g"))
    await dlq.start(dead)
    await memory_broker.producer().send(unique_name, b"x")
    [msg] = await dead.wait_for(1)
    assert tries == 1
    assert msg.headers[h.DLQ_EXCEPTION_TYPE] == \
        f"{ValidationError.__module__}.{ValidationError.__qualname__}"


async def test_retry_if_and_non_retryable_send_straight_to_the_dead_letter_topic(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    class Fatal(Exception):
        pass

    got = Collector(fail=lambda m: True)
    policy = msgkit.FailurePolicy(retries=3, delays=(0.0,), non_retryable=(RuntimeError,),
                                  dead_letter_to="parking-lot")
    await memory_broker.consumer(unique_name, group="g", failure=policy).start(got)
    dlq, dead = _dlq(memory_broker, "parking-lot")
    await dlq.start(dead)
    await memory_broker.producer().send(unique_name, b"x")
    [msg] = await dead.wait_for(1)
    assert len(got.failures) == 1 and msg.headers[h.DLQ_ATTEMPTS] == "1"

    only_fatal = msgkit.FailurePolicy(delays=(0.0, 0.0), retry_if=lambda e: not isinstance(e, Fatal))
    assert only_fatal.retryable(ConnectionError()) and not only_fatal.retryable(Fatal())
    assert only_fatal.deliveries == 3


async def test_redead_lettering_replaces_failure_headers(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    got = Collector(fail=lambda m: True)
    policy = msgkit.FailurePolicy(delays=())
    await memory_broker.consumer(unique_name, group="g", failure=policy).start(got)
    dlq, dead = _dlq(memory_broker, msgkit.dead_letter_topic(unique_name, "g"))
    await dlq.start(dead)
    producer = memory_broker.producer()
    await producer.send(unique_name, b"x", headers={"keep": "1"})
    [first] = await dead.wait_for(1)
    # replay the dead letter as it is: its old failure headers must not pile up
    await producer.publish_raw([msgkit.message.Outgoing(
        unique_name, first.value, first.key, dict(first.headers), "replayed", first.timestamp)])
    await dead.wait_for(2)
    second = dead.messages[1]
    assert second.headers["keep"] == "1"
    assert [k for k in second.headers if k == h.DLQ_ATTEMPTS] == [h.DLQ_ATTEMPTS]
    failed_at = [float(m.header(h.DLQ_LAST_FAILURE_AT) or "") for m in (first, second)]
    assert failed_at == sorted(failed_at)
    assert h.ATTEMPT not in second.headers


async def test_without_dead_letter_the_failed_message_is_acknowledged(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    got = Collector(fail=lambda m: m.value == b"bad")
    policy = msgkit.FailurePolicy(delays=(), dead_letter=False)
    await memory_broker.consumer(unique_name, group="g", failure=policy).start(got)
    producer = memory_broker.producer()
    await producer.send(unique_name, b"bad")
    await producer.send(unique_name, b"good")
    await got.wait_for(1)
    assert len(got.failures) == 1
    assert not memory_broker.native.topic(msgkit.dead_letter_topic(unique_name, "g")).log


async def test_until_settled_tries_again_until_the_step_succeeds() -> None:
    tries = 0

    async def publish() -> None:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise msgkit.PublishError("dead-letter topic unavailable")

    await until_settled(publish, stopping=lambda: False, message_id="m1")
    assert tries == 3


async def test_until_settled_gives_up_only_once_the_consumer_stops() -> None:
    tries = 0

    async def publish() -> None:
        nonlocal tries
        tries += 1
        raise msgkit.PublishError("dead-letter topic unavailable")

    with pytest.raises(msgkit.PublishError):
        await until_settled(publish, stopping=lambda: tries >= 2, message_id="m1")
    assert tries == 2
