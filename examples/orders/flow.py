"""Runs the whole order flow on the broker in `MSGKIT_URL` (default: embedded `memory://`).

    OrderPlaced --> payments  --PaymentProcessed--> inventory
               \\-> emails (fails for one address: retried, dead-lettered, then replayed)
"""

from __future__ import annotations

import uuid

import msgkit
from examples.orders.events import ORDERS, PAYMENTS, OrderPlaced
from examples.orders.services import Ledger, email_service, inventory_service, payment_service
from msgkit.consumer import DLQ_GROUP
from msgkit.testing import Collector, eventually

CUSTOMERS = [("ada", "ada@example.com"), ("grace", "grace@example.com"),
             ("alan", "alan@broken.example"), ("edsger", "edsger@example.com")]
RETRIES = msgkit.FailurePolicy(max_attempts=3, delays=(0.2, 0.5))


async def run(url: str | None = None, *, suffix: str | None = None) -> Ledger:
    """Place four orders and wait until every service is done; returns what happened."""
    suffix = suffix or uuid.uuid4().hex[:6]  # fresh topics per run on persistent brokers
    orders, payments = f"{ORDERS}.{suffix}", f"{PAYMENTS}.{suffix}"
    ledger = Ledger()
    broken = {email for _, email in CUSTOMERS if "broken" in email}
    async with msgkit.connect(url) as broker:
        print(f"msgkit order flow on {broker.url}\n")
        for group, handler, topic in (
            ("payments", payment_service(ledger, payments), orders),
            ("emails", email_service(ledger, broken), orders),
            ("inventory", inventory_service(ledger), payments),
        ):
            await broker.consumer(topic, group=group, concurrency=4, failure=RETRIES).start(handler)
        dead = Collector()
        dlq = msgkit.dead_letter_topic(orders, "emails")
        await broker.consumer(dlq, group=DLQ_GROUP, start="earliest").start(dead)

        producer = broker.producer(required_groups=("payments", "emails"))
        for n, (customer, email) in enumerate(CUSTOMERS, 1):
            order = OrderPlaced(order_id=f"order-{n}", customer=customer, email=email,
                                amount=10.0 * n)
            await producer.send(orders, order, key=order.order_id, idempotency_key=order.order_id)
            ledger.log("orders", f"placed {order.order_id} for {customer}; returned at once")

        await eventually(lambda: len(ledger.reserved) == len(CUSTOMERS), timeout=60,
                         message="every order paid and reserved")
        [poisoned] = await dead.wait_for(1, timeout=60)
        ledger.log("dlq", f"{poisoned.headers[msgkit.headers.DLQ_EXCEPTION_TYPE]} after "
                          f"{poisoned.headers[msgkit.headers.DLQ_ATTEMPTS]} attempts: {poisoned.key}")

        broken.clear()  # the mail server is fixed: replay the dead letter to the email group
        await producer.publish_raw([_replay(poisoned, orders)])
        ledger.log("dlq", f"replayed {poisoned.key} to {orders}; fixed mail server")
        await eventually(lambda: len(ledger.emails) == len(CUSTOMERS), timeout=60,
                         message="every confirmation email sent")
    print(f"\nsummary: {len(CUSTOMERS)} orders, {len(ledger.payments)} payments, "
          f"{len(ledger.reserved)} reservations, {len(ledger.emails)} emails, "
          f"1 dead-lettered and replayed")
    return ledger


def _replay(dead: msgkit.Message, topic: str) -> msgkit.message.Outgoing:
    """A copy of a dead letter for the original topic, without the failure headers.

    Every group of the topic gets it; the payment service skips it by its idempotency key.
    """
    from msgkit import headers as h
    from msgkit.message import Outgoing
    from msgkit.producer import new_message_id

    headers = {k: v for k, v in dead.headers.items()
               if not k.startswith(h.DLQ_PREFIX) and k != h.FIRST_FAILURE_AT}
    return Outgoing(topic, dead.value, dead.key, headers, new_message_id(), dead.timestamp)
