"""Crash workers for the outbox: a service and a relay, killed with SIGKILL at chosen points.

    python -m msgkit.testing.outbox_crash write DB TABLE TOPIC COUNT KILL_AT
    python -m msgkit.testing.outbox_crash relay DB TABLE URL GROUP KILL_AT PHASE

`write` places COUNT orders, each a row of TABLE_orders and its message in one transaction; at
order KILL_AT it prints `dying <message id>` and dies between the writes and the commit.
`relay` publishes in batches of 8 and dies at its KILL_AT-th publish, `before` it or
`after` it (published, not yet marked); with KILL_AT 0 it exits once nothing is pending.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgkit
from msgkit.message import Outgoing
from msgkit.outbox import Outbox, Relay
from msgkit.testing import eventually

BATCH = 8
LEASE = 1.0
"""SQLite: a killed relay's lease ends soon, so the next one takes over quickly."""
POLL = 0.02
"""A relay that lost a claim race to another comes back at once: else the other one (holding
every key's head) drains the outbox while it sleeps, and it never reaches its kill point."""


def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DyingRelay(Relay):
    """A relay that calls `die` at its `kill_at`-th publish, `before` or `after` it."""

    def __init__(self, *args: Any, kill_at: int, phase: str, die: Callable[[], None] = sigkill,
                 **options: Any) -> None:
        options.setdefault("poll_interval", POLL)
        super().__init__(*args, batch_size=BATCH, lease=LEASE, **options)
        self.kill_at, self.phase, self.die, self.calls = kill_at, phase, die, 0

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self.calls += 1
        dying = self.calls == self.kill_at
        if dying and self.phase == "before":
            self.die()
        await super().publish(messages)
        if dying:
            self.die()


def connect_db(db: str) -> Any:
    if db.startswith("sqlite:///"):
        return sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30)
    import psycopg

    return psycopg.connect(db)


def orders_table(outbox_table: str) -> str:
    """The business table beside an outbox table."""
    return f"{outbox_table}_orders"


def ensure_orders(db: str, outbox_table: str) -> None:
    conn = connect_db(db)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {orders_table(outbox_table)} (message_id TEXT)")
    conn.commit()
    conn.close()


def committed_orders(db: str, outbox_table: str) -> set[str]:
    conn = connect_db(db)
    try:
        rows = conn.execute(f"SELECT message_id FROM {orders_table(outbox_table)}").fetchall()
        return {row[0] for row in rows}
    finally:
        conn.close()


def write(db: str, table: str, topic: str, count: int, kill_at: int) -> None:
    outbox = Outbox(table)
    conn = connect_db(db)
    marker = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    print("ready", flush=True)
    for n in range(1, count + 1):
        message_id = outbox.send_sync(conn, topic, f"order {n}", key=f"customer-{n % 5}")
        conn.execute(f"INSERT INTO {orders_table(table)} VALUES ({marker})", (message_id,))
        if n == kill_at:
            print(f"dying {message_id}", flush=True)
            sigkill()
        conn.commit()


async def relay(db: str, table: str, url: str, group: str, kill_at: int, phase: str) -> None:
    async with msgkit.connect(url) as broker:
        worker = DyingRelay(db, broker, table=table, kill_at=kill_at, phase=phase,
                            required_groups=(group,))
        async with worker:
            print("ready", flush=True)
            await eventually(_drained(worker), timeout=300, interval=0.05,
                             message="nothing pending")


def _drained(relay: Relay) -> Callable[[], Any]:
    async def check() -> bool:
        return (await relay.counts()).pending == 0
    return check


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "write":
        db, table, topic, count, kill_at = args
        write(db, table, topic, int(count), int(kill_at))
    elif command == "relay":
        db, table, url, group, kill_at, phase = args
        asyncio.run(relay(db, table, url, group, int(kill_at), phase))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
