"""The transactional outbox: a message written in the same database transaction as the
business change it announces, and a relay that publishes it once that transaction committed.

    outbox = Outbox()
    async with conn.transaction():                      # the service's own transaction
        await conn.execute("INSERT INTO orders ...")
        await outbox.send(conn, "orders", order, key=order.id)

    async with Relay("postgresql://app@db/shop", broker):   # in the service, or
        ...                                                  # `msgkit outbox relay`

A rolled-back transaction publishes nothing; a committed one is published at least once,
in order per key. The message id is the idempotency key (unless one is given), so a
consumer with `dedup=` handles each message once even when a relay crashed and a message
went out twice.
"""

from msgkit.outbox.relay import Relay
from msgkit.outbox.source import Counts
from msgkit.outbox.writer import Outbox

__all__ = ["Counts", "Outbox", "Relay"]
