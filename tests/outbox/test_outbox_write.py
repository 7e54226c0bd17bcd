"""`Outbox.send` through every kind of connection a service has: the row appears only when
the caller's transaction commits, and holds the message byte for byte."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiosqlite
import psycopg
import pytest
from multidict import MultiDict
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from msgkit.errors import ConfigurationError
from msgkit.headers import CONTENT_TYPE, IDEMPOTENCY_KEY, MESSAGE_ID
from tests.outbox.conftest import OutboxDB, pending

Send = Callable[[Any], Awaitable[str]]
"""Writes the message under test through a connection; returns its id."""
Transaction = Callable[[OutboxDB, bool], AbstractAsyncContextManager[Any]]
"""Opens a connection of one kind, yields it inside a transaction, commits or rolls back."""

FOREIGN_KEY = b"\xff\x00order"
HEADERS = [("trace", b"\x00\xfe"), ("tag", "a"), ("tag", "b"), ("empty", None)]


@asynccontextmanager
async def psycopg_async(db: OutboxDB, commit: bool) -> Any:
    async with await psycopg.AsyncConnection.connect(db.url) as conn:
        yield conn
        await (conn.commit() if commit else conn.rollback())


@asynccontextmanager
async def psycopg_sync(db: OutboxDB, commit: bool) -> Any:
    with psycopg.connect(db.url) as conn:
        yield conn
        conn.commit() if commit else conn.rollback()


@asynccontextmanager
async def sqlite3_connection(db: OutboxDB, commit: bool) -> Any:
    conn = sqlite3.connect(db.url.removeprefix("sqlite:///"))
    try:
        yield conn
        conn.commit() if commit else conn.rollback()
    finally:
        conn.close()


@asynccontextmanager
async def sqlalchemy_session(db: OutboxDB, commit: bool) -> Any:
    engine = _engine(db)
    try:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))  # the session's transaction has begun
            yield session
            session.commit() if commit else session.rollback()
    finally:
        engine.dispose()


@asynccontextmanager
async def sqlalchemy_connection(db: OutboxDB, commit: bool) -> Any:
    engine = _engine(db)
    try:
        with engine.connect() as conn:
            yield conn
            conn.commit() if commit else conn.rollback()
    finally:
        engine.dispose()


def _engine(db: OutboxDB) -> Any:
    return create_engine(db.url.replace("postgresql://", "postgresql+psycopg://"))


def _async_engine(db: OutboxDB) -> Any:
    return create_async_engine(db.url.replace("postgresql://", "postgresql+psycopg://")
                               .replace("sqlite://", "sqlite+aiosqlite://"))


@asynccontextmanager
async def sqlalchemy_async_connection(db: OutboxDB, commit: bool) -> Any:
    engine = _async_engine(db)
    try:
        async with engine.connect() as conn:
            yield conn
            await (conn.commit() if commit else conn.rollback())
    finally:
        await engine.dispose()


@asynccontextmanager
async def sqlalchemy_async_session(db: OutboxDB, commit: bool) -> Any:
    engine = _async_engine(db)
    try:
        async with AsyncSession(engine) as session:
            await session.execute(text("SELECT 1"))
            yield session
            await (session.commit() if commit else session.rollback())
    finally:
        await engine.dispose()


@asynccontextmanager
async def aiosqlite_connection(db: OutboxDB, commit: bool) -> Any:
    async with aiosqlite.connect(db.url.removeprefix("sqlite:///")) as conn:
        yield conn
        await (conn.commit() if commit else conn.rollback())


KINDS: dict[str, tuple[str, Transaction]] = {
    "psycopg-async": ("postgres", psycopg_async),
    "psycopg-sync": ("postgres", psycopg_sync),
    "sqlite3": ("sqlite", sqlite3_connection),
    "aiosqlite": ("sqlite", aiosqlite_connection),
    "sqlalchemy-session": ("any", sqlalchemy_session),
    "sqlalchemy-connection": ("any", sqlalchemy_connection),
    "sqlalchemy-async-session": ("any", sqlalchemy_async_session),
    "sqlalchemy-async-connection": ("any", sqlalchemy_async_connection),
}


EACH_KIND = pytest.mark.parametrize(
    ("kind", "outbox_db"),
    [(kind, db) for kind, (database, _) in KINDS.items() for db in ("sqlite", "postgres")
     if database in ("any", db)],
    indirect=["outbox_db"],
)


def _blocking(conn: Any) -> bool:
    return not (type(conn).__name__.startswith("Async") or isinstance(conn, aiosqlite.Connection))


async def _send(outbox_db: OutboxDB, conn: Any, blocking: bool) -> str:
    options: dict[str, Any] = {"key": FOREIGN_KEY, "headers": HEADERS}
    if blocking:
        return outbox_db.outbox.send_sync(conn, "orders", {"id": 7}, **options)
    return await outbox_db.outbox.send(conn, "orders", {"id": 7}, **options)


@EACH_KIND
async def test_a_committed_send_is_one_row_holding_the_message_byte_for_byte(
    outbox_db: OutboxDB, kind: str
) -> None:
    transaction = KINDS[kind][1]
    async with transaction(outbox_db, True) as conn:
        blocking = _blocking(conn)
        message_id = await _send(outbox_db, conn, blocking)
    [row] = await pending(outbox_db)
    out = row.message
    assert (out.id, out.topic, out.value, out.key) == (message_id, "orders", b'{"id":7}', FOREIGN_KEY)
    assert row.key == FOREIGN_KEY
    expected = MultiDict([*HEADERS, (MESSAGE_ID, message_id), (CONTENT_TYPE, "application/json"),
                          (IDEMPOTENCY_KEY, message_id)])
    assert list(out.headers.items()) == list(expected.items())


@EACH_KIND
async def test_a_rolled_back_send_leaves_no_row(outbox_db: OutboxDB, kind: str) -> None:
    transaction = KINDS[kind][1]
    async with transaction(outbox_db, True) as conn:  # the table exists before the rollback
        await outbox_db.outbox.create(conn)
    async with transaction(outbox_db, False) as conn:
        blocking = _blocking(conn)
        await _send(outbox_db, conn, blocking)
    assert await pending(outbox_db) == []


async def test_text_keys_stay_text_and_a_given_idempotency_key_is_kept(outbox_db: OutboxDB) -> None:
    [message_id] = await outbox_db.write([("orders", "placed", {"key": "o-1",
                                                                 "idempotency_key": "order-o-1"})])
    [row] = await pending(outbox_db)
    assert row.message.key == "o-1" and row.message.value == b"placed"
    assert row.message.headers[IDEMPOTENCY_KEY] == "order-o-1"
    assert row.message.id == message_id


async def test_an_autocommit_connection_outside_a_transaction_is_refused(outbox_db: OutboxDB) -> None:
    if outbox_db.kind == "postgres":
        async with await psycopg.AsyncConnection.connect(outbox_db.url, autocommit=True) as conn:
            with pytest.raises(ConfigurationError, match=r"conn\.transaction"):
                await outbox_db.outbox.send(conn, "orders", "x")
    else:
        db = sqlite3.connect(outbox_db.url.removeprefix("sqlite:///"), isolation_level=None)
        with pytest.raises(ConfigurationError, match="BEGIN"):
            outbox_db.outbox.send_sync(db, "orders", "x")
        db.close()


async def test_autocommit_is_refused_through_sqlalchemy_and_aiosqlite_too(outbox_db: OutboxDB) -> None:
    engine = create_engine(outbox_db.url.replace("postgresql://", "postgresql+psycopg://"),
                           isolation_level="AUTOCOMMIT")
    try:
        with Session(engine) as session, pytest.raises(ConfigurationError, match="autocommit"):
            outbox_db.outbox.send_sync(session, "orders", "x")
    finally:
        engine.dispose()
    if outbox_db.kind == "sqlite":
        async with aiosqlite.connect(outbox_db.url.removeprefix("sqlite:///"),
                                     isolation_level=None) as conn:
            with pytest.raises(ConfigurationError, match="autocommit"):
                await outbox_db.outbox.send(conn, "orders", "x")
    assert await pending(outbox_db) == []


async def test_what_is_not_a_database_connection_is_refused_with_the_kinds_it_takes() -> None:
    from msgkit.outbox import Outbox

    with pytest.raises(ConfigurationError, match="psycopg, sqlite3 or aiosqlite"):
        await Outbox().send(object(), "orders", "x")


async def test_bad_values_are_refused_before_anything_is_written(outbox_db: OutboxDB) -> None:
    from msgkit.errors import SerializationError

    with pytest.raises(SerializationError):
        await outbox_db.write([("orders", object(), {})])
    with pytest.raises(ConfigurationError, match="topic"):
        await outbox_db.write([("", "x", {})])
    assert await pending(outbox_db) == []


async def test_send_many_writes_every_row_in_order(outbox_db: OutboxDB) -> None:
    async with sqlite3_connection(outbox_db, True) if outbox_db.kind == "sqlite" else \
            psycopg_async(outbox_db, True) as conn:
        values = [f"{n}" for n in range(50)]
        options: dict[str, Any] = {"key": lambda v: f"k{int(v) % 3}"}
        ids = (outbox_db.outbox.send_many_sync(conn, "orders", values, **options)
               if outbox_db.kind == "sqlite" else
               await outbox_db.outbox.send_many(conn, "orders", values, **options))
    rows = await pending(outbox_db)
    assert [r.message.id for r in rows] == ids
    assert [(r.message.value, r.message.key) for r in rows] == [
        (v.encode(), f"k{int(v) % 3}") for v in values]
