import asyncio
import os
import signal
from typing import Any

import pytest
from pydantic import BaseModel

import msgkit
from msgkit.testing import Collector, eventually


class Order(BaseModel):
    id: int


async def test_typed_handler_receives_the_decoded_model(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    orders: list[Order] = []

    async def handle(order: Order) -> None:
        orders.append(order)

    await memory_broker.consumer(unique_name, group="g").start(handle)
    await memory_broker.producer().send(unique_name, Order(id=3))
    await eventually(lambda: orders == [Order(id=3)])


async def test_handler_with_context_can_send_onwards(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    async def forward(order: Order, ctx: msgkit.Context) -> None:
        assert ctx.group == "g" and ctx.message.topic == unique_name
        await ctx.send(f"{unique_name}-out", {"forwarded": order.id})

    out = Collector()
    await memory_broker.consumer(unique_name, group="g").start(forward)
    await memory_broker.consumer(f"{unique_name}-out", group="g").start(out)
    await memory_broker.producer().send(unique_name, Order(id=5))
    [msg] = await out.wait_for(1)
    assert msg.json() == {"forwarded": 5}


async def test_async_callable_objects_are_handlers(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    got = Collector()  # an object with `async def __call__`
    await memory_broker.consumer(unique_name, group="g").start(got)
    await memory_broker.producer().send(unique_name, b"x")
    await got.wait_for(1)


async def test_handlers_annotated_any_or_object_get_the_message_undecoded(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    seen: list[object] = []

    async def one(msg: Any) -> None:
        seen.append(msg)

    async def many(msgs: list[object]) -> None:
        seen.extend(msgs)

    class Counting:  # a callable object: its __call__ annotations count
        async def __call__(self, msg: object) -> None:
            seen.append(msg)

    await memory_broker.consumer(unique_name, group="a").start(one)
    await memory_broker.consumer(unique_name, group="b", batch=10).start(many)
    await memory_broker.consumer(unique_name, group="c").start(Counting())
    await memory_broker.producer().send(unique_name, b"not json")
    await eventually(lambda: len(seen) == 3)
    assert all(isinstance(m, msgkit.Message) and m.value == b"not json" for m in seen)


async def test_callable_objects_keep_their_annotations(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    orders: list[Order] = []

    class One:
        async def __call__(self, order: Order) -> None:
            orders.append(order)

    class Many:
        async def __call__(self, batch: list[Order]) -> None:
            orders.extend(batch)

    await memory_broker.consumer(unique_name, group="a").start(One())
    await memory_broker.consumer(unique_name, group="b", batch=10).start(Many())
    await memory_broker.producer().send(unique_name, Order(id=1))
    await eventually(lambda: orders == [Order(id=1), Order(id=1)])


@pytest.mark.parametrize("handler", [
    lambda msg: None,
    print,
])
async def test_sync_handlers_are_rejected(memory_broker: msgkit.Broker, handler: Any) -> None:
    with pytest.raises(msgkit.HandlerError, match="async def"):
        await memory_broker.consumer("t", group="g").start(handler)


async def test_handlers_with_too_many_parameters_are_rejected(memory_broker: msgkit.Broker) -> None:
    async def three(a: msgkit.Message, b: msgkit.Context, c: int) -> None: ...

    with pytest.raises(msgkit.HandlerError, match="positional parameters"):
        await memory_broker.consumer("t", group="g").start(three)


async def test_a_consumer_runs_one_handler(memory_broker: msgkit.Broker) -> None:
    consumer = memory_broker.consumer("t", group="g")
    await consumer.start(Collector())
    with pytest.raises(msgkit.ConfigurationError, match="already running"):
        await consumer.start(Collector())
    await consumer.stop()
    await consumer.stop()  # idempotent


async def test_decorated_subscribers_run_under_serve(unique_name: str) -> None:
    broker = msgkit.connect(f"memory://{unique_name}")
    orders: list[Order] = []

    @broker.subscriber("orders", group="payments", concurrency=2)
    async def charge(order: Order) -> None:
        orders.append(order)

    serving = asyncio.create_task(broker.serve())
    await eventually(lambda: broker.consumer_count == 1)
    await broker.producer().send("orders", Order(id=1))
    await eventually(lambda: orders == [Order(id=1)])
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    assert broker.closed and broker.consumer_count == 0, "serve() closes the broker it ran"


async def test_serve_stops_gracefully_on_sigterm(unique_name: str) -> None:
    broker = msgkit.connect(f"memory://{unique_name}")
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    @broker.subscriber("orders", group="payments")
    async def charge(order: Order) -> None:
        started.set()
        await release.wait()
        finished.append(order.id)

    serving = asyncio.create_task(broker.serve())
    await eventually(lambda: broker.consumer_count == 1)
    await broker.producer().send("orders", Order(id=7))
    await asyncio.wait_for(started.wait(), 10)
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "serve() took SIGTERM"
    os.kill(os.getpid(), signal.SIGTERM)  # as `docker stop` / Kubernetes would
    for _ in range(20):
        await asyncio.sleep(0)
    assert not serving.done(), "serve() returned while a handler was still running"
    release.set()  # the running handler finishes before serve() returns
    await asyncio.wait_for(serving, 10)
    assert finished == [7] and broker.closed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the default handling is back"


async def test_a_message_annotation_that_cannot_be_resolved_fails_at_start(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    async def handle(order: "LocalOrder") -> None:  # type: ignore[name-defined]  # noqa: F821
        raise AssertionError("never called")

    with pytest.raises(msgkit.HandlerError, match=r"'LocalOrder' of parameter 'order' cannot be resolved"):
        await memory_broker.consumer(unique_name, group="g").start(handle)


async def test_an_unresolvable_context_annotation_is_fine(
    memory_broker: msgkit.Broker, unique_name: str
) -> None:
    got: list[Order] = []

    async def handle(order: Order, ctx: "ContextOnlyForTypeCheckers") -> None:  # type: ignore[name-defined]  # noqa: F821
        got.append(order)

    await memory_broker.consumer(unique_name, group="g").start(handle)
    await memory_broker.producer().send(unique_name, Order(id=7))
    await eventually(lambda: got == [Order(id=7)])
