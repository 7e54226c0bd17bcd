"""Marking the key done in the handler's own transaction (SQL stores): the business write and
the mark commit or roll back together."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import psycopg
import pytest
from psycopg import sql

import msgkit
from msgkit.dedup import Dedup, DedupClaim, LeaseLostError, Scope, current_claim
from msgkit.message import Message
from msgkit.testing.collect import eventually
from msgkit.testing.conformance.support import fast_retries

WAIT = 15.0


class Crash(RuntimeError):
    pass


class CountingDedup(Dedup):
    """Remembers the deliveries it settled as duplicates."""

    skipped: list[Message]

    async def claim(self, msg: Message, group: str | None) -> DedupClaim | None:
        claim = await super().claim(msg, group)
        if claim is None:
            self.skipped.append(msg)
        return claim

    async def __aenter__(self) -> CountingDedup:
        self.skipped = []
        return self


class Ledger(Protocol):
    """A business table next to the dedup table, written in one transaction with the mark."""

    url: str

    async def pay(self, claim: DedupClaim, order: str, *, fail_before_commit: bool = False) -> None: ...

    async def paid(self) -> list[str]: ...


class PostgresLedger:
    def __init__(self, store_url: str) -> None:
        self.url = store_url
        self._db = store_url.partition("?")[0]
        self._table = sql.Identifier(f"payments_{uuid.uuid4().hex[:12]}")

    async def setup(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._db, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE TABLE {} (order_id text)").format(self._table))

    async def teardown(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._db, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))

    async def pay(self, claim: DedupClaim, order: str, *, fail_before_commit: bool = False) -> None:
        async with await psycopg.AsyncConnection.connect(self._db) as conn, conn.transaction():
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(self._table), (order,))
            await claim.complete_in(conn)
            if fail_before_commit:
                raise Crash("failed inside the transaction")

    async def paid(self) -> list[str]:
        async with await psycopg.AsyncConnection.connect(self._db) as conn:
            cursor = await conn.execute(sql.SQL("SELECT order_id FROM {}").format(self._table))
            return [row[0] for row in await cursor.fetchall()]


class SQLiteLedger:
    """The business transaction runs in a worker thread with a blocking sqlite3 connection."""

    def __init__(self, store_url: str) -> None:
        self.url = store_url
        self._path = store_url.removeprefix("sqlite:///")

    async def setup(self) -> None:
        await asyncio.to_thread(self._sync, "CREATE TABLE payments (order_id TEXT)")

    async def teardown(self) -> None:
        pass

    async def pay(self, claim: DedupClaim, order: str, *, fail_before_commit: bool = False) -> None:
        def write() -> None:
            conn = sqlite3.connect(self._path, timeout=5)
            try:
                with conn:  # commits, or rolls back on an exception
                    conn.execute("INSERT INTO payments VALUES (?)", (order,))
                    claim.complete_in_sync(conn)
                    if fail_before_commit:
                        raise Crash("failed inside the transaction")
            finally:
                conn.close()

        await asyncio.to_thread(write)

    async def paid(self) -> list[str]:
        rows = await asyncio.to_thread(self._sync, "SELECT order_id FROM payments")
        return [row[0] for row in rows]

    def _sync(self, statement: str) -> list[Any]:
        conn = sqlite3.connect(self._path)
        try:
            with conn:
                return conn.execute(statement).fetchall()
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    url = str(request.getfixturevalue(f"{request.param}_store_url"))
    made = PostgresLedger(url) if request.param == "postgres" else SQLiteLedger(url)
    async with Dedup(url) as dedup:  # creates the dedup table before the business one
        await dedup.store.claim(Scope("warm", "up"), "k", 1.0)
    await made.setup()
    yield made
    await made.teardown()


async def test_crash_after_commit_does_not_repeat_the_side_effect(
    memory_broker: msgkit.Broker, unique_name: str, ledger: Ledger
) -> None:
    """The handler committed payment and mark together, then failed before the ack: the
    retry finds the key done, and so does a copy published later."""
    runs: list[Message] = []

    async def pay(msg: Message) -> None:
        runs.append(msg)
        claim = current_claim()
        assert claim is not None
        await ledger.pay(claim, msg.text())
        if msg.attempt == 1:
            raise Crash("after the commit, before the ack")

    async with CountingDedup(ledger.url) as dedup:
        await memory_broker.consumer(unique_name, group="g", dedup=dedup,
                                     failure=fast_retries()).start(pay)
        producer = memory_broker.producer()
        await producer.send(unique_name, "order-1", idempotency_key="order-1")
        await eventually(lambda: len(dedup.skipped) == 1, timeout=WAIT,
                         message="the retry skipped as done")
        assert dedup.skipped[0].attempt == 2
        await producer.send(unique_name, "order-1", idempotency_key="order-1")
        await eventually(lambda: len(dedup.skipped) == 2, timeout=WAIT,
                         message="the copy skipped as done")
        assert [m.attempt for m in runs] == [1]
        assert await ledger.paid() == ["order-1"]


async def test_failure_inside_the_transaction_rolls_back_the_mark_too(
    memory_broker: msgkit.Broker, unique_name: str, ledger: Ledger
) -> None:
    runs: list[Message] = []

    async def pay(msg: Message) -> None:
        claim = current_claim()
        assert claim is not None
        await ledger.pay(claim, msg.text(), fail_before_commit=msg.attempt == 1)
        runs.append(msg)

    async with CountingDedup(ledger.url) as dedup:
        await memory_broker.consumer(unique_name, group="g", dedup=dedup,
                                     failure=fast_retries()).start(pay)
        await memory_broker.producer().send(unique_name, "order-1", idempotency_key="order-1")
        await eventually(lambda: len(runs) == 1, timeout=WAIT, message="the retry paid")
        assert runs[0].attempt == 2  # the rolled-back mark did not make the retry a duplicate
        assert not dedup.skipped
        assert await ledger.paid() == ["order-1"]


async def test_a_holder_whose_lease_was_taken_over_cannot_commit(ledger: Ledger) -> None:
    async with Dedup(ledger.url, lease=0.3, max_poll=0.05) as dedup:
        msg = Message("orders", b"order-1", id="m-1", idempotency_key="order-1")
        stale = await dedup.claim(msg, "billing")
        fresh = await asyncio.wait_for(dedup.claim(msg, "billing"), WAIT)  # after the lease
        assert stale is not None and fresh is not None
        with pytest.raises(LeaseLostError):
            await ledger.pay(stale, "stale")
        await ledger.pay(fresh, "fresh")
        assert await ledger.paid() == ["fresh"]
        assert await dedup.claim(msg, "billing") is None


async def test_stores_outside_the_database_refuse_complete_in() -> None:
    async with Dedup("memory://") as dedup:
        claim = await dedup.claim(Message("orders", b"x", id="m-1"), "billing")
        assert claim is not None
        with pytest.raises(msgkit.ConfigurationError, match="SQLite and PostgreSQL"):
            await claim.complete_in(object())
