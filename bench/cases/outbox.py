"""The transactional outbox: what a `Relay` costs against sending the same messages straight.

Each run has its own outbox table (`msgkit_outbox_bench_<random>`: in a temporary SQLite
file, or in PostgreSQL's test database - `MSGKIT_TEST_POSTGRES_URL`, default a local
server - dropped afterwards) and its own topic (Kafka: created beforehand, 3 partitions;
RabbitMQ: a quorum queue bound, so mandatory publishing has a route). Rows are 100-byte
values without key, written with `Outbox.send` (psycopg, async) or `Outbox.send_sync`
(`sqlite3`, in a worker thread, as a blocking service writes). Relays run with their
defaults (batches of 1,000, rows deleted once published); before the clock starts, the relay
has connected to the database and published one message (its producer is open).

- "outbox drain": `n` rows committed beforehand (transactions of 100); from `relay.start()`
  to the `n`th row published and marked. Baseline: the same messages with `send_many` in
  chunks of a relay's batch, so the ratio is the database's share.
- "outbox steady": the relay runs while the writer commits `n` rows in transactions of 100
  as fast as it can, on the same event loop; from the first commit to the `n`th row
  published. Baseline: `send_many` of each 100 instead of the transaction.
- "outbox latency at 200/s": single-row transactions at a fixed rate with the relay running;
  per row, from its commit returning to the broker confirming it (`Relay.publish` returned:
  the mark in the table is not counted). Baseline: an awaited `send` of each message,
  open-loop at the same rate, from the call to its confirmation. PostgreSQL wakes the relay
  with LISTEN/NOTIFY; SQLite has no notifications: its relay checks for another
  connection's commit every 5 ms (`PRAGMA data_version`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgkit
from bench.cases.kafka import _create
from bench.cases.latency import paced
from bench.cases.rabbitmq import _topology
from bench.flow import TIMEOUT, forget, fresh_topic
from bench.harness import Case, Run, Sample
from msgkit.encoded import encode_messages
from msgkit.message import Outgoing
from msgkit.outbox import Outbox, Relay
from msgkit.outbox.relay import DEFAULT_BATCH
from msgkit.testing import stores

BODY = b"x" * 100
TRANSACTION = 100
"""Rows per writer transaction (drain and steady state)."""
BATCH = DEFAULT_BATCH
"""The relay's batch size (its default), and the baseline's `send_many` chunk in the drain."""
RATE = 200
"""Single-row commits per second in the latency cases."""
BACKENDS = ("memory", "kafka", "amqp")
LABELS = {"memory": "memory", "kafka": "kafka", "amqp": "rabbitmq"}
DATABASES = ("postgres", "sqlite")


class TimedRelay(Relay):
    """A relay that says when it has published `target` rows, and when the broker confirmed
    each message (by message id) while `recording`."""

    def __init__(self, db: str, broker: msgkit.Broker, **options: Any) -> None:
        super().__init__(db, broker, **options)
        self.target = 0
        self.done = asyncio.Event()
        self.recording = False
        self.confirmed: dict[str, float] = {}

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        await super().publish(messages)
        if self.recording:
            now = time.perf_counter()
            for out in messages:
                self.confirmed[out.id] = now

    async def publish_round(self) -> bool | None:
        progressed = await super().publish_round()
        if self.target and self.published >= self.target:
            self.done.set()
        return progressed

    async def warm_up(self, topic: str) -> None:
        """Connect to the database (creating the table) and open the producer."""
        await self.counts()
        await self.publish(encode_messages(topic, (BODY,)))


class Writer(Protocol):
    async def commit(self, topic: str, rows: int) -> tuple[list[str], float]:
        """Writes `rows` messages in one transaction: their ids, and when the commit returned."""
        ...


class PostgresWriter:
    def __init__(self, conn: Any, table: str) -> None:
        self.conn, self.outbox = conn, Outbox(table)

    async def commit(self, topic: str, rows: int) -> tuple[list[str], float]:
        async with self.conn.transaction():
            ids = [await self.outbox.send(self.conn, topic, BODY) for _ in range(rows)]
        return ids, time.perf_counter()


class SQLiteWriter:
    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn, self.outbox = conn, Outbox(table)

    def _commit(self, topic: str, rows: int) -> tuple[list[str], float]:
        with self.conn:  # commits on leaving
            ids = [self.outbox.send_sync(self.conn, topic, BODY) for _ in range(rows)]
        return ids, time.perf_counter()

    async def commit(self, topic: str, rows: int) -> tuple[list[str], float]:
        return await asyncio.to_thread(self._commit, topic, rows)


_postgres_checked = False


@contextlib.asynccontextmanager
async def fresh_outbox(kind: str) -> AsyncIterator[tuple[str, str, Writer]]:
    """The relay's database URL, a fresh table name and a writer; removed afterwards."""
    global _postgres_checked
    table = f"msgkit_outbox_bench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        directory = tempfile.mkdtemp(prefix="msgkit-bench-")
        conn = sqlite3.connect(f"{directory}/outbox.db", timeout=30, check_same_thread=False)
        try:
            yield f"sqlite:///{directory}/outbox.db", table, SQLiteWriter(conn, table)
        finally:
            conn.close()
            shutil.rmtree(directory, ignore_errors=True)
        return
    import psycopg  # here: `make bench` must load without the postgres extra

    if not _postgres_checked:
        await asyncio.to_thread(stores.ensure_postgres)
        _postgres_checked = True
    async with await psycopg.AsyncConnection.connect(stores.POSTGRES_URL, autocommit=True) as pg:
        try:
            yield stores.POSTGRES_URL, table, PostgresWriter(pg, table)
        finally:
            await pg.execute(f'DROP TABLE IF EXISTS "{table}"')


