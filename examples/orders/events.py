"""The events services exchange. Each carries an id that doubles as its idempotency key."""

from __future__ import annotations

from pydantic import BaseModel

ORDERS = "orders.placed"
PAYMENTS = "payments.processed"


class OrderPlaced(BaseModel):
    order_id: str
    customer: str
    email: str
    amount: float


class PaymentProcessed(BaseModel):
    order_id: str
    amount: float
