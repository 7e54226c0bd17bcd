"""The order flows end to end: on every backend with the order service on SQLite, and once
(on the memory broker) with it on PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from examples.orders.flow import CUSTOMERS, EMPTY_ORDER, run
from examples.orders.ledger import Ledger
from examples.orders.order_service import ORDERS_DB, database
from msgkit.errors import BrokerUnavailableError
from msgkit.testing import stores
from msgkit.testing.brokers import unavailable
from msgkit.url import URL, redact

EVERYONE = {f"order-{n}" for n in range(1, len(CUSTOMERS) + 1)}


async def test_choreography_and_saga(msgkit_url: str, tmp_path: Path) -> None:
    db = tmp_path / "orders.db"
    chore, orchestrated, outcomes = await run(msgkit_url, db=f"sqlite:///{db}", table="orders",
                                              quiet=True)
    check_choreography(chore)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        check_database(lambda query: conn.execute(query).fetchall(), "orders")

    assert outcomes == {"saga-1": "completed", "saga-2": "compensated"}
    assert orchestrated.refunded == {"saga-2"} and orchestrated.cancelled == {"saga-2"}
    saga2 = [line for line in orchestrated.lines if "saga-2" in line]
    assert saga2.index(next(x for x in saga2 if "refund" in x)) < \
        saga2.index(next(x for x in saga2 if "cancelled" in x)), "compensations run in reverse"


@pytest.fixture
def postgres_table() -> Iterator[tuple[psycopg.Connection[tuple[object, ...]], str]]:
    """A connection to the tests' PostgreSQL and a fresh table name; the tables made under
    that name are dropped afterwards."""
    table = f"orders_{uuid.uuid4().hex[:12]}"
    try:
        stores.ensure_postgres()
        conn = psycopg.connect(stores.POSTGRES_URL, autocommit=True, connect_timeout=3)
    except (BrokerUnavailableError, psycopg.Error) as exc:
        unavailable(f"PostgreSQL at {redact(stores.POSTGRES_URL)} unavailable: {redact(str(exc))}")
    with conn:
        yield conn, table
        for name in (table, f"{table}_outbox"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("msgkit_url", ["memory"], indirect=True)
async def test_the_order_service_on_postgresql(
    msgkit_url: str, postgres_table: tuple[psycopg.Connection[tuple[object, ...]], str]
) -> None:
    conn, table = postgres_table
    chore, _, _ = await run(msgkit_url, db=stores.POSTGRES_URL, table=table, quiet=True)
    check_choreography(chore)
    check_database(lambda query: conn.execute(query).fetchall(), table)


def test_the_default_database_is_a_temporary_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ORDERS_DB, raising=False)
    with database() as db:
        folder = Path(URL.parse(db).path).parent
        assert db.startswith("sqlite:///") and folder.is_dir()
    assert not folder.exists(), "the demo leaves nothing behind"
    monkeypatch.setenv(ORDERS_DB, "postgresql://db/shop")
    with database() as db:
        assert db == "postgresql://db/shop"


def check_choreography(chore: Ledger) -> None:
    assert set(chore.charged) == EVERYONE and chore.reserved == EVERYONE
    assert chore.confirmations == EVERYONE and chore.receipts == EVERYONE
    refused = [line for line in chore.lines if "refused" in line]
    assert len(refused) == 3, "the broken address is tried max_attempts times before the DLQ"
    assert chore.dead_lettered == ["order-3"]
    assert not any("skipped" in line for line in chore.lines), "the replay reached payments"
    # The rejected order rolled back with its event: the relay published the other four
    # only, and no consumer ever saw it.
    assert chore.rejected == [EMPTY_ORDER.order_id]
    assert any(f"published {len(EVERYONE)} OrderPlaced events" in line for line in chore.lines)
    seen = [line for line in chore.lines if EMPTY_ORDER.order_id in line]
    assert len(seen) == 1 and seen[0].startswith("orders ") and "rolled back" in seen[0], seen


def check_database(query: Callable[[str], Sequence[tuple[object, ...]]], table: str) -> None:
    """The database kept the committed orders only; the relay left nothing unpublished."""
    assert {order_id for (order_id, *_) in query(f'SELECT order_id FROM "{table}"')} == EVERYONE
    assert list(query(f'SELECT count(*) FROM "{table}_outbox"')) == [(0,)]