@contextlib.asynccontextmanager
async def fresh_broker(backend: str, url: str) -> AsyncIterator[tuple[msgkit.Broker, str]]:
    """A connected broker and a topic that takes messages (see the module's docstring)."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "amqp":
            topic, _ = await stack.enter_async_context(_topology(url, "quorum"))
        else:
            topic = fresh_topic()
            if backend == "kafka":
                await _create(url, topic)
        broker = await stack.enter_async_context(msgkit.connect(url))
        try:
            yield broker, topic
        finally:
            forget(broker, topic)


async def _write(writer: Writer, topic: str, n: int) -> None:
    for first in range(0, n, TRANSACTION):
        await writer.commit(topic, min(TRANSACTION, n - first))


async def relay_drain(backend: str, db: str, url: str, n: int) -> float:
    async with fresh_outbox(db) as (db_url, table, writer), \
            fresh_broker(backend, url) as (broker, topic):
        relay = TimedRelay(db_url, broker, table=table, batch_size=BATCH)
        await relay.warm_up(topic)
        await _write(writer, topic, n)
        relay.target = n
        try:
            start = time.perf_counter()
            await relay.start()
            await asyncio.wait_for(relay.done.wait(), TIMEOUT)
            return time.perf_counter() - start
        finally:
            await relay.stop()


async def relay_steady(backend: str, db: str, url: str, n: int) -> float:
    async with fresh_outbox(db) as (db_url, table, writer), \
            fresh_broker(backend, url) as (broker, topic):
        relay = TimedRelay(db_url, broker, table=table, batch_size=BATCH)
        await relay.warm_up(topic)
        relay.target = n
        await relay.start()
        try:
            start = time.perf_counter()
            await _write(writer, topic, n)
            await asyncio.wait_for(relay.done.wait(), TIMEOUT)
            return time.perf_counter() - start
        finally:
            await relay.stop()


async def relay_latency(backend: str, db: str, url: str, n: int) -> Sample:
    async with fresh_outbox(db) as (db_url, table, writer), \
            fresh_broker(backend, url) as (broker, topic):
        relay = TimedRelay(db_url, broker, table=table, batch_size=BATCH)
        await relay.warm_up(topic)
        relay.target, relay.recording = n, True
        committed: dict[str, float] = {}
        await relay.start()
        try:
            start = time.perf_counter()
            for i in range(n):  # one connection: commits one after the other, on schedule
                delay = start + i / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                [message_id], at = await writer.commit(topic, 1)
                committed[message_id] = at
            await asyncio.wait_for(relay.done.wait(), TIMEOUT)
            elapsed = time.perf_counter() - start
        finally:
            await relay.stop()
        return Sample(elapsed, [relay.confirmed[i] - at for i, at in committed.items()])


async def send_many(backend: str, url: str, n: int, chunk: int) -> float:
    async with fresh_broker(backend, url) as (broker, topic):
        producer = broker.producer()
        await producer.send(topic, BODY)
        start = time.perf_counter()
        for first in range(0, n, chunk):
            await producer.send_many(topic, [BODY] * min(chunk, n - first))
        return time.perf_counter() - start


async def send_latency(backend: str, url: str, n: int) -> Sample:
    async with fresh_broker(backend, url) as (broker, topic):
        producer = broker.producer()
        await producer.send(topic, BODY)
        latencies: list[float] = []

        async def send(body: bytes) -> None:
            began = time.perf_counter()
            await producer.send(topic, body)
            latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        await paced(n, RATE, send)
        return Sample(time.perf_counter() - start, latencies)


def _outbox(run: Callable[[str, str, str, int], Awaitable[float | Sample]],
            backend: str, db: str) -> Run:
    return lambda url, n: run(backend, db, url, n)


def _direct(backend: str, chunk: int) -> Run:
    return lambda url, n: send_many(backend, url, n, chunk)


def _direct_latency(backend: str) -> Run:
    return lambda url, n: send_latency(backend, url, n)


CASES = [
    case
    for db in DATABASES
    for backend in BACKENDS
    for case in (
        Case(f"outbox drain [{db} -> {LABELS[backend]}]", backend, "send_many",
             _outbox(relay_drain, backend, db), _direct(backend, BATCH), messages=20_000,
             notes=f"rows committed beforehand -> published by a relay (batch {BATCH}); "
                   f"baseline send_many chunks of {BATCH}"),
        Case(f"outbox steady [{db} -> {LABELS[backend]}]", backend, "send_many",
             _outbox(relay_steady, backend, db), _direct(backend, TRANSACTION), messages=20_000,
             notes=f"commits of {TRANSACTION} rows -> published by a running relay; "
                   f"baseline send_many chunks of {TRANSACTION}"),
        Case(f"outbox latency at {RATE}/s [{db} -> {LABELS[backend]}]", backend, "send",
             _outbox(relay_latency, backend, db), _direct_latency(backend), messages=1_000,
             notes="single-row commits at a fixed rate; commit -> broker confirmed; "
                   "baseline awaited send -> confirmed"),
    )
]
