import asyncio
import os
import sys

import msgkit

TOPIC = os.environ.get("ORDERS_TOPIC", "orders")


async def main(order_id: str) -> None:
    async with msgkit.connect() as broker:             # MSGKIT_URL, else memory://
        # the "payments" group keeps the message even if its service is not running yet
        producer = broker.producer(required_groups=("payments",))
        message_id = await producer.send(TOPIC, {"order_id": order_id, "amount": 9.5},
                                         key=order_id)
        print("sent", order_id, "as message", message_id)


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "o-2"))
