"""The outbox in an SQLite file: one relay publishes at a time, under a lease.

SQLite has no row locks, and holding its write lock while publishing would stall the
service's own writes. So relays take a lease row instead: the holder renews it while it
runs and publishes in id order (which keeps every key's order); the others stand by and
take over once a holder stops renewing (it died, or stopped: then at once). Statements run
in short transactions on a worker thread, so the event loop never waits on the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from msgkit.logs import get_logger
from msgkit.outbox.rows import COLUMNS, Pending, from_columns
from msgkit.outbox.schema import PENDING, Table
from msgkit.outbox.source import HINT, Claim, Counts, MissingTableError, Source

log = get_logger("msgkit.outbox")
T = TypeVar("T")
CHANGE_CHECK = 0.005
"""Seconds between checks for a commit by another connection (the service's)."""


class SQLiteSource(Source):
    errors = (sqlite3.Error, OSError)
    def __init__(self, path: str, table: Table, *, retention: float, lease: float = 10.0,
                 busy_timeout: float = 30.0) -> None:
        self.path, self.table, self.retention = path, table, retention
        self.lease, self.busy_timeout = lease, busy_timeout
        self._data_version = -1
        self._renewer: asyncio.Task[None] | None = None
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._held_until = 0.0

    async def open(self, *, create: bool = True) -> None:
        def connect() -> sqlite3.Connection:
            if not create and not os.path.exists(self.path):
                raise MissingTableError(f"no outbox database at {self.path}{HINT}")
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                 check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (self.table.name,)).fetchone()
                if not found and not create:
                    raise MissingTableError(f"no outbox table {self.table.sql} in {self.path}{HINT}")
                with _transaction(db):
                    for statement in self.table.sqlite_ddl():
                        db.execute(statement)
            except BaseException:
                db.close()
                raise
            return db

        self._db = await asyncio.to_thread(connect)
        self._renewer = asyncio.create_task(self._renew(), name="msgkit-outbox-lease")

    async def claim(self, limit: int, skip: Collection[bytes | int]) -> Claim | None:
        def work(db: sqlite3.Connection) -> list[Pending] | None:
            if not self._hold(db):
                return None
            keys = [k for k in skip if isinstance(k, bytes)]
            ids = [i for i in skip if isinstance(i, int)]
            cursor = db.execute(
                f"SELECT id, {', '.join(COLUMNS)} FROM {self.table.sql} WHERE {PENDING} "
                f"AND (key IS NULL OR key NOT IN ({', '.join('?' * len(keys))})) "
                f"AND (key IS NOT NULL OR id NOT IN ({', '.join('?' * len(ids))})) "
                "ORDER BY id LIMIT ?", (*keys, *ids, limit))
            return [from_columns(*row) for row in cursor.fetchall()]

        rows = await self._run(work)
        return _SQLiteClaim(self, rows) if rows else None

    async def wait(self, timeout: float) -> None:
        """Until another connection committed (SQLite's `data_version` changed: a read of
        shared memory, checked every few milliseconds) or `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(min(CHANGE_CHECK, max(0.0, deadline - time.monotonic())))
            if self._db is None:
                return
            version = await self._run(lambda db: db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._data_version:
                self._data_version = version
                return

    async def counts(self) -> Counts:
        def work(db: sqlite3.Connection) -> Counts:
            pending, failed, published, oldest = db.execute(
                f"SELECT count(*) FILTER (WHERE {PENDING}), count(*) FILTER (WHERE error IS NOT NULL), "
                f"count(*) FILTER (WHERE published_at IS NOT NULL), min(created_at) FILTER "
                f"(WHERE {PENDING}) FROM {self.table.sql}").fetchone()
            return Counts(pending, failed, published,
                          max(0.0, time.time() - oldest) if oldest is not None else 0.0)

        return await self._run(work)

    async def retry_failed(self) -> int:
        return await self._run(lambda db: db.execute(
            f"UPDATE {self.table.sql} SET error = NULL WHERE error IS NOT NULL").rowcount)

    async def purge(self, older_than: float) -> int:
        return await self._run(lambda db: db.execute(
            f"DELETE FROM {self.table.sql} WHERE published_at < ?", (time.time() - older_than,)
        ).rowcount)

    async def close(self) -> None:
        if self._db is None:
            return
        db = self._db
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

        def give_up(db: sqlite3.Connection) -> None:
            if self._held_until:  # a standby takes over now rather than when the lease ends
                db.execute(f"DELETE FROM {self.table.lease} WHERE owner = ?", (self.owner,))

        with contextlib.suppress(sqlite3.Error):
            await self._run(give_up)
        self._db = None
        await asyncio.to_thread(db.close)

    def _hold(self, db: sqlite3.Connection) -> bool:
        """Whether this relay holds the lease, renewing it when a third of it is gone."""
        now = time.time()
        if self._held_until - now > self.lease * 2 / 3:
            return True
        (owner, expires) = db.execute(f"SELECT owner, expires FROM {self.table.lease}").fetchone() \
            or (None, 0.0)
        if owner not in (None, self.owner) and expires > now:
            self._held_until = 0.0
            return False
        with _transaction(db):
            taken = db.execute(
                f"INSERT INTO {self.table.lease} (one, owner, expires) VALUES (1, ?, ?) "
                "ON CONFLICT (one) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
                "WHERE owner = excluded.owner OR expires < ?", (self.owner, now + self.lease, now)
            ).rowcount
        if not taken:
            self._held_until = 0.0
            return False
        if owner != self.owner:
            log.info("outbox relay %s now publishes %s %s", self.owner, self.path, self.table.sql)
        self._held_until = now + self.lease
        return True

    async def _renew(self) -> None:
        """Keeps the lease while this relay holds it, also through a publish that outlasts
        it; a relay that stopped renewing (dead, or its loop stuck) loses it."""
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._held_until:
                with contextlib.suppress(sqlite3.Error):  # the next claim says what is wrong
                    await self._run(self._extend)

    def _extend(self, db: sqlite3.Connection) -> None:
        now = time.time()
        with _transaction(db):
            kept = db.execute(f"UPDATE {self.table.lease} SET expires = ? WHERE owner = ?",
                              (now + self.lease, self.owner)).rowcount
        self._held_until = now + self.lease if kept else 0.0

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise RuntimeError("the outbox source is not open")
        db = self._db
        async with self._lock:
            # A cancelled caller must not let the next statement in while this one runs.
            running = asyncio.ensure_future(asyncio.to_thread(work, db))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                await asyncio.wait([running])
                raise

    def __repr__(self) -> str:
        return f"<SQLiteSource {self.path} {self.table.sql}>"


class _SQLiteClaim(Claim):
    def __init__(self, source: SQLiteSource, rows: list[Pending]) -> None:
        self.rows, self._source = rows, source

    async def finish(self, published: Collection[int], failed: Mapping[int, str]) -> None:
        source, t = self._source, self._source.table.sql

        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                marks = [(row_id,) for row_id in published]
                if source.retention > 0:
                    db.executemany(f"UPDATE {t} SET published_at = {time.time()!r} WHERE id = ?",
                                   marks)
                else:
                    db.executemany(f"DELETE FROM {t} WHERE id = ?", marks)
                db.executemany(f"UPDATE {t} SET error = ? WHERE id = ?",
                               [(error, row_id) for row_id, error in failed.items()])

        await source._run(work)

    async def release(self) -> None:
        """Nothing is held but the lease, which the next claim renews."""


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
