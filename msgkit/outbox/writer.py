"""`Outbox.send`: a message written into the caller's own database transaction.

Works with the connection a service already has (see `connections.py`) on PostgreSQL or
SQLite. The table is created on first use, inside the caller's transaction (or beforehand
with `create` / `msgkit outbox create`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from msgkit.codec import SendHeaders
from msgkit.encoded import encode_messages
from msgkit.errors import ConfigurationError
from msgkit.headers import IDEMPOTENCY_KEY
from msgkit.instrument import Instrument, created
from msgkit.message import Key, Outgoing
from msgkit.outbox.connections import Connection, Params, adapt
from msgkit.outbox.rows import COLUMNS, to_columns
from msgkit.outbox.schema import DEFAULT_TABLE, POSTGRES_TYPES, Table

V = TypeVar("V")


class _Step(NamedTuple):
    statement: str
    params: Params = ()
    many: Sequence[Params] = ()


_Steps = Generator[_Step, Any, None]
"""What one write executes, step by step; each step is sent the rows it returned."""


class Outbox:
    """Writes messages into an outbox table, to be published by a `Relay` once committed.

        outbox = Outbox()
        async with conn.transaction():
            await conn.execute("INSERT INTO orders ...")
            await outbox.send(conn, "orders", order, key=order.id)

    Nothing is published unless the transaction commits. `send` returns the message id;
    it is also the idempotency key unless one is given, so a consumer with `dedup=` drops
    the copy a relay may publish twice after a crash.
    """

    def __init__(self, table: str = DEFAULT_TABLE, *, schema: str | None = None,
                 notify: bool = True, instruments: Sequence[Instrument] = ()) -> None:
        """`notify`: on PostgreSQL, wake the relays at commit (`pg_notify`) instead of
        leaving them to find the row at their next poll. `instruments`: e.g. `[Tracing()]`
        (or `broker.instruments`), so the consumer continues the writer's trace."""
        self.table = Table(table, schema)
        self.notify = notify
        self.instruments = tuple(instruments)
        self._ready: set[str] = set()

    async def send(self, conn: Any, topic: str, value: object, *, key: Key | None = None,
                   headers: SendHeaders | None = None, idempotency_key: str | None = None) -> str:
        """Write one message through `conn`, inside its open transaction; returns its id.

        `value`, `key` and `headers` are what `Producer.send` takes. A blocking connection
        works here too (its statements then run on the event loop)."""
        [message_id] = await self.send_many(conn, topic, (value,), headers=headers,
                                            **_constant(key, idempotency_key))
        return message_id

    async def send_many(self, conn: Any, topic: str, values: Iterable[V], *,
                        key: Callable[[V], Key | None] | None = None,
                        headers: SendHeaders | None = None,
                        idempotency_key: Callable[[V], str | None] | None = None) -> list[str]:
        """Write many messages in one go (`key` and `idempotency_key` are functions of each
        value, as for `Producer.send_many`); returns their ids in order."""
        batch = self._encode(topic, values, key, headers, idempotency_key)
        connection = adapt(conn)
        steps = self._write(connection, batch)
        if not connection.is_async:
            _run_blocking(connection, steps)
            return [out.id for out in batch]
        rows = None
        try:
            while True:
                step = steps.send(rows)
                rows = await connection.run(step.statement, step.params, many=step.many)
        except StopIteration:
            return [out.id for out in batch]

    def send_sync(self, conn: Any, topic: str, value: object, *, key: Key | None = None,
                  headers: SendHeaders | None = None, idempotency_key: str | None = None) -> str:
        """`send` through a blocking connection (Django, Flask, scripts)."""
        [message_id] = self.send_many_sync(conn, topic, (value,), headers=headers,
                                           **_constant(key, idempotency_key))
        return message_id

    def send_many_sync(self, conn: Any, topic: str, values: Iterable[V], *,
                       key: Callable[[V], Key | None] | None = None,
                       headers: SendHeaders | None = None,
                       idempotency_key: Callable[[V], str | None] | None = None) -> list[str]:
        """`send_many` through a blocking connection."""
        batch = self._encode(topic, values, key, headers, idempotency_key)
        connection = adapt(conn)
        if connection.is_async:
            raise ConfigurationError(f"{type(conn).__name__} is async: `await outbox.send(...)`")
        _run_blocking(connection, self._write(connection, batch))
        return [out.id for out in batch]

    async def create(self, conn: Any) -> None:
        """Create the table and its indexes through `conn` (committed with its transaction)."""
        connection = adapt(conn)
        for statement in self._ddl(connection.dialect):
            result = connection.run(statement)
            if connection.is_async:
                await result

    def create_sync(self, conn: Any) -> None:
        connection = adapt(conn)
        for statement in self._ddl(connection.dialect):
            connection.run(statement)

    def _write(self, connection: Connection, batch: Sequence[Outgoing]) -> _Steps:
        if not batch:
            return
        dialect, ready = connection.dialect, f"{connection.dialect} {connection.database}"
        if ready not in self._ready:
            if dialect == "postgresql":
                rows = yield _Step("SELECT to_regclass(%s)", (self.table.sql,))
            else:
                rows = yield _Step("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (self.table.name,))
            if rows and rows[0][0] is not None:
                # Committed (one made in this transaction is checked again next time). A
                # connection that cannot say which database it is on is checked each time.
                if connection.database is not None:
                    self._ready.add(ready)
            else:
                for statement in self._ddl(dialect):
                    yield _Step(statement)
        columns = [to_columns(out) for out in batch]
        if dialect != "postgresql":
            yield _Step(self.table.insert(["?"] * len(COLUMNS)), many=columns)
            return
        if self.notify:  # delivered when (and only if) the transaction commits
            yield _Step("SELECT pg_notify(%s, '')", (self.table.channel,))
        yield _Step(self.table.insert([f"CAST(%s AS {t})" for t in POSTGRES_TYPES]), many=columns)

    def _ddl(self, dialect: str) -> list[str]:
        if dialect == "postgresql":  # one creator at a time, across processes
            lock = f"SELECT pg_advisory_xact_lock(hashtext('msgkit-outbox {self.table.sql}'))"
            return [lock, *self.table.postgres_ddl()]
        return self.table.sqlite_ddl()

    def _encode(self, topic: str, values: Iterable[V], key: Callable[[V], Key | None] | None,
                headers: SendHeaders | None,
                idempotency_key: Callable[[V], str | None] | None) -> Sequence[Outgoing]:
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError(f"the outbox needs a topic name, not {topic!r}")
        batch = encode_messages(topic, values, key, headers, idempotency_key)
        for out in batch:
            # The message id is the idempotency key unless one is given: written out, so a
            # consumer's own `key=` function cannot override it.
            if IDEMPOTENCY_KEY not in out.headers:
                out.headers[IDEMPOTENCY_KEY] = out.id  # type: ignore[index]  # a fresh dict or MultiDict
        return list(created(self.instruments, batch)) if self.instruments else batch

    def __repr__(self) -> str:
        return f"<Outbox {self.table.sql}>"


def _run_blocking(connection: Connection, steps: _Steps) -> None:
    rows = None
    with contextlib.suppress(StopIteration):
        while True:
            step = steps.send(rows)
            rows = connection.run(step.statement, step.params, many=step.many)


def _constant(key: Key | None, idempotency_key: str | None) -> dict[str, Any]:
    """`send`'s key and idempotency key as `send_many`'s functions of each value."""
    return {"key": None if key is None else lambda _: key,
            "idempotency_key": None if idempotency_key is None else lambda _: idempotency_key}
