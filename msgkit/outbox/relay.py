"""`Relay`: publishes committed outbox rows to a broker, at least once, in order per key.

Each round claims the oldest waiting rows (whole key prefixes), publishes them in one
pipelined call, waits for the broker's confirmation and only then marks them. A relay that
dies between the two leaves the rows waiting, so another publishes them again: consumers
with `dedup=` drop that copy (the row's message id is its idempotency key, unless the
writer gave one).

When a publish fails, the rows are tried one by one: a row no broker can take (an invalid
topic, too large) is set aside with its error and blocks nothing; one that failed for a
passing reason (broker down, no queue bound yet) keeps its key waiting, with backoff,
while other keys go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import msgkit
from msgkit.errors import ClosedError, ConfigurationError, InvalidTopicError, PublishError, SerializationError
from msgkit.guarantee import Guarantee
from msgkit.logs import get_logger
from msgkit.message import Outgoing
from msgkit.outbox.rows import Pending
from msgkit.outbox.schema import DEFAULT_TABLE, Table
from msgkit.outbox.source import Claim, Counts, Source
from msgkit.url import URL, redact

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

Database: TypeAlias = "str | Engine | AsyncEngine"
"""An outbox database: its URL, or a SQLAlchemy engine connected to it."""

log = get_logger("msgkit.outbox")
DEFAULT_BATCH = 1000
"""Rows per claim and publish: larger batches publish faster (Kafka: 500 rows ran at
0.6x of `send_many`) and repeat more rows after a relay's crash."""

