"""The service's own database connection, whatever its driver: psycopg (async and blocking),
`sqlite3`, aiosqlite, SQLAlchemy sessions and connections (sync and async). Statements
come with `%s` (PostgreSQL) or `?` (SQLite) placeholders and positional parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgkit.errors import ConfigurationError

Params = Sequence[Any]


class Connection:
    """One caller's connection: `run` executes one statement (or, with `many`, one per
    parameter tuple) and returns its rows, or an awaitable of them when `is_async`."""

    def __init__(self, conn: Any, dialect: str, database: str | None, is_async: bool) -> None:
        self.conn, self.dialect, self.is_async = conn, dialect, is_async
        self.database = database
        """Which database it is (None when the driver cannot tell without asking)."""

    def run(self, statement: str, params: Params = (), *, many: Sequence[Params] = ()) -> Any:
        raise NotImplementedError


def adapt(conn: Any) -> Connection:
    module = type(conn).__module__
    if module.startswith("psycopg"):
        _check_psycopg(conn)
        info = conn.info
        return _Psycopg(conn, "postgresql", f"{info.host}:{info.port}/{info.dbname}",
                        type(conn).__name__.startswith("Async"))
    if module.startswith("sqlite3"):
        _check_sqlite(conn)
        return _SQLite3(conn, "sqlite", None, False)
    if module.startswith("aiosqlite"):
        _check_sqlite(conn)
        return _AioSQLite(conn, "sqlite", None, True)
    if module.startswith("sqlalchemy"):
        bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
        dialect = bind.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise ConfigurationError(f"the outbox supports PostgreSQL and SQLite, not {dialect}")
        database = None if dialect == "sqlite" else bind.engine.url.render_as_string(hide_password=True)
        is_async = type(conn).__name__.startswith("Async")
        if not is_async:  # (an async one's driver connection is reachable only by awaiting)
            _check_sqlalchemy(conn)
        return _SQLAlchemy(conn, dialect, database, is_async)
    raise ConfigurationError(
        f"the outbox cannot write through a {module}.{type(conn).__name__}: pass a psycopg, "
        "sqlite3 or aiosqlite connection, or a SQLAlchemy Session or Connection"
    )


class _Psycopg(Connection):
    def run(self, statement: str, params: Params = (), *, many: Sequence[Params] = ()) -> Any:
        if self.is_async:
            return self._run_async(statement, params, many)
        if many:  # psycopg pipelines executemany: one round trip
            with self.conn.cursor() as cursor:
                cursor.executemany(statement, many)
            return None
        cursor = self.conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None

    async def _run_async(self, statement: str, params: Params, many: Sequence[Params]) -> Any:
        if many:
            async with self.conn.cursor() as cursor:
                await cursor.executemany(statement, many)
            return None
        cursor = await self.conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else None


class _SQLite3(Connection):
    def run(self, statement: str, params: Params = (), *, many: Sequence[Params] = ()) -> Any:
        if many:
            self.conn.executemany(statement, many)
            return None
        return self.conn.execute(statement, params).fetchall()


class _AioSQLite(Connection):
    async def run(self, statement: str, params: Params = (), *, many: Sequence[Params] = ()) -> Any:
        if many:
            await self.conn.executemany(statement, many)
            return None
        async with self.conn.execute(statement, params) as cursor:
            return await cursor.fetchall()


class _SQLAlchemy(Connection):
    def run(self, statement: str, params: Params = (), *, many: Sequence[Params] = ()) -> Any:
        from sqlalchemy import text

        marker = "%s" if self.dialect == "postgresql" else "?"
        parts = statement.split(marker)
        named = text("".join(f"{part}:p{i}" for i, part in enumerate(parts[:-1])) + parts[-1])
        bound: Any = ([dict(_named(p)) for p in many] if many else dict(_named(params)))
        if self.is_async:
            return self._run_async(named, bound)
        return _rows(self.conn.execute(named, bound))

    async def _run_async(self, statement: Any, bound: Any) -> Any:
        return _rows(await self.conn.execute(statement, bound))


def _named(params: Params) -> Any:
    return ((f"p{i}", value) for i, value in enumerate(params))


def _rows(result: Any) -> Any:
    return result.fetchall() if result.returns_rows else None


def _check_sqlalchemy(conn: Any) -> None:
    """The driver's own connection under a Session or Connection, checked as if given."""
    from sqlalchemy.orm import Session

    connection = conn.connection() if isinstance(conn, Session) else conn
    driver = connection.connection.dbapi_connection
    if type(driver).__module__.startswith("psycopg"):
        _check_psycopg(driver)
    elif type(driver).__module__.startswith("sqlite3"):
        _check_sqlite(driver)


def _check_psycopg(conn: Any) -> None:
    from psycopg.pq import TransactionStatus

    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise ConfigurationError(
            "this psycopg connection is in autocommit mode outside a transaction: the message "
            "would be committed alone. Write it inside `with conn.transaction():`"
        )


def _check_sqlite(conn: Any) -> None:
    autocommit = getattr(conn, "autocommit", None) is True or conn.isolation_level is None
    if autocommit and not conn.in_transaction:
        raise ConfigurationError(
            "this sqlite3 connection is in autocommit mode outside a transaction: the message "
            "would be committed alone. Run `BEGIN` first (or use the default isolation_level)"
        )
