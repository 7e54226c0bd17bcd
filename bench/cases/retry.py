"""The retry path: handlers that fail, then succeed, against the same flow never failing.

- in-process retry: every message's handler raises once, then succeeds on the in-process
  retry (`FailurePolicy(retries=1)`). The backoff is 0 s, so the figure is the retry
  machinery's cost (tenacity, the exception), not a wait.
- broker redelivery: every message's first delivery raises; the message comes back
  through the broker 0.1 s later (`FailurePolicy(delays=(0.1,))`: the memory hub's timer,
  a RabbitMQ TTL retry queue, a Kafka retry topic) and succeeds. Other messages flow past
  the delayed ones, so the delay is paid once per run, not per message.

On Kafka each redelivery is an awaited publish of a copy to the group's retry topic, one at
a time at concurrency 1, with `linger.ms=0` (`Backend.single_send_options`): about 1,700
msg/s on Apache Kafka 4.1.1 (2026-12-06; about 180 with librdkafka's default 5 ms linger,
measured on Tansu).

Throughput send -> handler as in `bench/flow.py` (pipelined sends, consumer concurrency
1); the baseline is the same consumer whose handler never fails. msgkit logs each failed
delivery at WARNING; those logs are silenced during these runs (a service's log handler
is its own cost).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from bench.flow import runner
from bench.harness import Case, Countdown, Run
from msgkit import FailurePolicy, Message

IN_PROCESS = FailurePolicy(retries=1, backoff=0.0, backoff_max=0.0, delays=())
REDELIVERY = FailurePolicy(retries=0, delays=(0.1,))


class FailOnce(Countdown):
    """Raises on each message's first call (in-process retry)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.failed: set[str] = set()

    async def __call__(self, msg: object) -> None:
        assert isinstance(msg, Message)
        if msg.id not in self.failed:
            self.failed.add(msg.id)
            raise RuntimeError("first try fails")
        await super().__call__(msg)


class FailFirstDelivery(Countdown):
    """Raises on each message's first delivery (redelivered by the broker)."""

    async def __call__(self, msg: object) -> None:
        assert isinstance(msg, Message)
        if msg.attempt == 1:
            raise RuntimeError("first delivery fails")
        await super().__call__(msg)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    logger = logging.getLogger("msgkit")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def failing(make: type[Countdown], policy: FailurePolicy) -> Run:
    run = runner(make, consumer={"failure": policy})

    async def quietly(url: str, n: int) -> float:
        with quiet():
            return await run(url, n)

    return quietly


MESSAGES = {
    ("memory", "in-process"): 50_000, ("memory", "broker redelivery"): 50_000,
    ("kafka", "in-process"): 10_000, ("kafka", "broker redelivery"): 2_000,
    ("amqp", "in-process"): 5_000, ("amqp", "broker redelivery"): 3_000,
}
"""Fewer messages where a run is slow (Kafka redelivery: about 1,700 msg/s on Apache Kafka)."""
LABELS = {"memory": "memory", "kafka": "kafka", "amqp": "rabbitmq"}

CASES = [
    Case(f"retry {label} [{LABELS[backend]}]", backend, "no failures",
         failing(make, policy), runner(Countdown), messages=MESSAGES[backend, label],
         notes=f"every message fails once; {what}")
    for backend in ("memory", "kafka", "amqp")
    for label, make, policy, what in (
        ("in-process", FailOnce, IN_PROCESS, "retries=1, backoff 0 s"),
        ("broker redelivery", FailFirstDelivery, REDELIVERY, "redelivered after 0.1 s"),
    )
]
