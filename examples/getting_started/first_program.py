import asyncio
import os

from pydantic import BaseModel

import msgkit

TOPIC = os.environ.get("ORDERS_TOPIC", "orders")


class OrderPlaced(BaseModel):
    order_id: str
    amount: float


charged = asyncio.Event()


async def charge(order: OrderPlaced) -> None:          # decoded from JSON for you
    print("charging", order.order_id)
    charged.set()


async def main() -> None:
    async with msgkit.connect() as broker:             # MSGKIT_URL, else memory://
        consumer = broker.consumer(TOPIC, group="payments", concurrency=8)
        await consumer.start(charge)                   # returns once subscribed
        producer = broker.producer()
        await producer.send(TOPIC, OrderPlaced(order_id="o-1", amount=9.5),
                            key="o-1", idempotency_key="o-1")
        await charged.wait()
        await consumer.stop()                          # finishes and acks in-flight messages


asyncio.run(main())
