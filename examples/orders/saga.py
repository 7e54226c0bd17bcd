"""Orchestration: a saga drives payment, then inventory; when a step fails, it runs the
compensations of the finished steps in reverse order (refund, then cancel the order).

    orchestrator --charge--> payment service --reply--> orchestrator
                 --reserve-> inventory       --reply--> orchestrator
    on a failed reply:  --refund--> payment, --cancel--> order service

The saga's state is kept per order id (the correlation id), so replies can arrive in any
order and from any member of the orchestrator group.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgkit
from examples.orders.events import Command, OrderPlaced, Reply, Topics
from examples.orders.ledger import Ledger
from msgkit.handler import Handler
from msgkit.testing import eventually


@dataclass(frozen=True)
class Step:
    participant: str  # which command topic
    action: str
    compensation: str


STEPS = (
    Step("payment", "charge", compensation="refund"),
    Step("inventory", "reserve", compensation="release"),
)
CANCEL = Step("order", "noop", compensation="cancel")  # the order itself is undone last


@dataclass
class SagaState:
    order: OrderPlaced
    done: list[Step] = field(default_factory=list)
    compensating: list[Step] = field(default_factory=list)
    outcome: str = "running"


class Orchestrator:
    def __init__(self, topics: Topics, ledger: Ledger, producer: msgkit.Producer) -> None:
        self.topics, self.ledger, self.producer = topics, ledger, producer
        self.sagas: dict[str, SagaState] = {}

    async def begin(self, order: OrderPlaced) -> None:
        self.sagas[order.order_id] = SagaState(order)
        self.ledger.log("saga", f"{order.order_id}: started")
        await self._send(STEPS[0], STEPS[0].action, order)

    async def on_reply(self, reply: Reply) -> None:
        saga = self.sagas[reply.order_id]
        if saga.compensating:
            step = saga.compensating.pop(0)
            self.ledger.log("saga", f"{reply.order_id}: {step.compensation} done")
            await self._compensate_next(saga)
            return
        step = STEPS[len(saga.done)]
        if not reply.ok:
            self.ledger.log("saga", f"{reply.order_id}: {step.action} failed ({reply.reason}); "
                                    "compensating")
            saga.compensating = [*reversed(saga.done), CANCEL]
            await self._compensate_next(saga)
            return
        saga.done.append(step)
        if len(saga.done) == len(STEPS):
            saga.outcome = "completed"
            self.ledger.log("saga", f"{reply.order_id}: completed")
            return
        await self._send(STEPS[len(saga.done)], STEPS[len(saga.done)].action, saga.order)

    async def _compensate_next(self, saga: SagaState) -> None:
        if not saga.compensating:
            saga.outcome = "compensated"
            self.ledger.log("saga", f"{saga.order.order_id}: compensated")
            return
        step = saga.compensating[0]
        await self._send(step, step.compensation, saga.order)

    async def _send(self, step: Step, name: str, order: OrderPlaced) -> None:
        command = Command(order_id=order.order_id, name=name, amount=order.amount, items=order.items)
        await self.producer.send(getattr(self.topics, f"saga_{step.participant}"), command,
                                 key=order.order_id, idempotency_key=f"{order.order_id}-{name}")


def subscribe(broker: msgkit.Broker, topics: Topics, ledger: Ledger,
              orchestrator: Orchestrator, shelf: dict[str, int]
              ) -> list[tuple[msgkit.Consumer, Handler]]:
    """Registers the participants and the orchestrator on `broker` and declares what they
    publish (the flow's contract); returns them."""
    first = len(broker.subscribers)
    producer = orchestrator.producer
    broker.publishes(topics.saga_payment, Command, summary="The orchestrator starts a saga")

    async def reply(order_id: str, name: str, ok: bool = True, reason: str = "") -> None:
        await producer.send(topics.saga_replies, Reply(order_id=order_id, name=name, ok=ok,
                                                       reason=reason),
                            key=order_id, idempotency_key=f"{order_id}-{name}-reply")

    @broker.subscriber(topics.saga_payment, group="payments")
    @broker.publishes(topics.saga_replies, Reply)
    async def payment(cmd: Command) -> None:
        """Payments: charges or refunds, and replies."""
        if cmd.name == "charge":
            ledger.charged[cmd.order_id] = cmd.amount
            ledger.log("payments", f"saga charge {cmd.amount:.2f} for {cmd.order_id}")
        else:
            ledger.refunded.add(cmd.order_id)
            ledger.log("payments", f"saga refund {cmd.amount:.2f} for {cmd.order_id}")
        await reply(cmd.order_id, cmd.name)

    @broker.subscriber(topics.saga_inventory, group="inventory")
    @broker.publishes(topics.saga_replies, Reply)
    async def inventory(cmd: Command) -> None:
        """Inventory: reserves (if the shelf has the items) or releases, and replies."""
        if cmd.name == "reserve" and shelf["items"] < cmd.items:
            ledger.log("inventory", f"saga: out of stock for {cmd.order_id}")
            await reply(cmd.order_id, cmd.name, ok=False, reason="out of stock")
            return
        shelf["items"] -= cmd.items if cmd.name == "reserve" else -cmd.items
        ledger.reserved.add(cmd.order_id)
        ledger.log("inventory", f"saga reserved {cmd.items} item(s) for {cmd.order_id}")
        await reply(cmd.order_id, cmd.name)

    @broker.subscriber(topics.saga_order, group="orders")
    @broker.publishes(topics.saga_replies, Reply)
    async def order_service(cmd: Command) -> None:
        """The order service: cancels the order (the last compensation), and replies."""
        ledger.cancelled.add(cmd.order_id)
        ledger.log("orders", f"saga cancelled {cmd.order_id}")
        await reply(cmd.order_id, cmd.name)

    on_reply = orchestrator.on_reply
    for participant in ("payment", "inventory", "order"):
        broker.publishes(getattr(topics, f"saga_{participant}"), Command)(on_reply)
    broker.subscriber(topics.saga_replies, group="orchestrator")(on_reply)
    return list(broker.subscribers[first:])


async def run(broker: msgkit.Broker, topics: Topics, ledger: Ledger,
              orders: list[OrderPlaced], stock: int) -> dict[str, str]:
    """Runs one saga per order with `stock` items on the shelf; returns each outcome."""
    orchestrator = Orchestrator(topics, ledger, broker.producer())
    consumers = subscribe(broker, topics, ledger, orchestrator, {"items": stock})
    await asyncio.gather(*(consumer.start(handler) for consumer, handler in consumers))
    for order in orders:  # one at a time: the shelf decides which saga fails
        await orchestrator.begin(order)
        saga = orchestrator.sagas[order.order_id]
        await eventually(lambda saga=saga: saga.outcome != "running", timeout=60,  # type: ignore[misc]
                         message=f"saga of {order.order_id} finished")
    for consumer, _ in consumers:
        await consumer.stop()
    return {order_id: saga.outcome for order_id, saga in orchestrator.sagas.items()}
