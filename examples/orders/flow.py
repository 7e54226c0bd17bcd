"""Runs both order flows on the broker in `MSGKIT_URL` (default: the embedded `memory://`),
the order service's database in `ORDERS_DB` (default: an SQLite file in a temporary
directory; e.g. `postgresql://postgres@127.0.0.1:5432/test`).

Open `choreography.py` first (services reacting to events), then `order_service.py` (an
order and its event in one transaction), then `saga.py` (an orchestrator with
compensations). `events.py` holds the messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgkit
from examples.orders import choreography, order_service, saga
from examples.orders.events import OrderPlaced, Topics
from examples.orders.ledger import Ledger
from msgkit.instrument import Instrument
from msgkit.url import redact

CUSTOMERS = [("ada", "ada@example.com"), ("grace", "grace@example.com"),
             ("alan", "alan@broken.example"), ("edsger", "edsger@example.com")]
EMPTY_ORDER = OrderPlaced(order_id="order-5", customer="barbara", email="barbara@example.com",
                          amount=50.0, items=0)
"""Refused by the order service after its row was written: it rolls back, event included."""


def orders(prefix: str, items: int = 1) -> list[OrderPlaced]:
    return [OrderPlaced(order_id=f"{prefix}-{n}", customer=c, email=e, amount=10.0 * n, items=items)
            for n, (c, e) in enumerate(CUSTOMERS, 1)]


async def run(url: str | None = None, *, db: str | None = None, table: str | None = None,
              quiet: bool = False, instruments: Sequence[Instrument] = ()
              ) -> tuple[Ledger, Ledger, dict[str, str]]:
    """`db`: the order service's database (default: `ORDERS_DB`, else a temporary SQLite
    file); `table`: its orders table, the outbox being `<table>_outbox` (default: fresh
    ones, dropped at the end, so a persistent database keeps nothing of the run)."""
    topics = Topics(uuid.uuid4().hex[:8])
    chore, orchestrated = Ledger(quiet=quiet), Ledger(quiet=quiet)
    with order_service.database(db) as orders_db:
        async with msgkit.connect(url, instruments=instruments) as broker:
            if not quiet:
                print(f"msgkit order flow on {broker.url}, orders in {redact(orders_db)}\n\n"
                      "-- choreography --")
            service = order_service.connect(orders_db, topics.orders, temporary=table is None,
                                            table=table or f"orders_{topics.suffix}",
                                            instruments=broker.instruments)
            await choreography.run(broker, topics, chore, [*orders("order"), EMPTY_ORDER], service)
            if not quiet:
                print("\n-- saga (3 items in stock, 2 per order: the second saga compensates) --")
            outcomes = await saga.run(broker, topics, orchestrated, orders("saga", items=2)[:2],
                                      stock=3)
    if not quiet:
        sagas = list(outcomes.values())
        print(f"\nsummary: {len(chore.charged)} orders paid, {len(chore.reserved)} reserved, "
              f"{len(chore.confirmations)} confirmed, {len(chore.dead_lettered)} dead-lettered and "
              f"replayed, {len(chore.rejected)} rejected (never published); "
              f"sagas: {sagas.count('completed')} completed, {sagas.count('compensated')} "
              f"compensated ({len(orchestrated.refunded)} refund, "
              f"{len(orchestrated.cancelled)} cancellation)")
    return chore, orchestrated, outcomes
