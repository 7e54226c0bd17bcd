"""Per-key order: one key's messages are handled in publish order, even with concurrency."""

from __future__ import annotations

import asyncio
import random

import msgkit
from msgkit.testing.collect import eventually
from msgkit.testing.conformance.support import WAIT, requires

KEYS = 5
PER_KEY = 40


class OrderingContract:
    async def test_per_key_order_with_concurrency(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        seen = await self._run_ordered(msgkit_broker, unique_name, consumers=1)
        for key, sequence in seen.items():
            assert sequence == sorted(sequence), f"key {key} out of order: {sequence}"

    async def test_per_key_order_across_competing_consumers(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "ordered_per_key")
        seen = await self._run_ordered(msgkit_broker, unique_name, consumers=2)
        for key, sequence in seen.items():
            assert sequence == sorted(sequence), f"key {key} out of order: {sequence}"

    @staticmethod
    async def _run_ordered(
        broker: msgkit.Broker, topic: str, *, consumers: int
    ) -> dict[str, list[int]]:
        seed = random.randrange(1 << 30)
        print(f"ordering seed: {seed}")
        rng = random.Random(seed)
        seen: dict[str, list[int]] = {}

        async def handler(msg: msgkit.Message) -> None:
            await asyncio.sleep(rng.random() / 500)  # shuffle completion order across keys
            assert isinstance(msg.key, str)
            seen.setdefault(msg.key, []).append(msg.json()["n"])

        for _ in range(consumers):
            await broker.consumer(topic, group="g", concurrency=8).start(handler)
        values = [{"k": f"k{k}", "n": n} for n in range(PER_KEY) for k in range(KEYS)]
        await broker.producer().send_many(topic, values, key=lambda v: str(v["k"]))
        await eventually(lambda: sum(map(len, seen.values())) >= KEYS * PER_KEY, timeout=WAIT,
                         message="every message handled")
        assert {k: len(v) for k, v in seen.items()} == {f"k{k}": PER_KEY for k in range(KEYS)}
        return seen

