"""Runs both order flows on the broker in `MSGKIT_URL` (default: the embedded `memory://`).

Open `choreography.py` first (services reacting to events), then `saga.py` (an orchestrator
with compensations). `events.py` holds the messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgkit
from examples.orders import choreography, saga
from examples.orders.events import OrderPlaced, Topics
from examples.orders.ledger import Ledger
from msgkit.instrument import Instrument

CUSTOMERS = [("ada", "ada@example.com"), ("grace", "grace@example.com"),
             ("alan", "alan@broken.example"), ("edsger", "edsger@example.com")]


def orders(prefix: str, items: int = 1) -> list[OrderPlaced]:
    return [OrderPlaced(order_id=f"{prefix}-{n}", customer=c, email=e, amount=10.0 * n, items=items)
            for n, (c, e) in enumerate(CUSTOMERS, 1)]


async def run(url: str | None = None, *, quiet: bool = False,
              instruments: Sequence[Instrument] = ()) -> tuple[Ledger, Ledger, dict[str, str]]:
    topics = Topics(uuid.uuid4().hex[:8])
    async with msgkit.connect(url, instruments=instruments) as broker:
        chore, orchestrated = Ledger(quiet=quiet), Ledger(quiet=quiet)
        if not quiet:
            print(f"msgkit order flow on {broker.url}\n\n-- choreography --")
        await choreography.run(broker, topics, chore, orders("order"))
        if not quiet:
            print("\n-- saga (3 items in stock, 2 per order: the second saga compensates) --")
        outcomes = await saga.run(broker, topics, orchestrated, orders("saga", items=2)[:2], stock=3)
    if not quiet:
        print(f"\nsummary: {len(chore.charged)} orders paid, {len(chore.reserved)} reserved, "
              f"{len(chore.confirmations)} confirmed, {len(chore.dead_lettered)} dead-lettered and "
              f"replayed; sagas: {sum(o == 'completed' for o in outcomes.values())} completed, "
              f"{sum(o == 'compensated' for o in outcomes.values())} compensated "
              f"({len(orchestrated.refunded)} refund, {len(orchestrated.cancelled)} cancellation)")
    return chore, orchestrated, outcomes
