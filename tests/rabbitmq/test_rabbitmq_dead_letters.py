"""RabbitMQ dead letters name where the message was published, even after redelivery copies."""

from __future__ import annotations

import pytest

import msgkit
from msgkit import headers as h
from msgkit.failure import dead_letter_topic
from msgkit.testing import Collector


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_dead_letter_after_delayed_retry_names_the_original_route(
    amqp_url: str, unique_name: str, queue_type: str
) -> None:
    async with msgkit.connect(amqp_url, queue_type=queue_type) as rabbit:
        await _dead_letter_after_retries(rabbit, unique_name)


async def _dead_letter_after_retries(rabbit: msgkit.Broker, unique_name: str) -> None:
    dead = Collector()
    await rabbit.consumer(dead_letter_topic(unique_name, "g"), group="watch").start(dead)
    got = Collector(fail=lambda m: True)
    # Three deliveries: the original, an immediate copy, a copy delayed in a retry queue.
    policy = msgkit.FailurePolicy(delays=(0.0, 0.2))
    await rabbit.consumer(unique_name, group="g", failure=policy).start(got)
    sent = await rabbit.producer().send(unique_name, b"doomed", key="a")
    [letter] = await dead.wait_for(1)
    assert [m.attempt for m in got.failures] == [1, 2, 3]
    assert not [k for m in got.failures for k in m.headers if k.startswith("msgkit-rabbitmq-")]
    assert letter.id == sent and letter.headers[h.DLQ_ATTEMPTS] == "3"
    origin = {k.removeprefix(h.DLQ_PREFIX): v for k, v in letter.headers.items()
              if k in {f"{h.DLQ_PREFIX}{n}" for n in ("exchange", "routing-key", "queue",
                                                       "retry-queue")}}
    assert origin == {"exchange": unique_name, "routing-key": "a", "queue": f"{unique_name}.g",
                      "retry-queue": f"{unique_name}.g.retry.200"}
    assert not [k for k in letter.headers if k.startswith("msgkit-rabbitmq-")]
