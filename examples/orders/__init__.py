"""The order flow: an order service publishes; payment, inventory and email react.

Start reading at `flow.py`; `events.py` holds the messages, `services.py` the handlers.
"""
