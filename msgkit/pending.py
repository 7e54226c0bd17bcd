"""Under EXACTLY_ONCE, what a handler sends through its `Context` waits in an outbox until
the handler returned. A failed attempt's messages are dropped with it; a successful one's are
published before the input is acknowledged (on Kafka, in the transaction that also commits
the consumed offsets), so a retried or redelivered input never sends its output twice.
"""

from __future__ import annotations

from contextvars import ContextVar

from msgkit.message import Outgoing

OUTBOX: ContextVar[list[Outgoing] | None] = ContextVar("msgkit_pending", default=None)
"""The outbox of the handler attempt running in this task, if it is exactly-once."""


def derived_key(source: str, index: int) -> str:
    """The idempotency key of the `index`-th message a handler sends for input `source`:
    the same on every redelivery of that input, so consumers with `dedup=` drop repeats."""
    return f"{source}/{index}"
