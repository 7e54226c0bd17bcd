"""Crash harness: consumers and producers in their own processes, killed with SIGKILL.

The handler's side effect is a row in an SQLite file outside the consumer, so what survives
a crash can be counted. A worker is told where to die: at its k-th message, `before` the
side effect, `during` the handler (effect written, handler not returned) or `after` the
handler returned (before the acknowledgement or commit reaches the broker, most of the time).

    python -m msgkit.testing.crash consume URL TOPIC GROUP GUARANTEE DB KILL_AT PHASE [dedup]
    python -m msgkit.testing.crash relay URL TOPIC OUTPUT GROUP KILL_AT PHASE
    python -m msgkit.testing.crash produce URL TOPIC GUARANTEE DB COUNT

`consume ... dedup` deduplicates with an SQLite store in the same file and writes the effect
and the key's mark in one SQLite transaction (effectively-once). `relay` is
exactly-once consume-process-produce: the side effect is a message to OUTPUT whose value is
the input's id (on Kafka, committed in the consumer's transaction).
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
from typing import Any

import msgkit
from msgkit.dedup import Dedup, current_claim

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


class _Kills:
    """Counts handled messages and dies at the chosen one, in the chosen phase."""

    def __init__(self, kill_at: int, phase: str) -> None:
        self.kill_at, self.phase, self.seen = kill_at, phase, 0

    def next(self) -> bool:
        self.seen += 1
        dying = self.seen == self.kill_at
        if dying and self.phase == "before":
            _die()
        return dying

    def effect_done(self, dying: bool) -> None:
        if dying and self.phase == "during":
            _die()
        if dying and self.phase == "after":
            asyncio.get_running_loop().call_soon(_die)  # once the handler has returned


async def consume(url: str, topic: str, group: str, guarantee: str, db_path: str,
                  kill_at: int, phase: str, with_dedup: bool = False) -> None:
    db = open_db(db_path)
    kills = _Kills(kill_at, phase)
    done = asyncio.Event()

    async def handler(msg: msgkit.Message) -> None:
        dying = kills.next()
        if with_dedup:  # the effect and the key's mark commit together
            claim = current_claim()
            assert claim is not None
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO effects VALUES (?, ?, ?)", (msg.id, os.getpid(), time.time()))
            claim.complete_in_sync(db)
            db.execute("COMMIT")
        else:
            db.execute("INSERT INTO effects VALUES (?, ?, ?)", (msg.id, os.getpid(), time.time()))
        kills.effect_done(dying)
        if msg.value == END:
            done.set()

    async with msgkit.connect(url) as broker:
        # A killed worker's claim blocks its key until the lease ends: handlers here are
        # instant, so a short lease keeps the run short.
        dedup = Dedup(f"sqlite:///{db_path}", lease=2.0) if with_dedup else None
        consumer = broker.consumer(topic, group=group, guarantee=msgkit.Guarantee(guarantee),
                                   prefetch=8, dedup=dedup)
        await consumer.start(handler)
        print("ready", flush=True)
        await done.wait()
        await consumer.stop()


async def relay(url: str, topic: str, output: str, group: str, kill_at: int,
                phase: str) -> None:
    kills = _Kills(kill_at, phase)
    done = asyncio.Event()

    async def handler(msg: msgkit.Message, ctx: msgkit.Context) -> None:
        dying = kills.next()
        await ctx.send(output, msg.id)
        kills.effect_done(dying)
        if msg.value == END:
            done.set()

    async with msgkit.connect(url) as broker:
        consumer = broker.consumer(topic, group=group, guarantee=msgkit.Guarantee.EXACTLY_ONCE,
                                   prefetch=8, **_stable_id(url, group))
        await consumer.start(handler)
        print("ready", flush=True)
        await done.wait()
        await consumer.stop()


def _stable_id(url: str, group: str) -> dict[str, Any]:
    """Kafka: each restart fences its killed predecessor's transaction at once."""
    return {"transactional_id": f"msgkit-crash-{group}"} if url.startswith("kafka") else {}


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
    def start(cls, *args: str, module: str = "msgkit.testing.crash") -> Worker:
        return cls(subprocess.Popen(
            [sys.executable, "-m", module, *args],
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
        url, topic, group, guarantee, db, kill_at, phase, *mode = args
        asyncio.run(consume(url, topic, group, guarantee, db, int(kill_at), phase,
                            mode == ["dedup"]))
    elif command == "relay":
        url, topic, output, group, kill_at, phase = args
        asyncio.run(relay(url, topic, output, group, int(kill_at), phase))
    elif command == "produce":
        url, topic, guarantee, db, count = args
        asyncio.run(produce(url, topic, guarantee, db, int(count)))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