class Relay:
    """Publishes what `Outbox.send` wrote to `db` through `broker`.

        async with Relay("postgresql://app@db/shop", broker):
            ...  # the service runs; the relay publishes in the background

    `db`: `postgresql://...` (libpq URL) or `sqlite:///relative.db` / `sqlite:////abs.db`;
    a SQLAlchemy URL (`postgresql+psycopg://...`, `sqlite+aiosqlite:///...`) or `Engine` /
    `AsyncEngine` names the same database (the relay opens its own connections to it).
    Several relays may share one database: on PostgreSQL they split the rows between them,
    on SQLite one publishes and the others take over within `lease` seconds if it dies.
    """

    def __init__(
        self,
        db: Database,
        broker: msgkit.Broker,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        poll_interval: float = 1.0,
        retention: float = 0.0,
        lease: float = 10.0,
        required_groups: Sequence[str] = (),
        max_backoff: float = 5.0,
    ) -> None:
        """`poll_interval`: the longest wait for new rows: a commit wakes the relay sooner
        (PostgreSQL notifies it; on SQLite it checks for one every 5 ms). `retention`:
        seconds published rows are kept (0: deleted once published). `lease`: SQLite only,
        seconds a relay that stopped renewing its lease keeps it. `required_groups`: on
        RabbitMQ, the groups whose queues must exist before a message is published."""
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, not {batch_size}")
        self.broker = broker
        self.batch_size = batch_size
        self.retention = retention
        self.max_backoff = max_backoff
        db = database_url(db)
        self.source = open_source(db, Table(table, schema), retention=retention, lease=lease)
        self.poll_interval = poll_interval
        self.published = 0
        """Rows this relay published (and marked) since it started."""
        self.required_groups = tuple(required_groups)
        self._producer = self._new_producer()
        self._db = redact(db)
        self._cooling: dict[bytes | int, float] = {}
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._idle = False
        self._open = False
        self._opening = asyncio.Lock()

    async def run(self) -> None:
        """Publish until `stop()` (or cancellation)."""
        next_purge = 0.0
        try:
            while not self._stopping:
                try:
                    await self._ensure_open()
                    progressed = await self.publish_round()
                    if self.retention > 0 and time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + 60.0
                        await self.source.purge(self.retention)
                except ClosedError:
                    raise  # the broker was closed under the relay: nothing left to publish to
                except self.source.errors as exc:
                    log.warning("outbox %s unavailable (%s); retrying", self._db, redact(str(exc)))
                    await self._close_source()
                    progressed = False
                    self._failures += 1
                except Exception as exc:  # a relay that died here would leave every row waiting
                    log.error("outbox relay round failed (%s: %s); retrying", type(exc).__name__,
                              redact(str(exc)))
                    progressed = False
                    self._failures += 1
                if self._stopping:
                    break
                if progressed:
                    continue
                self._idle = True  # stop() cancels a wait rather than sit it out
                try:
                    if progressed is None:
                        await self.source.wait(self.poll_interval)
                    else:
                        await asyncio.sleep(self._backoff())
                finally:
                    self._idle = False
        finally:
            await self._close_source()

    async def publish_round(self) -> bool | None:
        """Claims and publishes one batch: True if rows went out, False if publishing
        failed, None when nothing was waiting."""
        claim = await self.source.claim(self.batch_size, self._skipped())
        if claim is None:
            return None
        try:
            published, failed = await self._publish(claim)
        except BaseException:
            await claim.release()
            raise
        await claim.finish(published, failed)
        self.published += len(published)
        if published:
            self._failures = 0
        else:
            self._failures += 1
        return bool(published) or bool(failed)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish `messages` as written, confirmed by the broker (a hook for tests)."""
        await self._producer.publish_raw(messages)

    async def start(self) -> None:
        """Run in a background task of the running loop (again after `stop()`)."""
        if self._task is None:
            self._stopping = False
            if self._producer.closed:
                self._producer = self._new_producer()
            await self._ensure_open()  # a wrong URL fails here, not in the background
            self._task = asyncio.create_task(self.run(), name="msgkit-outbox-relay")

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the round in progress (at most `timeout` seconds), then stop; closes the
        relay's producer."""
        self._stopping = True
        task, self._task = self._task, None
        try:
            if task is not None:
                if self._idle:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await asyncio.wait_for(asyncio.shield(task), timeout)
                    except TimeoutError:
                        task.cancel()
                        await task
        finally:  # a relay that failed still lets go of its database and producer
            await self._close_source()
            await self._producer.close()

    @property
    def running(self) -> bool:
        """Whether the background task (`start`) is publishing."""
        return self._task is not None and not self._task.done()

    async def wait(self) -> None:
        """Until the background task ends: after `stop()`, or raising what made it fail."""
        task = self._task
        if task is None:
            return
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def counts(self) -> Counts:
        await self._ensure_open()
        return await self.source.counts()

    async def retry_failed(self) -> int:
        """Put set-aside rows back to waiting (after fixing what made them fail); returns
        how many. Same as `msgkit outbox retry`."""
        await self._ensure_open()
        return await self.source.retry_failed()

    async def purge(self, older_than: float = 0.0) -> int:
        """Delete rows published more than `older_than` seconds ago (kept by `retention`);
        returns how many. The running relay does this every minute by itself."""
        await self._ensure_open()
        return await self.source.purge(older_than)

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _publish(self, claim: Claim) -> tuple[list[int], dict[int, str]]:
        # Rows whose topic no broker takes are set aside before the batch goes out: failing
        # the batch halfway would send its first rows twice.
        failed = {row.id: f"{type(exc).__name__}: {exc}" for row in claim.rows
                  if (exc := self._invalid(row.message.topic)) is not None}
        rows = [row for row in claim.rows if row.id not in failed]
        for row_id, error in failed.items():
            self._log_set_aside(row_id, error)
        if not rows:
            return [], failed
        try:
            await self.publish([row.message for row in rows])
            return [row.id for row in rows], failed
        except ClosedError:
            raise
        except Exception as exc:
            log.debug("outbox batch of %d failed (%s); trying its rows one by one", len(rows),
                      redact(str(exc)))
        published, more = await self._one_by_one(rows)
        return published, failed | more

    async def _one_by_one(self, rows: Sequence[Pending]) -> tuple[list[int], dict[int, str]]:
        published: list[int] = []
        failed: dict[int, str] = {}
        for row in rows:
            ident = row.key if row.key is not None else row.id
            try:
                await self.publish([row.message])
            except ClosedError:
                raise
            except Exception as exc:
                if _permanent(exc):
                    failed[row.id] = f"{type(exc).__name__}: {redact(str(exc))}"
                    self._log_set_aside(row.id, failed[row.id])
                    continue
                self._cooling[ident] = time.monotonic() + self._backoff()
                log.warning("outbox message %s to %r not published (%s); retrying",
                            row.message.id, row.message.topic, redact(str(exc)))
                break  # the broker itself, most likely: trying every row would take as long
            else:
                published.append(row.id)
        return published, failed

    def _invalid(self, topic: str) -> InvalidTopicError | None:
        try:
            self.broker.validate_topic(topic)
        except InvalidTopicError as exc:
            return exc
        return None

    def _log_set_aside(self, row_id: int, error: str) -> None:
        log.error("outbox row %d set aside: %s; fix it and run `msgkit outbox retry`", row_id,
                  error)

    def _new_producer(self) -> msgkit.Producer:
        # At least once, whatever the broker's default: a row is marked only once confirmed.
        # Each round's publish is awaited alone, so it takes the client that sends at once.
        lone = self.broker.backend.lone_send_options({}) or {}
        return self.broker.producer(guarantee=Guarantee.AT_LEAST_ONCE,
                                    required_groups=self.required_groups, **lone)

    def _skipped(self) -> list[bytes | int]:
        now = time.monotonic()
        for ident in [i for i, until in self._cooling.items() if until <= now]:
            del self._cooling[ident]
        return list(self._cooling)

    def _backoff(self) -> float:
        ceiling = min(self.max_backoff, 0.1 * 2 ** min(self._failures, 16))
        return random.uniform(ceiling / 2, ceiling)

    async def _ensure_open(self) -> None:
        async with self._opening:  # `counts()` may ask while the loop reconnects
            if not self._open:
                await self.source.open()
                self._open = True

    async def _close_source(self) -> None:
        if self._open:
            self._open = False
            await self.source.close()

    def __repr__(self) -> str:
        return f"<Relay {self._db} -> {self.broker.url}>"


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, SerializationError | InvalidTopicError) or (
        isinstance(exc, PublishError) and exc.permanent)


