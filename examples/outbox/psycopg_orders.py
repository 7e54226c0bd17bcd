"""The transactional outbox with psycopg: the order row and its OrderPlaced event commit in
one transaction, a relay in the same process publishes the event once it committed, and a
consumer with `dedup=` handles it once even if a relay crash sent it twice.

    OUTBOX_DB=postgresql://localhost/shop MSGKIT_URL=kafka://localhost:9092 \\
        python examples/outbox/psycopg_orders.py o-1
"""

import asyncio
import os
import sys
from typing import Any

import psycopg

import msgkit
from msgkit.dedup import Dedup
from msgkit.outbox import Outbox, Relay

DB = os.environ.get("OUTBOX_DB", "postgresql://localhost/postgres")
TOPIC = os.environ.get("ORDERS_TOPIC", "orders")
outbox = Outbox()  # table msgkit_outbox, created on first use


# --8<-- [start:place_order]
async def place_order(conn: psycopg.AsyncConnection[Any], order_id: str, amount: float) -> None:
    async with conn.transaction():  # the order and its event commit together, or neither does
        await conn.execute("INSERT INTO orders (id, amount) VALUES (%s, %s)", (order_id, amount))
        await outbox.send(conn, TOPIC, {"order_id": order_id, "amount": amount}, key=order_id)
# --8<-- [end:place_order]


async def main(order_id: str) -> None:
    shipped = asyncio.Event()

    async def ship(order: dict[str, Any]) -> None:
        print("shipping", order["order_id"])
        shipped.set()

    async with msgkit.connect() as broker, await psycopg.AsyncConnection.connect(DB) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT, amount FLOAT)")
        await conn.commit()
        consumer = broker.consumer(TOPIC, group="shipping", dedup=Dedup(DB))
        await consumer.start(ship)
        # --8<-- [start:relay]
        async with Relay(DB, broker, required_groups=["shipping"]):  # publishes what committed
            await place_order(conn, order_id, 9.5)
            await shipped.wait()
        # --8<-- [end:relay]
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "o-1"))
