"""Crash harness: consumers and producers in their own processes, killed with SIGKILL.

The handler's side effect is a row in an SQLite file outside the consumer, so what survives
a crash can be counted. A worker is told where to die: at its k-th message, `before` the
side effect, `during` the handler (effect written, handler not returned) or `after` the
handler returned (before the acknowledgement or commit reaches the broker, most of the time).

    python -m msgkit.testing.crash consume URL TOPIC GROUP GUARANTEE DB KILL_AT PHASE
    python -m msgkit.testing.crash produce URL TOPIC GUARANTEE DB COUNT
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgkit

PHASES = ("before", "during", "after")
END = b"END"
"""The sentinel: published after the crashes; once handled, everything before it was too."""


def open_db(path: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS effects (id TEXT, pid INTEGER, at REAL)")
    db.execute("CREATE TABLE IF NOT EXISTS sent (id TEXT PRIMARY KEY)")
    return db


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def consume(url: str, topic: str, group: str, guarantee: str, db_path: str,
                  kill_at: int, phase: str) -> None:
    db = open_db(db_path)
    seen = 0
    done = asyncio.Event()

    async def handler(msg: msgkit.Message) -> None:
        nonlocal seen
        seen += 1
        dying = seen == kill_at
        if dying and phase == "before":
            _die()
        db.execute("INSERT INTO effects VALUES (?, ?, ?)", (msg.id, os.getpid(), time.time()))
        if dying and phase == "during":
            _die()
        if dying and phase == "after":
            asyncio.get_running_loop().call_soon(_die)  # once the handler has returned
        if msg.value == END:
            done.set()

    async with msgkit.connect(url) as broker:
        consumer = broker.consumer(topic, group=group, guarantee=msgkit.Guarantee(guarantee),
                                   prefetch=8)
        await consumer.start(handler)
        print("ready", flush=True)
        await done.wait()
        await consumer.stop()


async def produce(url: str, topic: str, guarantee: str, db_path: str, count: int) -> None:
    """Sends `count` messages one by one; records each id once `send` returned."""
    db = open_db(db_path)
    async with msgkit.connect(url) as broker:
        producer = broker.producer(guarantee=msgkit.Guarantee(guarantee),
                                   required_groups=("verify",))
        print("ready", flush=True)
        for n in range(count):
            sent = await producer.send(topic, f"{n}")
            db.execute("INSERT INTO sent VALUES (?)", (sent,))


@dataclass
class Worker:
    """A running worker process; `ready()` waits until it is subscribed or connected."""

    process: subprocess.Popen[str]

    @classmethod
    def start(cls, *args: str) -> Worker:
        return cls(subprocess.Popen(
            [sys.executable, "-m", "msgkit.testing.crash", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))

    def ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker printed "ready"; fail with its stderr if it did not."""
        stdout = self.process.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if readable else ""
        if line.strip() != "ready":
            self.kill()
            err = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"worker not ready within {timeout}s: {line!r} {err[-2000:]}")

    def died_by_kill(self, timeout: float) -> bool:
        """Wait for the worker to end; True if SIGKILL ended it, False if still running."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if code not in (-signal.SIGKILL, 0):
            err = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"worker failed with exit code {code}: {err[-2000:]}")
        return code == -signal.SIGKILL

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "consume":
        url, topic, group, guarantee, db, kill_at, phase = args
        asyncio.run(consume(url, topic, group, guarantee, db, int(kill_at), phase))
    elif command == "produce":
        url, topic, guarantee, db, count = args
        asyncio.run(produce(url, topic, guarantee, db, int(count)))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
