"""The order service: an order row and its OrderPlaced event, committed in one transaction.

    service = order_service.connect(db, topic)
    async with service, Relay(db, broker, table=service.outbox_table):
        await service.place(order)  # the row and the event, or neither

`place` writes the event with `Outbox.send` into the transaction that inserts the row; the
`Relay` publishes it once that transaction committed. Calling `producer.send` instead is a
dual write: sent before the commit, the event may announce an order that then rolls back;
sent after it, a crash in between keeps an order nobody hears about.

`db`: `sqlite:///path.db` (sqlite3, on a worker thread) or `postgresql://...` (psycopg's
AsyncConnection, `pip install 'msgkit[postgres]'`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from examples.orders.events import OrderPlaced
from msgkit.instrument import Instrument
from msgkit.outbox import Outbox
from msgkit.url import URL

if TYPE_CHECKING:
    import psycopg

ORDERS_DB = "ORDERS_DB"
"""The environment variable naming the orders database (default: a temporary SQLite file)."""


class InvalidOrder(Exception):
    """An order the service refuses: its transaction rolls back."""


def check(order: OrderPlaced) -> None:
    if order.items < 1:
        raise InvalidOrder("no items")
    if order.amount <= 0:
        raise InvalidOrder("amount not positive")


@contextlib.contextmanager
def database(db: str | None = None) -> Iterator[str]:
    """`db`, else `$ORDERS_DB`, else an SQLite file in a temporary directory, removed
    afterwards."""
    db = db or os.environ.get(ORDERS_DB)
    if db:
        yield db
        return
    with tempfile.TemporaryDirectory(prefix="msgkit-orders-") as folder:
        yield f"sqlite:///{os.path.join(folder, 'orders.db')}"


def connect(db: str, topic: str, *, table: str = "orders", temporary: bool = False,
            instruments: Sequence[Instrument] = ()) -> OrderService:
    """The order service on `db`, its orders in `table`, its outbox in `<table>_outbox`;
    open it with `async with`. `temporary`: its tables are dropped when it closes (a demo
    run's own, so a persistent database keeps nothing of it). `instruments`: the broker's,
    so each event carries the trace it was written in."""
    scheme = URL.parse(db).scheme
    if scheme == "sqlite":
        return SQLiteOrderService(db, topic, table, temporary, instruments)
    if scheme in ("postgresql", "postgres"):
        return PostgresOrderService(db, topic, table, temporary, instruments)
    raise ValueError(f"the order service runs on sqlite:/// or postgresql://, not {scheme}://")


class OrderService(ABC):
    def __init__(self, db: str, topic: str, table: str, temporary: bool,
                 instruments: Sequence[Instrument]) -> None:
        if not table.isidentifier():
            raise ValueError(f"{table!r} is not a plain table name")
        self.db, self.topic, self.table, self.temporary = db, topic, table, temporary
        self.outbox_table = f"{table}_outbox"
        self.outbox = Outbox(self.outbox_table, instruments=instruments)
        self._one_transaction_at_a_time = asyncio.Lock()  # they share one connection

    async def place(self, order: OrderPlaced) -> None:
        """Insert the order and its OrderPlaced event, committed together; on `InvalidOrder`
        neither is kept."""
        async with self._one_transaction_at_a_time:
            await self._place(order)

    @abstractmethod
    async def _place(self, order: OrderPlaced) -> None: ...

    @abstractmethod
    async def __aenter__(self) -> OrderService: ...

    @abstractmethod
    async def __aexit__(self, *exc: object) -> None: ...

    def _create(self) -> str:
        return (f'CREATE TABLE IF NOT EXISTS "{self.table}" (order_id text PRIMARY KEY, '
                "customer text NOT NULL, email text NOT NULL, amount numeric(12, 2) NOT NULL, "
                "items integer NOT NULL)")

    def _insert(self, placeholder: str) -> str:
        return (f'INSERT INTO "{self.table}" (order_id, customer, email, amount, items) '
                f'VALUES ({", ".join([placeholder] * 5)})')

    def _drop(self) -> list[str]:
        return [f'DROP TABLE IF EXISTS "{name}"' for name in (self.table, self.outbox_table)]


def _row(order: OrderPlaced) -> tuple[Any, ...]:
    return order.order_id, order.customer, order.email, order.amount, order.items


class SQLiteOrderService(OrderService):
    """sqlite3 blocks: each transaction runs whole on a worker thread."""

    def __init__(self, db: str, topic: str, table: str, temporary: bool,
                 instruments: Sequence[Instrument]) -> None:
        super().__init__(db, topic, table, temporary, instruments)
        self.path = URL.parse(db).path
        self._conn: sqlite3.Connection | None = None

    async def __aenter__(self) -> SQLiteOrderService:
        def create() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, check_same_thread=False)  # used from worker threads
            with conn:
                conn.execute(self._create())
                self.outbox.create_sync(conn)
            return conn

        self._conn = await asyncio.to_thread(create)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None

        def close() -> None:
            if self.temporary:  # and the table of the relays' lease, which SQLite has
                for statement in [*self._drop(), f"DROP TABLE IF EXISTS {self.outbox.table.lease}"]:
                    conn.execute(statement)
            conn.close()

        await asyncio.to_thread(close)

    async def _place(self, order: OrderPlaced) -> None:
        await asyncio.to_thread(self._place_blocking, order)

    def _place_blocking(self, order: OrderPlaced) -> None:
        assert self._conn is not None, "open the service with `async with`"
        with self._conn:  # commits both writes, or rolls both back on an exception
            self._conn.execute(self._insert("?"), _row(order))
            self.outbox.send_sync(self._conn, self.topic, order, key=order.order_id,
                                  idempotency_key=order.order_id)
            check(order)  # last, so a refused order has a row and an event to roll back


class PostgresOrderService(OrderService):
    def __init__(self, db: str, topic: str, table: str, temporary: bool,
                 instruments: Sequence[Instrument]) -> None:
        super().__init__(db, topic, table, temporary, instruments)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> PostgresOrderService:
        import psycopg  # only when PostgreSQL is configured: an optional dependency

        self._conn = await psycopg.AsyncConnection.connect(self.db, autocommit=True)
        async with self._conn.transaction():
            await self._conn.execute(self._create())
            await self.outbox.create(self._conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if self.temporary:
            for statement in self._drop():
                await conn.execute(statement)
        await conn.close()

    async def _place(self, order: OrderPlaced) -> None:
        assert self._conn is not None, "open the service with `async with`"
        async with self._conn.transaction():  # commits both writes, or rolls both back
            await self._conn.execute(self._insert("%s"), _row(order))
            await self.outbox.send(self._conn, self.topic, order, key=order.order_id,
                                   idempotency_key=order.order_id)
            check(order)  # last, so a refused order has a row and an event to roll back
