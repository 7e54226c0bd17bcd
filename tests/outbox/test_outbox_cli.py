"""`msgkit outbox` as an operator runs it: separate processes against real databases and
brokers, never showing a password or a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

import msgkit
from msgkit.testing import Collector
from msgkit.url import redact
from tests.outbox.conftest import OutboxDB

WAIT = 30.0
PASSWORD = "pw-never-shown-7f3a"
COMMAND = [sys.executable, "-m", "msgkit.cli", "outbox"]
ENV = {"COLUMNS": "200", "PATH": ""}  # no MSGKIT_URL from the test run's environment


def _cli(*args: str, status: int = 0) -> str:
    """`msgkit outbox *args` in its own process: its whole output, stdout and stderr."""
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=WAIT, env=ENV)
    out = done.stdout + done.stderr
    assert done.returncode == status, out
    assert PASSWORD not in out and "Traceback" not in out, out
    return out


def _with_password(db: OutboxDB) -> str:
    """The database URL as an operator writes it, with a password (the test server trusts
    its clients, so it ignores it)."""
    parts = urlsplit(db.url)
    if db.kind == "sqlite" or parts.password:
        return db.url
    return parts._replace(netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
                          ).geturl()


def _counts(status: str) -> dict[str, int]:
    return {name: int(n) for name, n in
            re.findall(r"^(pending|failed|published, kept): (\d+)", status, re.MULTILINE)}


async def _update(db: OutboxDB, assignment: str, message_id: str, value: object) -> None:
    """Sets one column of one row, as a relay does (`assignment`: `column = ?`)."""
    statement = f'UPDATE "{db.table}" SET {assignment} WHERE message_id = ?'
    if db.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(db.url.removeprefix("sqlite:///"))) as file, file:
            file.execute(statement, (value, message_id))
        return
    async with await psycopg.AsyncConnection.connect(db.url) as conn:  # commits on exit
        await conn.execute(statement.replace("?", "%s"), (value, message_id))


async def _table_exists(db: OutboxDB) -> bool:
    if db.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(db.url.removeprefix("sqlite:///"))) as file:
            return bool(file.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                     (db.table,)).fetchall())
    async with await psycopg.AsyncConnection.connect(db.url) as conn:
        cursor = await conn.execute("SELECT to_regclass(%s)", (f'"{db.table}"',))
        row = await cursor.fetchone()
        return row is not None and row[0] is not None


async def test_relay_publishes_committed_rows_byte_for_byte_until_sigterm(
    msgkit_url: str, outbox_db: OutboxDB, unique_name: str
) -> None:
    if msgkit_url.startswith("memory:"):
        pytest.skip("a memory:// broker lives inside one process: `outbox relay` refuses it")
    db_url = _with_password(outbox_db)
    async with msgkit.connect(msgkit_url) as broker:
        received = Collector()
        await broker.consumer(unique_name, group="g", start="earliest").start(received)
        [bad] = await outbox_db.write([("bad topic!", "never", {})])  # the relay sets it aside
        sent = await outbox_db.write([
            (unique_name, b"\x00\xffbinary", {"key": b"\xfe\x00k",
                                              "headers": [("trace", b"\x00\xfe"), ("tag", "a")]}),
            (unique_name, {"n": 2}, {"key": "text-key"}),
            (unique_name, "keyless", {}),
        ])
        relay = await asyncio.create_subprocess_exec(
            *COMMAND, "relay", "--db", db_url, "--table", outbox_db.table, "--url", msgkit_url,
            "--required-group", "g", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=ENV)
        try:
            await received.wait_for(len(sent), timeout=WAIT)
            relay.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(relay.communicate(), WAIT)
        finally:
            if relay.returncode is None:
                relay.kill()
                await relay.wait()
    out = (stdout + stderr).decode()
    assert relay.returncode == 0, out
    assert "relay stopped: published 3 message(s)" in out
    assert f'relaying "{outbox_db.table}" in {redact(db_url)} to ' in out
    assert PASSWORD not in out and "Traceback" not in out, out
    by_id = {m.id: m for m in received.messages}
    assert len(received.messages) == 3 and set(by_id) == set(sent) and bad not in by_id
    first, second, third = (by_id[i] for i in sent)
    assert (first.value, first.key_bytes, first.headers.get("trace"), first.headers.get("tag")) == (
        b"\x00\xffbinary", b"\xfe\x00k", b"\x00\xfe", "a")
    assert (second.value, second.key, third.value, third.key) == (b'{"n":2}', "text-key",
                                                                  b"keyless", None)
    # SIGTERM let the round in progress finish: the bad row is marked, nothing is left waiting.
    status = await asyncio.to_thread(_cli, "status", "--db", db_url, "--table", outbox_db.table)
    assert _counts(status) == {"pending": 0, "failed": 1, "published, kept": 0}, status


async def test_status_counts_each_kind_of_row_and_retry_puts_failed_ones_back(
    outbox_db: OutboxDB,
) -> None:
    db_url = _with_password(outbox_db)
    failed, kept, *_ = await outbox_db.write([("orders", f"{n}", {}) for n in range(4)])
    await _update(outbox_db, "error = ?", failed, "InvalidTopicError: 'bad topic!' is invalid")
    await _update(outbox_db, "published_at = ?", kept,
                  time.time() if outbox_db.kind == "sqlite" else "now")
    options = ("--db", db_url, "--table", outbox_db.table)

    before = await asyncio.to_thread(_cli, "status", *options)
    assert _counts(before) == {"pending": 2, "failed": 1, "published, kept": 1}, before
    assert "the oldest waiting for" in before and "msgkit outbox retry" in before
    retried = await asyncio.to_thread(_cli, "retry", *options)
    assert retried.startswith("1 failed row(s) back to pending"), retried
    after = await asyncio.to_thread(_cli, "status", *options)
    assert _counts(after) == {"pending": 3, "failed": 0, "published, kept": 1}, after


async def test_create_makes_the_table_before_any_send(outbox_db: OutboxDB) -> None:
    assert not await _table_exists(outbox_db)
    out = await asyncio.to_thread(_cli, "create", "--db", _with_password(outbox_db),
                                  "--table", outbox_db.table)
    assert f'outbox table "{outbox_db.table}"' in out and "ready" in out, out
    assert await _table_exists(outbox_db)


async def test_status_and_retry_on_a_mistyped_table_fail_and_create_nothing(
    outbox_db: OutboxDB,
) -> None:
    for command in ("status", "retry"):
        out = await asyncio.to_thread(_cli, command, "--db", _with_password(outbox_db),
                                      "--table", outbox_db.table, status=1)
        assert "no outbox" in out and "msgkit outbox create" in out, out
    assert not await _table_exists(outbox_db)


async def test_database_errors_are_one_line_without_the_password(
    postgres_store_url: str, tmp_path: Path
) -> None:
    """Refused, unreachable and mistyped databases: a message naming the database (its
    password redacted), exit code 1."""
    server = f"postgresql://postgres:{PASSWORD}@127.0.0.1"
    cases = {
        f"{server}:5432/no_such_db_{uuid.uuid4().hex[:8]}": "does not exist",
        f"{server}:1/test": "port 1 failed",
        f"{server}:notaport/test": "invalid host or port",
        f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}": "unable to open database file",
    }
    commands = ["status", "retry", "status", "create"]
    outs = await asyncio.gather(*(asyncio.to_thread(_cli, command, "--db", db, status=1)
                                  for command, db in zip(commands, cases, strict=True)))
    for out, (db, why) in zip(outs, cases.items(), strict=True):
        assert out.startswith("error: ") and why in out and redact(db) in out, out


async def test_relay_on_an_unreachable_database_exits_1_without_the_password(amqp_url: str) -> None:
    db = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test"
    out = await asyncio.to_thread(_cli, "relay", "--db", db, "--url", amqp_url, status=1)
    assert f"error: outbox database {redact(db)}: " in out and "port 1 failed" in out, out


def test_relay_refuses_a_memory_broker(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    out = _cli("relay", "--db", f"sqlite:///{db}", "--url", "memory://", status=1)
    assert "inside the process" in out and "msgkit.outbox.Relay" in out, out
    assert not db.exists(), "refused before touching the database"


pytestmark = pytest.mark.timeout(60)
