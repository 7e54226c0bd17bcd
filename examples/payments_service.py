"""A payments service as a worker process:

    MSGKIT_URL=kafka://localhost:9092 msgkit run examples.payments_service:broker --port 8080

It charges each order it receives by appending a line to its ledger file (`PAYMENTS_LEDGER`,
default `payments.ledger`). `msgkit run` answers `/healthz`, `/readyz` and `/metrics` on the
port, and on SIGTERM lets the charges in progress finish before it exits.
"""

from __future__ import annotations

import asyncio
import os

import msgkit
from msgkit.metrics import Metrics

TOPIC = os.environ.get("PAYMENTS_TOPIC", "orders")
LEDGER = os.environ.get("PAYMENTS_LEDGER", "payments.ledger")
WORK_SECONDS = float(os.environ.get("PAYMENTS_WORK_SECONDS", "0"))
"""How long one charge takes (a call to the payment provider)."""

broker = msgkit.connect(instruments=[Metrics()])


@broker.subscriber(TOPIC, group="payments", concurrency=4)
async def charge(msg: msgkit.Message) -> None:
    await asyncio.sleep(WORK_SECONDS)
    await asyncio.to_thread(_record, msg.id)


def _record(order_id: str) -> None:
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{order_id}\n")
