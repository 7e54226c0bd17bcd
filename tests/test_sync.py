"""The blocking API from plain threads, on every backend: one producer shared by many
threads, a synchronous handler run by the blocking runner, the async API's errors, and a
clean close."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import msgkit
import msgkit.sync

THREADS, EACH = 8, 50
WAIT = 60.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """`eventually` for plain threads (no event loop here)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {WAIT}s"
        time.sleep(0.01)


def test_threads_share_a_producer_and_a_sync_handler_gets_everything(
    msgkit_url: str, unique_name: str
) -> None:
    got: list[bytes] = []
    lock = threading.Lock()

    def handle(msg: msgkit.Message) -> None:  # plain sync code, in a worker thread
        assert threading.current_thread() is not threading.main_thread()
        with lock:
            got.append(msg.value)

    with msgkit.sync.connect(msgkit_url) as broker:
        broker.subscribe(unique_name, handle, group="g", concurrency=4)
        runner = threading.Thread(target=broker.run)
        runner.start()
        wait_until(lambda: all(c.running for c, _ in broker.broker._subscribers), "subscribed")
        producer = broker.producer(required_groups=("g",))

        def send_from_a_thread(n: int) -> list[str]:
            return [producer.send(unique_name, f"{n}-{i}".encode(), key=str(n))
                    for i in range(EACH)]

        with ThreadPoolExecutor(THREADS) as pool:
            ids = [i for chunk in pool.map(send_from_a_thread, range(THREADS)) for i in chunk]
        assert len(set(ids)) == THREADS * EACH
        wait_until(lambda: len(got) >= THREADS * EACH, "every message handled")
        broker.close()
        runner.join(WAIT)
        assert not runner.is_alive()
    assert sorted(got) == sorted(f"{n}-{i}".encode() for n in range(THREADS) for i in range(EACH))


def test_errors_are_the_async_apis_and_a_closed_broker_says_so(msgkit_url: str) -> None:
    broker = msgkit.sync.connect(msgkit_url)
    producer = broker.producer()
    with pytest.raises(msgkit.InvalidTopicError):
        producer.send("no spaces allowed", b"x")
    broker.close()
    broker.close()  # twice is fine
    with pytest.raises(msgkit.ClosedError):
        producer.send("orders", b"x")


def test_a_script_that_never_closes_exits_cleanly(msgkit_url: str, unique_name: str) -> None:
    script = (
        "import sys, msgkit.sync\n"
        "broker = msgkit.sync.connect(sys.argv[1])\n"
        "producer = broker.producer(required_groups=('g',))\n"
        "print(producer.send(sys.argv[2], b'bye'))\n"  # then exit: atexit closes
    )
    done = subprocess.run([sys.executable, "-c", script, msgkit_url, unique_name],
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0 and done.stdout.strip(), done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Task was destroyed" not in done.stderr, done.stderr


def test_views_write_through_the_outbox_and_the_brokers_relay_publishes(
    tmp_path: Path, unique_name: str
) -> None:
    """Synchronous views (threads) commit rows with `send_sync`; `broker.relay` publishes."""
    from msgkit.outbox import Outbox

    db_path = tmp_path / "app.db"
    outbox = Outbox()
    got: list[bytes] = []
    with msgkit.sync.connect("memory://") as broker:
        broker.subscribe(unique_name, lambda msg: got.append(msg.value), group="g")
        runner = threading.Thread(target=broker.run)
        runner.start()
        relay = broker.relay(f"sqlite:///{db_path}", required_groups=("g",))

        def view(n: int) -> None:  # one request: the row and its event in one transaction
            db = sqlite3.connect(db_path, timeout=30)
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS orders (n INTEGER)")
                db.execute("INSERT INTO orders VALUES (?)", (n,))
                outbox.send_sync(db, unique_name, f"{n}")
            db.close()

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(view, range(40)))
        wait_until(lambda: len(got) == 40, "every committed row published")
        broker.close()
        runner.join(WAIT)
    assert relay.published == 40 and sorted(got) == sorted(f"{n}".encode() for n in range(40))
