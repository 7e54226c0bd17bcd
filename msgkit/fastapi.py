"""FastAPI integration (`pip install 'msgkit[fastapi]'`): the broker and its
`@broker.subscriber` handlers start and stop with the app, and request handlers get a
producer.

    broker = msgkit.connect()                      # MSGKIT_URL picks the broker
    app = FastAPI(lifespan=lifespan(broker))

    @app.post("/orders")
    async def place(order: Order, send: Annotated[msgkit.Producer, Depends(producer(broker))]):
        return {"id": await send.send("orders", order, key=order.id)}

On shutdown the consumers drain (handlers running finish and are acknowledged) and the
broker closes; the producer's unconfirmed sends are flushed first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from msgkit.broker import Broker
from msgkit.guarantee import Guarantee
from msgkit.producer import Producer


def lifespan(broker: Broker) -> Callable[[Any], Any]:
    """A FastAPI `lifespan`: starts `broker` and its subscribers, closes them at shutdown."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        await broker.start()
        try:
            for consumer, handler in broker._subscribers:
                await consumer.start(handler)
            yield
        finally:
            await broker.close()

    return run


def producer(broker: Broker, *, guarantee: Guarantee | None = None,
             **options: Any) -> Callable[[], Awaitable[Producer]]:
    """A FastAPI dependency giving request handlers one shared producer of `broker`."""
    made: list[Producer] = []

    async def shared() -> Producer:  # async: FastAPI runs it on the loop, not in threads
        if not made:
            made.append(broker.producer(guarantee=guarantee, **options))
        return made[0]

    return shared
