"""The outbox on PostgreSQL: relays share the work through row locks.

A claim locks the oldest waiting rows `FOR UPDATE SKIP LOCKED` in a transaction held while
they are published, so several relays take different rows at once and a killed relay's
rows come back the moment its connection drops. Per-key order: a relay keeps a key's rows
only when every older waiting row of that key is among them; otherwise another relay holds
the key's head, and the rows wait for the next round. Commits wake relays by `LISTEN/NOTIFY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import psycopg

from msgkit.logs import get_logger
from msgkit.outbox.rows import Pending, from_columns
from msgkit.outbox.schema import PENDING, Table
from msgkit.outbox.source import HINT, Claim, Counts, MissingTableError, Source
from msgkit.url import redact

log = get_logger("msgkit.outbox")


KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 15, "keepalives_interval": 5,
              "keepalives_count": 6, "tcp_user_timeout": 45_000}


class PostgresSource(Source):
    errors = (psycopg.Error, OSError)
    def __init__(self, url: str, table: Table, *, retention: float,
                 connect_timeout: float = 5.0) -> None:
        self.table = table
        self.retention = retention
        self._url = url
        self._connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None  # claims: one transaction at a time
        self._admin: psycopg.AsyncConnection[Any] | None = None  # counts, retries, purges
        self._listener: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()
        t = table.sql
        self._claim = (f"SELECT id, message_id, topic, key, key_is_text, value, headers, created_at "
                       f"FROM {t} WHERE {PENDING} AND (key IS NULL OR key <> ALL(%s::bytea[])) "
                       "AND (key IS NOT NULL OR id <> ALL(%s::bigint[])) "
                       "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED")
        # Per key of the claim: the oldest waiting row it does not hold (another relay's, or
        # one committed late). The claim keeps only that key's rows older than it.
        self._first_elsewhere = (
            f"SELECT o.key, min(o.id) FROM {t} o "
            "JOIN unnest(%s::bytea[], %s::bigint[]) AS h(k, last) ON o.key = h.k "
            f"WHERE o.{PENDING.replace(' AND ', ' AND o.')} AND o.id < h.last "
            "AND o.id <> ALL(%s::bigint[]) GROUP BY o.key")
        self._relock = (f"SELECT id FROM {t} WHERE id = ANY(%s) AND {PENDING} "
                        "FOR UPDATE SKIP LOCKED")

    async def open(self, *, create: bool = True) -> None:
        conn = await self._connect(autocommit=False)
        try:
            async with conn.transaction():
                found = await (await conn.execute("SELECT to_regclass(%s)", (self.table.sql,))
                               ).fetchone()
                if found is None or found[0] is None:
                    if not create:
                        raise MissingTableError(f"no outbox table {self.table.sql} in "
                                                f"{redact(self._url)}{HINT}")
                    # Only when missing: creating needs the table's owner, using it does not.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                       (f"msgkit-outbox {self.table.sql}",))
                    for statement in self.table.postgres_ddl():
                        await conn.execute(statement)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._listener = asyncio.create_task(self._listen(), name="msgkit-outbox-listen")

    async def claim(self, limit: int, skip: Collection[bytes | int]) -> Claim | None:
        conn = self._connection()
        keys = [k for k in skip if isinstance(k, bytes)]
        ids = [i for i in skip if isinstance(i, int)]
        try:
            await conn.execute("SAVEPOINT claim")
            cursor = await conn.execute(self._claim, (keys, ids, limit))
            rows = [from_columns(*row) for row in await cursor.fetchall()]
            last: dict[bytes, int] = {}
            for row in rows:
                if row.key is not None:
                    last[row.key] = row.id
            if last:
                cursor = await conn.execute(self._first_elsewhere, (
                    list(last), list(last.values()), [row.id for row in rows]))
                elsewhere = {bytes(k): first for k, first in await cursor.fetchall()}
                kept = [row for row in rows if row.key not in elsewhere
                        or row.id < elsewhere[row.key]]
                if len(kept) < len(rows):
                    # Let go of the rows left out (another relay may hold their key's head),
                    # then lock the kept ones again; each key keeps its rows up to the first
                    # one taken meanwhile.
                    await conn.execute("ROLLBACK TO SAVEPOINT claim")
                    cursor = await conn.execute(self._relock, ([row.id for row in kept],))
                    rows = _prefixes(kept, {i for (i,) in await cursor.fetchall()})
        except BaseException:
            await _rollback(conn)
            raise
        if not rows:
            await conn.rollback()
            return None
        return _PostgresClaim(self, conn, rows)

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    async def counts(self) -> Counts:
        cursor = await (await self._admin_connection()).execute(
            f"SELECT count(*) FILTER (WHERE {PENDING}), count(*) FILTER (WHERE error IS NOT NULL), "
            f"count(*) FILTER (WHERE published_at IS NOT NULL), min(created_at) FILTER "
            f"(WHERE {PENDING}) FROM {self.table.sql}")
        pending, failed, published, oldest = await cursor.fetchone() or (0, 0, 0, None)
        return Counts(pending, failed, published, _age(oldest))

    async def retry_failed(self) -> int:
        return await self._change(f"UPDATE {self.table.sql} SET error = NULL WHERE error IS NOT NULL")

    async def purge(self, older_than: float) -> int:
        return await self._change(
            f"DELETE FROM {self.table.sql} WHERE published_at < now() - make_interval(secs => %s)",
            (older_than,))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        for conn in (self._conn, self._admin):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
        self._conn = self._admin = None

    async def _change(self, statement: str, params: Sequence[Any] = ()) -> int:
        cursor = await (await self._admin_connection()).execute(statement, params)
        return cursor.rowcount

    async def _admin_connection(self) -> psycopg.AsyncConnection[Any]:
        self._connection()  # open
        if self._admin is None or self._admin.closed:
            self._admin = await self._connect(autocommit=True)
        return self._admin

    async def _listen(self) -> None:
        """Sets `_woken` on each commit's notification; polling covers a lost connection."""
        failing = False
        while True:
            try:
                listener = await self._connect(autocommit=True)
                async with listener:
                    await listener.execute(f'LISTEN "{self.table.channel}"')
                    failing = False
                    self._woken.set()  # rows committed while not listening
                    async for _ in listener.notifies():
                        self._woken.set()
            except psycopg.Error as exc:
                if not failing:  # once per outage
                    log.warning("outbox notifications from %s stopped (%s); polling until back",
                                redact(self._url), redact(str(exc)))
                failing = True
                await asyncio.sleep(1.0)

    async def _connect(self, *, autocommit: bool) -> psycopg.AsyncConnection[Any]:
        # Keepalives: a relay whose host dropped off the network lets go of its rows' locks
        # within a minute, not after the kernel's two hours (the URL may set its own).
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=autocommit, connect_timeout=max(1, round(self._connect_timeout)),
            **{k: v for k, v in KEEPALIVES.items() if k not in self._url})

    def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the outbox source is not open")
        return self._conn

    def __repr__(self) -> str:
        return f"<PostgresSource {redact(self._url)} {self.table.sql}>"


