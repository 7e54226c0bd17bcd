"""The messages the services exchange. Every event's id doubles as its idempotency key."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Topics:
    """Topic names, with a suffix so runs on a persistent broker never see old messages
    (none: the names a deployed service would use)."""

    suffix: str = ""

    def __getattr__(self, name: str) -> str:
        return f"shop.{name}.{self.suffix}" if self.suffix else f"shop.{name}"

    # choreography: each service reacts to the previous one's event
    #   orders -> payments -> stock -> (emails)
    # saga: the orchestrator sends commands and waits for replies
    #   saga.commands.payment / saga.commands.inventory / saga.commands.order -> saga.replies


class OrderPlaced(BaseModel):
    order_id: str
    customer: str
    email: str
    amount: float
    items: int = 1


class PaymentProcessed(BaseModel):
    order_id: str
    email: str
    amount: float
    items: int


class StockReserved(BaseModel):
    order_id: str
    email: str


class Command(BaseModel):
    """A saga step or compensation sent to one participant; `name` says which."""

    order_id: str
    name: str
    amount: float = 0.0
    items: int = 1


class Reply(BaseModel):
    order_id: str
    name: str
    ok: bool
    reason: str = ""
