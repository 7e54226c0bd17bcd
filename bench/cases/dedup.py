"""Idempotency-key deduplication: what each store costs.

- "dedup consumer [store] cN": send -> handler on the memory broker with `Dedup(store)` and
  consumer concurrency N, against the same consumer without dedup (the baseline); the
  added latency per message is 1/msgkit - 1/baseline.
- "dedup pairs [store] xC": claim + complete pairs per second straight on the store, from C
  tasks at once (x1: one after the other, the latency; x64: what a busy consumer sees).

Goals: the memory store adds < 10 us per message; SQLite >= 10,000 pairs/s on one core.
Redis and PostgreSQL come from MSGKIT_TEST_REDIS_URL / MSGKIT_TEST_POSTGRES_URL (default:
local servers); each run uses its own key prefix or table and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from bench.flow import awaited_sends_to_handler
from bench.harness import Case
from msgkit.dedup import Dedup, IdempotencyStore, Scope, open_store
from msgkit.testing.stores import POSTGRES_URL, REDIS_URL

TTL, LEASE = 3600.0, 30.0


@contextlib.asynccontextmanager
async def fresh_store(kind: str) -> AsyncIterator[IdempotencyStore]:
    """An empty store of `kind`, removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    if kind == "memory":
        store = open_store("memory://")
        yield store
        await store.close()
    elif kind == "sqlite":
        directory = tempfile.mkdtemp(prefix="msgkit-bench-")
        store = open_store(f"sqlite:///{directory}/dedup.db")
        try:
            yield store
        finally:
            await store.close()
            shutil.rmtree(directory, ignore_errors=True)
    elif kind == "redis":
        store = open_store(REDIS_URL, prefix=f"msgkit-bench:{tag}:")
        try:
            yield store
        finally:
            client = store.native  # type: ignore[attr-defined]
            async for key in client.scan_iter(match=f"msgkit-bench:{tag}:*", count=1000):
                await client.delete(key)
            await store.close()
    else:
        table = f"dedup_bench_{tag}"
        store = open_store(POSTGRES_URL, table=table)
        try:
            yield store
        finally:
            await store.close()
            import psycopg  # here: `make bench` must load without the postgres extra

            async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")


async def _send_to_handler(url: str, n: int, dedup: Dedup | None, concurrency: int = 1) -> float:
    return await awaited_sends_to_handler(url, n, dedup=dedup, concurrency=concurrency)


def consumer_with(kind: str, concurrency: int = 1) -> Callable[[str, int], Awaitable[float]]:
    async def run(url: str, n: int) -> float:
        async with fresh_store(kind) as store:
            await store.claim(Scope("warm", "up"), "k", LEASE)  # connect outside the clock
            return await _send_to_handler(url, n, Dedup(store, ttl=TTL, lease=LEASE), concurrency)

    return run


def without_dedup(concurrency: int = 1) -> Callable[[str, int], Awaitable[float]]:
    async def run(url: str, n: int) -> float:
        return await _send_to_handler(url, n, None, concurrency)

    return run


def pairs(kind: str, tasks: int) -> Callable[[str, int], Awaitable[float]]:
    """`n` claim + complete pairs on fresh keys from `tasks` tasks (the url is unused)."""

    async def run(url: str, n: int) -> float:
        async with fresh_store(kind) as store:
            await store.claim(Scope("warm", "up"), "k", LEASE)
            scope = Scope("bench", "g")

            async def worker(w: int) -> None:
                for i in range(w, n, tasks):
                    result = await store.claim(scope, f"k{i}", LEASE)
                    assert result.token is not None
                    await store.complete(scope, f"k{i}", result.token, TTL)

            start = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(tasks)))
            return time.perf_counter() - start

    return run


_SIZES = {"memory": 100_000, "sqlite": 5_000, "redis": 3_000, "postgres": 1_500}

CASES = [
    *(
        Case(f"dedup consumer [{kind}] c{c}", "memory", "no dedup", consumer_with(kind, c),
             without_dedup(c), messages=_SIZES[kind] * c // min(c, 4),
             notes=f"send->handler, consumer concurrency {c}")
        for kind in _SIZES
        for c in ((1,) if kind == "memory" else (1, 16))
    ),
    *(
        Case(f"dedup pairs [{kind}] x{tasks}", "memory", "", pairs(kind, tasks), None,
             messages=_SIZES[kind] * (2 if tasks > 1 else 1), notes="claim+complete per second")
        for kind in _SIZES
        for tasks in (1, 64)
    ),
]
