import asyncio
import logging
import os

from pydantic import BaseModel

import msgkit

TOPIC = os.environ.get("ORDERS_TOPIC", "orders")
logging.basicConfig(level=logging.INFO)               # msgkit logs "worker ready" once subscribed


class OrderPlaced(BaseModel):
    order_id: str
    amount: float


broker = msgkit.connect()                              # MSGKIT_URL, else memory://


@broker.subscriber(TOPIC, group="payments", concurrency=8)
async def charge(order: OrderPlaced) -> None:
    print("charging", order.order_id, flush=True)


asyncio.run(broker.serve())                            # until Ctrl-C or SIGTERM
