"""An outbox database per test: PostgreSQL (a fresh table, dropped afterwards) and SQLite
(a file in the test's tmp_path), through the drivers a service would use."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from msgkit.outbox import Outbox
from msgkit.outbox.relay import open_source
from msgkit.outbox.rows import Pending
from msgkit.outbox.schema import Table
from msgkit.testing.stores import POSTGRES_URL

Row = tuple[str, object, dict[str, Any]]
"""What one `outbox.send` gets: topic, value and its keyword arguments."""


@dataclass
class OutboxDB:
    kind: str
    url: str
    table: str

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.table)

    async def write(self, rows: Sequence[Row], *, commit: bool = True) -> list[str]:
        """Writes `rows` in one transaction with a business row each; rolls back unless
        `commit`. Returns the message ids."""
        outbox = self.outbox
        if self.kind == "sqlite":
            db = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                db.execute("CREATE TABLE IF NOT EXISTS business (id TEXT)")
                ids = []
                for topic, value, options in rows:
                    ids.append(outbox.send_sync(db, topic, value, **options))
                    db.execute("INSERT INTO business VALUES (?)", (ids[-1],))
                db.commit() if commit else db.rollback()
            finally:
                db.close()
            return ids
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            ids = [await outbox.send(conn, topic, value, **options) for topic, value, options in rows]
            await (conn.commit() if commit else conn.rollback())
        return ids


@pytest.fixture(params=["sqlite", "postgres"])
def outbox_db(request: pytest.FixtureRequest, tmp_path: Path) -> OutboxDB:
    if request.param == "sqlite":
        return OutboxDB("sqlite", f"sqlite:///{tmp_path / 'outbox.db'}", "msgkit_outbox")
    # The dedup stores' fixture: PostgreSQL started if need be, its fresh table dropped after.
    store_url = str(request.getfixturevalue("postgres_store_url"))
    table = parse_qs(urlsplit(store_url).query)["table"][0]

    def drop_business_table() -> None:  # the crash tests' orders
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{table}_orders")))

    request.addfinalizer(drop_business_table)
    return OutboxDB("postgres", POSTGRES_URL, table)


async def pending(db: OutboxDB) -> list[Pending]:
    """The rows waiting in `db`'s outbox, oldest first, as a relay reads them."""
    source = open_source(db.url, Table(db.table), retention=0.0, lease=10.0)
    await source.open()
    try:
        claim = await source.claim(10_000, ())
        if claim is None:
            return []
        await claim.release()
        return list(claim.rows)
    finally:
        await source.close()
