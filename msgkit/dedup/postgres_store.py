"""`postgresql://user:pass@host:5432/db[?table=...&schema=...&pool_size=4]`: across hosts.

A table with a primary key on (topic, group, key), a token, a done flag and an expiry
(the lease while claimed, the TTL once done). Each operation is one `INSERT ... ON CONFLICT`
(or `DELETE`) statement, so concurrent claims of one key serialise on its row. Time is the
database server's clock, so consumer hosts' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql

from msgkit.dedup.sql import check_identifier
from msgkit.dedup.store import (
    DONE,
    ClaimResult,
    ClaimStatus,
    LeaseLostError,
    Scope,
    StoreUnavailableError,
    new_token,
)
from msgkit.logs import get_logger
from msgkit.url import redact

log = get_logger("msgkit.dedup")

DEFAULT_TABLE = "msgkit_dedup"
PURGE_BATCH = 5000
LOCK_TIMEOUT_MS = 500
"""A claim that waits longer on a row lock (a business transaction marking that key done)
answers IN_PROGRESS instead, so the pooled connection is not held."""

_NOW = "statement_timestamp()"
_BUSY = object()


class _Statements:
    def __init__(self, table: str, schema: str | None) -> None:
        t = sql.Identifier(*(() if schema is None else (check_identifier(schema),)),
                           check_identifier(table))
        index = sql.Identifier(f"{table}_expires")
        self.create = (
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (topic text NOT NULL, grp text NOT NULL, "
                    "key text NOT NULL, token text NOT NULL, done boolean NOT NULL, "
                    "expires_at timestamptz NOT NULL, PRIMARY KEY (topic, grp, key))").format(t),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(index, t),
        )
        # A conflicting row is taken over only when its lease or TTL ran out; either way the
        # row as it is afterwards comes back, so one statement says acquired/done/in progress.
        self.claim = sql.SQL(
            "INSERT INTO {} AS d (topic, grp, key, token, done, expires_at) "
            f"VALUES (%s, %s, %s, %s, false, {_NOW} + make_interval(secs => %s)) "
            "ON CONFLICT (topic, grp, key) DO UPDATE SET "
            f"token = CASE WHEN d.expires_at <= {_NOW} THEN excluded.token ELSE d.token END, "
            f"done = CASE WHEN d.expires_at <= {_NOW} THEN false ELSE d.done END, "
            f"expires_at = CASE WHEN d.expires_at <= {_NOW} THEN excluded.expires_at "
            "ELSE d.expires_at END "
            f"RETURNING token, done, extract(epoch FROM expires_at - {_NOW})::float8"
        ).format(t)
        self.complete = sql.SQL(
            "INSERT INTO {} AS d (topic, grp, key, token, done, expires_at) "
            f"VALUES (%s, %s, %s, %s, true, {_NOW} + make_interval(secs => %s)) "
            "ON CONFLICT (topic, grp, key) DO UPDATE SET token = excluded.token, done = true, "
            "expires_at = excluded.expires_at "
            f"WHERE d.token = excluded.token OR (NOT d.done AND d.expires_at <= {_NOW}) "
            "RETURNING 1"
        ).format(t)
        self.release = sql.SQL(
            "DELETE FROM {} WHERE topic = %s AND grp = %s AND key = %s AND token = %s AND NOT done"
        ).format(t)
        self.purge = sql.SQL(
            "DELETE FROM {} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {} "
            f"WHERE expires_at <= {_NOW} LIMIT {PURGE_BATCH}))"
        ).format(t, t)


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        purge_interval: float = 60.0,
    ) -> None:
        """`url` is a libpq URL (its query parameters go to libpq, e.g. `sslmode`)."""
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self.table = table
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.purge_interval = purge_interval
        self._url = url
        self._sql = _Statements(table, schema)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._created = False
        self._next_purge = 0.0
        self._closed = False

    async def claim(self, scope: Scope, key: str, lease_s: float) -> ClaimResult:
        token = new_token()
        row = await self._fetch(self._sql.claim, (*scope, key, token, lease_s), busy=_BUSY)
        if row is _BUSY:
            return ClaimResult(ClaimStatus.IN_PROGRESS)
        assert row is not None  # ON CONFLICT DO UPDATE always returns the row
        if row[0] == token:
            return ClaimResult(ClaimStatus.ACQUIRED, token)
        if row[1]:
            return DONE
        return ClaimResult(ClaimStatus.IN_PROGRESS, retry_after=max(0.0, row[2]))

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        return await self._fetch(self._sql.complete, (*scope, key, token, ttl_s)) is not None

    async def release(self, scope: Scope, key: str, token: str) -> None:
        await self._fetch(self._sql.release, (*scope, key, token), returns=False)

    async def complete_in(
        self, conn: psycopg.AsyncConnection[Any], scope: Scope, key: str, token: str, ttl_s: float
    ) -> None:
        """Through the caller's async connection, inside its open transaction."""
        cursor = await conn.execute(self._sql.complete, (*scope, key, token, ttl_s))
        if await cursor.fetchone() is None:
            raise LeaseLostError.of(scope, key)

    def complete_in_sync(
        self, conn: psycopg.Connection[Any], scope: Scope, key: str, token: str, ttl_s: float
    ) -> None:
        """Through the caller's blocking psycopg connection, inside its open transaction."""
        if conn.execute(self._sql.complete, (*scope, key, token, ttl_s)).fetchone() is None:
            raise LeaseLostError.of(scope, key)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _fetch(self, query: sql.Composed, params: tuple[Any, ...], *,
                     returns: bool = True, busy: object = None) -> Any:
        """The first row (when `returns`); `busy` instead when the row stayed locked."""
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(query, params)
                row = await cursor.fetchone() if returns else None
                if time.monotonic() >= self._next_purge:
                    await self._purge(conn)
                return row
        except psycopg.errors.LockNotAvailable as exc:
            if busy is not None:
                return busy
            raise self._unavailable(exc) from None
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None  # the cause could carry connection details

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise StoreUnavailableError(f"{self!r} is closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool_size)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            except BaseException:
                # A cancelled query leaves the connection mid-protocol: never reuse that one.
                if conn.broken or conn.closed or not _is_sql_error(conn):
                    await conn.close()
                else:
                    self._idle.append(conn)
                raise
            self._idle.append(conn)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
        )
        try:
            await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            if not self._created:
                async with conn.transaction():  # one creator at a time, across processes too
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                       (f"msgkit-dedup-{self.schema}.{self.table}",))
                    for statement in self._sql.create:
                        await conn.execute(statement)
                self._created = True
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _purge(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._next_purge = time.monotonic() + self.purge_interval
        try:
            await conn.execute(self._sql.purge)
        except psycopg.Error as exc:  # expired rows wait for the next purge; claims still work
            log.warning("could not purge expired keys from %r: %s", self, redact(str(exc)))

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"PostgreSQL dedup store {redact(self._url)} failed: {redact(str(exc))}"
        )

    def __repr__(self) -> str:
        return f"<PostgresStore {redact(self._url)} table={self.table!r}>"


def _is_sql_error(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when the connection is idle again after an error the server reported."""
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


