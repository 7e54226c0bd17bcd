"""The order flow's contract: every topic, who consumes it, what it carries.

    msgkit asyncapi examples.orders.contract:broker -o examples/orders/asyncapi.yaml

The same `subscribe` functions that wire the running flow declare it here, on a broker that
never connects, with the topic names a deployed shop would use (`shop.<name>`).
"""

from __future__ import annotations

import msgkit
from examples.orders import choreography, saga
from examples.orders.events import Topics
from examples.orders.ledger import Ledger
from msgkit.dedup import Dedup


def broker() -> msgkit.Broker:
    shop = msgkit.connect()
    topics, ledger = Topics(), Ledger(quiet=True)
    choreography.subscribe(shop, topics, ledger, broken=set(), dedup=Dedup("memory://"))
    saga.subscribe(shop, topics, ledger, saga.Orchestrator(topics, ledger, shop.producer()),
                   shelf={})
    return shop