class _PostgresClaim(Claim):
    def __init__(self, source: PostgresSource, conn: psycopg.AsyncConnection[Any],
                 rows: list[Pending]) -> None:
        self.rows, self._source, self._conn = rows, source, conn

    async def finish(self, published: Collection[int], failed: Mapping[int, str]) -> None:
        t = self._source.table.sql
        try:
            if published:
                done = (f"UPDATE {t} SET published_at = now() WHERE id = ANY(%s)"
                        if self._source.retention > 0 else f"DELETE FROM {t} WHERE id = ANY(%s)")
                await self._conn.execute(done, (list(published),))
            if failed:
                async with self._conn.cursor() as cursor:
                    await cursor.executemany(f"UPDATE {t} SET error = %s WHERE id = %s",
                                             [(error, row_id) for row_id, error in failed.items()])
            await self._conn.commit()
        except BaseException:
            await _rollback(self._conn)
            raise

    async def release(self) -> None:
        await _rollback(self._conn)


def _prefixes(rows: list[Pending], locked: set[int]) -> list[Pending]:
    """`rows` that are locked, each key's only up to its first one that is not."""
    stopped: set[bytes | None] = set()
    out = []
    for row in rows:
        if row.key in stopped:
            continue
        if row.id in locked:
            out.append(row)
        elif row.key is not None:
            stopped.add(row.key)
    return out


async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        await conn.rollback()


def _age(oldest: float | None) -> float:
    return max(0.0, time.time() - oldest) if oldest is not None else 0.0
