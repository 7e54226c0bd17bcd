"""`sqlite:///path` (relative) or `sqlite:////abs/path`: the embedded durable store.

One file in WAL mode, safe for several processes on one host (SQLite's write lock
serialises them; `busy_timeout` waits for it). Every statement runs on one worker thread
per store so the event loop never waits on the file; operations that queue up while the
worker is busy run together in one transaction, which is where the throughput comes from.

Time is the host's wall clock, shared by every process on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

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

_Op = Callable[[sqlite3.Connection], Any]
_Job = tuple[_Op, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]

log = get_logger("msgkit.dedup")

DEFAULT_TABLE = "msgkit_dedup"
PURGE_BATCH = 5000


class _Statements:
    def __init__(self, table: str) -> None:
        t = check_identifier(table)
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {t} (topic TEXT NOT NULL, grp TEXT NOT NULL, "
            "key TEXT NOT NULL, token TEXT NOT NULL, done INTEGER NOT NULL, expires REAL NOT NULL, "
            "PRIMARY KEY (topic, grp, key)) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)",
        )
        # A conflicting row is taken over only when its lease or TTL ran out; either way the
        # row as it is afterwards comes back, so one statement says acquired/done/in progress.
        self.claim = (
            f"INSERT INTO {t} (topic, grp, key, token, done, expires) VALUES (?1, ?2, ?3, ?4, 0, ?5) "
            "ON CONFLICT (topic, grp, key) DO UPDATE SET "
            "token = iif(expires <= ?6, excluded.token, token), "
            "done = iif(expires <= ?6, 0, done), "
            "expires = iif(expires <= ?6, excluded.expires, expires) "
            "RETURNING token, done, expires"
        )
        self.complete = (
            f"INSERT INTO {t} (topic, grp, key, token, done, expires) VALUES (?1, ?2, ?3, ?4, 1, ?5) "
            "ON CONFLICT (topic, grp, key) DO UPDATE SET token = excluded.token, done = 1, "
            "expires = excluded.expires WHERE token = excluded.token OR (done = 0 AND expires <= ?6) "
            "RETURNING 1"
        )
        self.release = (
            f"DELETE FROM {t} WHERE topic = ? AND grp = ? AND key = ? AND token = ? AND done = 0"
        )
        self.purge = (
            f"DELETE FROM {t} WHERE (topic, grp, key) IN "
            f"(SELECT topic, grp, key FROM {t} WHERE expires <= ? LIMIT {PURGE_BATCH})"
        )


class SQLiteStore:
    def __init__(
        self,
        path: str,
        *,
        table: str = DEFAULT_TABLE,
        busy_timeout: float = 5.0,
        purge_interval: float = 60.0,
    ) -> None:
        if not path:
            raise ValueError("the SQLite store needs a file path: sqlite:///dedup.db")
        self.path = path
        self.table = table
        self.busy_timeout = busy_timeout
        self.purge_interval = purge_interval
        self._sql = _Statements(table)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None  # used by the worker thread only
        self._next_purge = 0.0
        self._closed = False

    async def claim(self, scope: Scope, key: str, lease_s: float) -> ClaimResult:
        token = new_token()

        def op(conn: sqlite3.Connection) -> ClaimResult:
            now = time.time()
            row = conn.execute(self._sql.claim, (*scope, key, token, now + lease_s, now)).fetchone()
            if row[0] == token:
                return ClaimResult(ClaimStatus.ACQUIRED, token)
            if row[1]:
                return DONE
            return ClaimResult(ClaimStatus.IN_PROGRESS, retry_after=max(0.0, row[2] - now))

        return await self._run(op)  # type: ignore[no-any-return]

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        return await self._run(lambda conn: self._complete(conn, scope, key, token, ttl_s))  # type: ignore[no-any-return]

    async def release(self, scope: Scope, key: str, token: str) -> None:
        await self._run(lambda conn: conn.execute(self._sql.release, (*scope, key, token)))

    async def complete_in(self, conn: Any, scope: Scope, key: str, token: str, ttl_s: float) -> None:
        """Through the caller's `sqlite3.Connection` (or an aiosqlite one), inside its transaction."""
        now = time.time()
        cursor = conn.execute(self._sql.complete, (*scope, key, token, now + ttl_s, now))
        if inspect.isawaitable(cursor):
            cursor = await cursor
        row = cursor.fetchone()
        if inspect.isawaitable(row):
            row = await row
        if row is None:
            raise LeaseLostError.of(scope, key)

    def complete_in_sync(
        self, conn: sqlite3.Connection, scope: Scope, key: str, token: str, ttl_s: float
    ) -> None:
        if not self._complete(conn, scope, key, token, ttl_s):
            raise LeaseLostError.of(scope, key)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)

    def _complete(self, conn: sqlite3.Connection, scope: Scope, key: str, token: str,
                  ttl_s: float) -> bool:
        now = time.time()
        row = conn.execute(self._sql.complete, (*scope, key, token, now + ttl_s, now)).fetchone()
        return row is not None

    async def _run(self, op: _Op) -> Any:
        if self._closed:
            raise StoreUnavailableError(f"{self!r} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="msgkit-dedup-sqlite", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((op, loop, future))
        return await future

    # The worker thread from here on.

    def _work(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                while True:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._jobs.put(None)  # finish this batch, then stop
                        break
                    batch.append(more)
                self._run_batch(batch)
        finally:
            if self._conn is not None:
                self._conn.close()

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            conn = self._connection()
            if len(batch) == 1:
                outcomes = [_attempt(batch[0][0], conn)]
            else:
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [_attempt(op, conn) for op, _, _ in batch]
                if any(isinstance(o, BaseException) for o in outcomes):
                    conn.execute("ROLLBACK")  # then each on its own, so one bad op fails alone
                    outcomes = [_attempt(op, conn) for op, _, _ in batch]
                else:
                    conn.execute("COMMIT")
        except Exception as exc:  # every caller must hear back, or it would wait forever
            if self._conn is not None and self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.rollback()
            outcomes = [exc] * len(batch)
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, sqlite3.Error):
                outcome = self._unavailable(outcome)
            settled.setdefault(loop, []).append((future, outcome))
        for loop, results in settled.items():  # one wake-up per loop and batch
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, results)
        self._maybe_purge()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):  # sqlite's own error would only say "unable to open"
                raise sqlite3.OperationalError(f"directory {directory!r} does not exist")
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout,
                                   check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable on a crash; WAL fsyncs at checkpoints
                for statement in self._sql.create:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _maybe_purge(self) -> None:
        now = time.time()
        if now < self._next_purge or self._conn is None:
            return
        self._next_purge = now + self.purge_interval
        try:
            self._conn.execute(self._sql.purge, (now,))
        except sqlite3.Error as exc:  # expired rows wait for the next purge; claims still work
            log.warning("could not purge expired keys from %r: %s", self, exc)

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"SQLite dedup store {self.path!r} failed: {exc}")

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} table={self.table!r}>"


def _attempt(op: _Op, conn: sqlite3.Connection) -> Any:
    try:
        return op(conn)
    except Exception as exc:
        return exc


def _settle(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in results:
        if future.done():  # the caller was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

