"""A Flask service in plain synchronous code: a view writes the order and its event through
SQLAlchemy in one transaction, msgkit.sync's relay publishes the event once committed, and
another view sends straight through the blocking producer.

    ORDERS_DB=sqlite:///orders.db MSGKIT_URL=amqp://guest:guest@localhost/ \\
        flask --app examples/outbox/flask_orders.py run
"""

import os
from typing import Any

from flask import Flask, request
from sqlalchemy import Column, Float, MetaData, String, Table, create_engine, insert
from sqlalchemy.orm import Session

import msgkit.sync
from msgkit.outbox import Outbox

TOPIC = os.environ.get("ORDERS_TOPIC", "orders")
# --8<-- [start:app]
engine = create_engine(os.environ.get("ORDERS_DB", "sqlite:///orders.db"))
orders = Table("orders", MetaData(), Column("id", String), Column("amount", Float))
orders.metadata.create_all(engine)
outbox = Outbox()
broker = msgkit.sync.connect()  # MSGKIT_URL; msgkit's async core runs on a thread of its own
broker.relay(engine)            # publishes what the views' transactions committed
events = broker.producer()      # one producer, shared by every request thread
app = Flask(__name__)


@app.post("/orders")
def place_order() -> tuple[dict[str, Any], int]:
    order = request.get_json()
    with Session(engine) as session, session.begin():  # the order and its event, or neither
        session.execute(insert(orders).values(id=order["order_id"], amount=order["amount"]))
        outbox.send_sync(session, TOPIC, order, key=order["order_id"])
    return {"accepted": order["order_id"]}, 202


@app.post("/orders/<order_id>/reminders")
def remind(order_id: str) -> dict[str, Any]:
    # nothing to commit with it: send straight, blocking until the broker confirmed
    message_id = events.send(f"{TOPIC}.reminders", {"order_id": order_id}, key=order_id)
    return {"message_id": message_id}
# --8<-- [end:app]
