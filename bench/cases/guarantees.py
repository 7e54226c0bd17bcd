"""Each delivery guarantee side by side on each backend, against at-least-once (the default).

Throughput send -> handler: a consumer (concurrency 1, default prefetch) handles `n`
messages sent in pipelined `send_many` chunks, from the first send to the last handled.

- at-most-once: the producer does not wait for the broker; the consumer acks before the
  handler runs.
- at-least-once (the baseline of every row): the producer waits for confirmation; the
  consumer acks after the handler returned.
- exactly-once (dedup): at-least-once delivery plus a `Dedup` idempotency store on the
  consumer (in-memory store here: the cost of the claim/complete path; see the dedup cases
  for the other stores).

- exactly-once (transactions), Kafka only: the consumer commits each batch (`prefetch`
  messages, 512 by default there) in one transaction; with an exactly-once producer too,
  each `send_many` chunk is one transaction. Kafka refuses a store with its transactions
  (a store's mark cannot join them): there, database effects take at-least-once + dedup.

A new mode is one more `Mode` in `MODES` (with `backends=` when only some brokers have it).

The relay cases (Kafka): the handler sends one message on per input with `ctx.send`, as a
consume-transform-produce service does; exactly-once (its output in the batch's
transaction) against at-least-once (each send awaited, then the ack).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgkit
from bench.flow import send_to_handler
from bench.harness import Case, Countdown, Run
from msgkit import Guarantee
from msgkit.dedup import Dedup

BACKENDS = ("memory", "kafka", "amqp")


@dataclass(frozen=True)
class Mode:
    name: str
    producer: Guarantee
    consumer: Guarantee
    dedup: str | None = None
    """Idempotency-store URL: each run gets a fresh `Dedup(dedup)` on its consumer."""
    backends: tuple[str, ...] = BACKENDS
    options: Mapping[str, Any] = field(default_factory=dict)
    """More `broker.consumer()` keyword arguments."""


AT_LEAST_ONCE = Mode("at-least-once", Guarantee.AT_LEAST_ONCE, Guarantee.AT_LEAST_ONCE)
TRANSACTIONS = Mode("exactly-once (transactions)", Guarantee.AT_LEAST_ONCE,
                    Guarantee.EXACTLY_ONCE, backends=("kafka",))
MODES = [
    Mode("at-most-once", Guarantee.AT_MOST_ONCE, Guarantee.AT_MOST_ONCE),
    Mode("exactly-once (dedup memory://)", Guarantee.AT_LEAST_ONCE, Guarantee.EXACTLY_ONCE,
         dedup="memory://", backends=("memory", "amqp")),
    Mode("at-least-once + dedup memory://", Guarantee.AT_LEAST_ONCE, Guarantee.AT_LEAST_ONCE,
         dedup="memory://", backends=("kafka",)),
    TRANSACTIONS,
    Mode("exactly-once (transactions, prefetch 32)", Guarantee.AT_LEAST_ONCE,
         Guarantee.EXACTLY_ONCE, backends=("kafka",), options={"prefetch": 32}),
    Mode("exactly-once (transactional producer and consumer)", Guarantee.EXACTLY_ONCE,
         Guarantee.EXACTLY_ONCE, backends=("kafka",)),
]


class Relaying(Countdown):
    """Sends each message on to `<topic>.out` (`ctx.send`), then counts it."""

    async def __call__(self, msg: object, ctx: msgkit.Context | None = None) -> None:
        assert isinstance(msg, msgkit.Message) and ctx is not None
        await ctx.send(f"{msg.topic}.out", msg.value)
        await super().__call__(msg)


def run_mode(mode: Mode, relay: bool = False) -> Run:
    async def run(url: str, n: int) -> float:
        consumer: dict[str, Any] = {"guarantee": mode.consumer, **mode.options}
        producer = {"guarantee": mode.producer}
        if mode.dedup is None:
            handler = Relaying(n + 1) if relay else Countdown(n + 1)
            return await send_to_handler(url, n, handler, producer=producer,
                                         consumer=consumer)
        async with Dedup(mode.dedup) as dedup:
            return await send_to_handler(url, n, Countdown(n + 1), producer=producer,
                                         consumer={**consumer, "dedup": dedup})

    return run


MESSAGES = {"memory": 100_000, "kafka": 20_000, "amqp": 10_000}
LABELS = {"memory": "memory", "kafka": "kafka", "amqp": "rabbitmq"}

CASES = [
    Case(f"guarantee {mode.name} [{LABELS[backend]}]", backend, AT_LEAST_ONCE.name,
         run_mode(mode), run_mode(AT_LEAST_ONCE), messages=MESSAGES[backend],
         rounds=5 if backend == "amqp" else 3,  # RabbitMQ runs vary most
         notes="send_many chunks of 1000 -> handler, concurrency 1; ratio = mode / at-least-once")
    for backend in BACKENDS
    for mode in MODES
    if backend in mode.backends
] + [
    Case("guarantee exactly-once relay (transactions) [kafka]", "kafka", "at-least-once relay",
         run_mode(TRANSACTIONS, relay=True), run_mode(AT_LEAST_ONCE, relay=True), messages=5_000,
         notes="send_many chunks -> handler sending one message on; ratio = exactly-once / "
               "at-least-once"),
]
