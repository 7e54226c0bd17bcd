"""Choreography: no one is in charge; each service reacts to the event before it.

    order service --OrderPlaced--> payments --PaymentProcessed--> inventory --StockReserved--> emails
     (outbox + relay)         \\--> receipts (emails group: "we got your order")

The order service writes each order and its OrderPlaced event in one database transaction
(the outbox, `order_service.py`); a relay in the same process publishes the event once that
transaction committed. An order refused after its row was written rolls back, event
included: nobody ever hears of it. The receipt mailer fails for one address: the message is
retried with delays, then dead-lettered, then replayed to the receipts group once the mail
server is fixed. Nothing is lost meanwhile, and no other group sees the replay. Payments and
inventory deduplicate by idempotency key, so a repeated event never charges or reserves twice.
"""

from __future__ import annotations

import asyncio

import msgkit
from examples.orders.events import OrderPlaced, PaymentProcessed, StockReserved, Topics
from examples.orders.ledger import Ledger
from examples.orders.order_service import InvalidOrder, OrderService
from msgkit.dedup import Dedup
from msgkit.dlq import DeadLetterQueue
from msgkit.handler import Handler
from msgkit.outbox import Relay
from msgkit.testing import eventually

RETRIES = msgkit.FailurePolicy(max_attempts=3, delays=(0.2, 0.5))


class MailServerDown(Exception):
    """The mail server refused the message: worth retrying later."""


def subscribe(broker: msgkit.Broker, topics: Topics, ledger: Ledger, broken: set[str],
              dedup: Dedup) -> list[tuple[msgkit.Consumer, Handler]]:
    """Registers each service's handlers on `broker` and declares what they publish (the
    flow's contract: `msgkit asyncapi examples.orders.contract:broker`); returns them."""
    first = len(broker.subscribers)
    broker.publishes(topics.orders, OrderPlaced,
                     summary="The order service, through its outbox, once the order committed")

    # Payments and inventory must not act twice on a repeated event: dedup by idempotency key.
    @broker.subscriber(topics.orders, group="payments", concurrency=4, failure=RETRIES,
                       dedup=dedup)
    @broker.publishes(topics.payments, PaymentProcessed)
    async def charge(order: OrderPlaced, ctx: msgkit.Context) -> None:
        """Payments: charges each order once."""
        ledger.charged[order.order_id] = order.amount
        ledger.log("payments", f"charged {order.customer} {order.amount:.2f} for {order.order_id}")
        await ctx.send(topics.payments, PaymentProcessed(**order.model_dump()),
                       key=order.order_id, idempotency_key=f"paid-{order.order_id}")

    @broker.subscriber(topics.orders, group="receipts", concurrency=4, failure=RETRIES)
    async def receipt(order: OrderPlaced, ctx: msgkit.Context) -> None:
        """Emails: tells the customer their order arrived (retried, then dead-lettered)."""
        if order.email in broken:
            ledger.log("emails", f"mail server refused {order.email} "
                                 f"(attempt {ctx.message.attempt})")
            raise MailServerDown(order.email)
        ledger.receipts.add(order.order_id)
        ledger.log("emails", f"receipt for {order.order_id} sent to {order.email}")

    @broker.publishes(topics.stock, StockReserved)
    async def reserve(paid: PaymentProcessed, ctx: msgkit.Context) -> None:
        """Inventory: reserves the items of each paid order once."""
        ledger.reserved.add(paid.order_id)
        ledger.log("inventory", f"reserved {paid.items} item(s) for {paid.order_id}")
        await ctx.send(topics.stock, StockReserved(order_id=paid.order_id, email=paid.email),
                       key=paid.order_id, idempotency_key=f"reserved-{paid.order_id}")

    for _ in range(2):  # two members of one group compete for PaymentProcessed events
        broker.subscriber(topics.payments, group="inventory", concurrency=2, dedup=dedup)(reserve)

    @broker.subscriber(topics.stock, group="confirmations")
    async def confirm(reserved: StockReserved) -> None:
        """Emails: confirms each order whose items are reserved."""
        ledger.confirmations.add(reserved.order_id)
        ledger.log("emails", f"confirmation for {reserved.order_id} sent to {reserved.email}")

    return list(broker.subscribers[first:])


async def run(broker: msgkit.Broker, topics: Topics, ledger: Ledger, orders: list[OrderPlaced],
              service: OrderService) -> None:
    """Places `orders` through `service` (not yet open; it publishes to `topics.orders`) and
    follows them through every service."""
    broken = {o.email for o in orders if "broken" in o.email}
    dedup = Dedup("memory://")
    consumers = subscribe(broker, topics, ledger, broken, dedup)
    await asyncio.gather(*(consumer.start(handler) for consumer, handler in consumers))

    # The relay publishes what the order service committed; on RabbitMQ only once the
    # payments and receipts queues exist, so no order is published before they can keep it.
    async with service, Relay(service.db, broker, table=service.outbox_table,
                              required_groups=("payments", "receipts")) as relay:
        placed = await place(service, ledger, orders)
        await eventually(lambda: ledger.confirmations == placed, timeout=60,
                         message="every order paid, reserved and confirmed")
        await eventually(lambda: relay.published == len(placed), timeout=10,
                         message="the relay counted every order it published")
    ledger.log("relay", f"published {relay.published} OrderPlaced events, one per committed order")

    def refusals() -> int:
        return sum("refused" in line for line in ledger.lines)

    await eventually(lambda: refusals() == RETRIES.deliveries, timeout=60,
                     message="the broken receipt tried every time")
    dlq = DeadLetterQueue(broker, topics.orders, "receipts", idle=1.0)
    dead: list[msgkit.Message] = []
    while not dead:  # the dead-letter copy lands right after the last refusal
        dead = await dlq.messages()
    [poisoned] = dead
    ledger.dead_lettered.append(str(poisoned.key or poisoned.id))
    reason = (poisoned.header(msgkit.headers.DLQ_EXCEPTION_TYPE) or "?").rsplit(".")[-1]
    attempts = poisoned.header(msgkit.headers.DLQ_ATTEMPTS)
    ledger.log("dlq", f"{poisoned.key!s}: {reason} after {attempts} attempts")

    broken.clear()  # the mail server is back: replay the dead letter to the receipts group only
    moved = await dlq.replay()
    ledger.log("dlq", f"replayed {moved} message(s) to the receipts group")
    await eventually(lambda: ledger.receipts == placed, timeout=60,
                     message="every receipt sent")
    for consumer, _ in consumers:
        await consumer.stop()
    await dedup.close()


async def place(service: OrderService, ledger: Ledger, orders: list[OrderPlaced]) -> set[str]:
    """Places each order; returns the ids of those committed (row and event)."""
    placed: set[str] = set()
    for order in orders:
        try:
            await service.place(order)
        except InvalidOrder as exc:
            ledger.rejected.append(order.order_id)
            ledger.log("orders", f"rejected {order.order_id} ({exc}): its row and OrderPlaced "
                                 "rolled back, nothing to publish")
            continue
        placed.add(order.order_id)
        ledger.log("orders", f"placed {order.order_id} for {order.customer}: row and OrderPlaced "
                             "in one transaction")
    return placed
