"""The README's outbox and blocking-API examples (examples/outbox/) do what it says on every
backend: the psycopg service publishes the order it committed and handles it once; the Flask
app's view commits the order with its event through SQLAlchemy, the relay publishes it, and
the other view's blocking send reaches a consumer."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from sqlalchemy import text

from msgkit.testing import Collector, eventually
from msgkit.testing.stores import POSTGRES_URL
from tests.docs.support import EXAMPLES, finish, start

OUTBOX = EXAMPLES / "outbox"


@pytest.fixture
def examples_db(postgres_store_url: str) -> str:
    """A PostgreSQL database of the examples' own: their `orders` tables are theirs."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'msgkit_examples'").fetchone():
            conn.execute("CREATE DATABASE msgkit_examples")
    return POSTGRES_URL.rsplit("/", 1)[0] + "/msgkit_examples"


async def test_the_psycopg_service_ships_the_order_it_committed(
    url: str, unique_name: str, examples_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_DB", examples_db)
    process = await start(OUTBOX / "psycopg_orders.py", url, unique_name, unique_name)
    assert await finish(process) == [f"shipping {unique_name}"]


@pytest.fixture(params=["sqlite", "postgres"])
def orders_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL, as the Flask app is configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orders.db'}"
    examples_db = str(request.getfixturevalue("examples_db"))
    return examples_db.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def flask_orders(url: str, orders_db: str, unique_name: str,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples/outbox/flask_orders.py imported as Flask imports it, configured by its
    environment; its msgkit.sync broker is closed afterwards."""
    for name, value in {"MSGKIT_URL": url, "ORDERS_DB": orders_db, "ORDERS_TOPIC": unique_name}.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(f"flask_orders_{unique_name}",
                                                  OUTBOX / "flask_orders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        module.broker.close()
        sys.modules.pop(spec.name, None)


async def test_the_flask_views_publish_the_committed_order_and_the_blocking_send(
    flask_orders: ModuleType, unique_name: str
) -> None:
    broker = flask_orders.broker
    orders, reminders = Collector(), Collector()

    async def consume() -> None:
        for topic, collector in ((unique_name, orders), (f"{unique_name}.reminders", reminders)):
            await broker.broker.consumer(topic, group="shipping").start(collector)

    broker.call(consume())
    client = flask_orders.app.test_client()
    order = unique_name  # the PostgreSQL table outlives the test
    placed = client.post("/orders", json={"order_id": order, "amount": 9.5})
    assert placed.status_code == 202 and placed.json == {"accepted": order}
    await eventually(lambda: len(orders.messages) == 1, timeout=30, message="the order's event")
    [event] = orders.messages
    assert (event.key, json.loads(event.value), event.idempotency_key) == (
        order, {"order_id": order, "amount": 9.5}, event.id)
    with flask_orders.engine.connect() as conn:
        stored = conn.execute(text("SELECT amount FROM orders WHERE id = :id"), {"id": order})
        assert stored.scalar_one() == 9.5

    reminded = client.post(f"/orders/{order}/reminders")
    assert reminded.status_code == 200
    await eventually(lambda: reminders.ids == {reminded.json["message_id"]}, timeout=30,
                     message="the blocking send")