def database_url(db: Database) -> str:
    """The plain URL of `db`: a URL as given, a SQLAlchemy URL without its driver
    (`postgresql+psycopg://` is `postgresql://`), or a SQLAlchemy engine's URL."""
    url = getattr(db, "url", db)  # Engine, AsyncEngine
    if hasattr(url, "render_as_string"):  # sqlalchemy.URL
        url = url.render_as_string(hide_password=False)
    if not isinstance(url, str):
        raise ConfigurationError(f"the outbox database must be a URL or a SQLAlchemy engine, "
                                 f"not {type(db).__name__}")
    scheme, separator, rest = url.partition("://")
    return scheme.split("+", 1)[0] + separator + rest


def open_source(db: Database, table: Table, **options: Any) -> Source:
    """The outbox source a database URL names (its driver loads only then)."""
    url = database_url(db)
    parsed = URL.parse(url)
    if parsed.scheme == "sqlite":
        from msgkit.outbox.sqlite_source import SQLiteSource

        if parsed.hosts or not parsed.path:
            raise ConfigurationError(f"{parsed.redacted!r} names no file; write "
                                     "sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return SQLiteSource(parsed.path, table, retention=options["retention"],
                            lease=options["lease"])
    if parsed.scheme in ("postgresql", "postgres"):
        try:
            from msgkit.outbox.postgres_source import PostgresSource
        except ImportError:
            raise ConfigurationError("the PostgreSQL outbox needs psycopg: "
                                     "pip install 'msgkit[postgres]'") from None
        return PostgresSource(url, table, retention=options["retention"])
    raise ConfigurationError(f"no outbox for {parsed.redacted!r}: use postgresql://... or "
                             "sqlite:///path.db")

