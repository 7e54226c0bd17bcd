"""The order flow: an order service commits orders with their events (an outbox), a relay
publishes them; payment, inventory and email react.

Start reading at `flow.py`; `events.py` holds the messages, `order_service.py` the outbox.
"""
