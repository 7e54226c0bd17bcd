"""An HTTP service that publishes, and consumes in the same process:

    MSGKIT_URL=kafka://localhost:9092 uvicorn examples.shop_api:app --port 8000
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"order_id": "o-1", "customer": "ada", "email": "ada@example.com", "amount": 10}'

`POST /orders` returns once the broker confirmed the event (at-least-once); the receipts
subscriber, started and stopped with the app, appends each order to `SHOP_RECEIPTS`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

from fastapi import Depends, FastAPI

import msgkit
from examples.orders.events import OrderPlaced
from msgkit.fastapi import lifespan, producer

TOPIC = os.environ.get("SHOP_TOPIC", "shop.orders")
RECEIPTS = os.environ.get("SHOP_RECEIPTS", "receipts.log")

broker = msgkit.connect()
broker.publishes(TOPIC, OrderPlaced, summary="POST /orders, once the broker confirmed it")
app = FastAPI(lifespan=lifespan(broker))
Send = Annotated[msgkit.Producer, Depends(producer(broker, required_groups=("receipts",)))]


@app.post("/orders")
async def place_order(order: OrderPlaced, send: Send) -> dict[str, str]:
    message_id = await send.send(TOPIC, order, key=order.order_id)
    return {"message_id": message_id}


@broker.subscriber(TOPIC, group="receipts")
async def receipt(order: OrderPlaced) -> None:
    await asyncio.to_thread(_append, f"{order.order_id} {order.email}\n")


def _append(line: str) -> None:
    with open(RECEIPTS, "a") as out:
        out.write(line)
