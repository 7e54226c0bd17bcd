"""Handlers of the services. Each is a plain async function; msgkit decodes the payload."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgkit
from examples.orders.events import OrderPlaced, PaymentProcessed


@dataclass
class Ledger:
    """What the services did, in order, so the demo can print and the tests can check it."""

    lines: list[str] = field(default_factory=list)
    payments: dict[str, float] = field(default_factory=dict)
    seen_keys: set[str] = field(default_factory=set)
    reserved: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)

    def log(self, service: str, text: str) -> None:
        self.lines.append(f"{service:<10} {text}")
        print(self.lines[-1], flush=True)


class EmailDown(Exception):
    """The mail server refused: a failure worth retrying."""


def payment_service(ledger: Ledger, payments_topic: str) -> msgkit.handler.Handler:
    async def charge(order: OrderPlaced, ctx: msgkit.Context) -> None:
        key = ctx.message.idempotency_key or ctx.message.id
        if key in ledger.seen_keys:  # a replayed or repeated event must not charge twice
            ledger.log("payment", f"skipped {order.order_id}: already charged (key {key})")
            return
        ledger.seen_keys.add(key)
        ledger.payments[order.order_id] = order.amount
        ledger.log("payment", f"charged {order.customer} {order.amount:.2f} for {order.order_id}")
        await ctx.send(payments_topic, PaymentProcessed(order_id=order.order_id, amount=order.amount),
                       key=order.order_id, idempotency_key=f"paid-{order.order_id}")
    return charge


def inventory_service(ledger: Ledger) -> msgkit.handler.Handler:
    async def reserve(payment: PaymentProcessed) -> None:
        ledger.reserved.add(payment.order_id)
        ledger.log("inventory", f"reserved stock for paid order {payment.order_id}")
    return reserve


def email_service(ledger: Ledger, broken_addresses: set[str]) -> msgkit.handler.Handler:
    async def send_confirmation(msg: msgkit.Message) -> None:
        order = msg.decode(OrderPlaced)
        if order.email in broken_addresses:
            ledger.log("email", f"mail server refused {order.email} (attempt {msg.attempt})")
            raise EmailDown(order.email)
        ledger.emails.add(order.order_id)
        ledger.log("email", f"sent confirmation for {order.order_id} to {order.email}")
    return send_confirmation
