"""Idempotency-key deduplication: claim a key before the handler, complete it after.

The consumer calls `Deduplicator.claim(msg, group)` before the handler runs:
- `None` means the key was already completed by this group: acknowledge, skip the handler.
- a `Claim` means this delivery owns the key (a lease): the consumer calls `claim.complete()`
  after the handler succeeded (before acknowledging), or `claim.release()` when it raised,
  so a retry can claim it again. A duplicate arriving while the first is still in progress
  waits for it (it is never acknowledged as done before the first succeeded).
A store that cannot be reached raises: the message is then not acknowledged.

msgkit's implementation is `Dedup` over an `IdempotencyStore` chosen by URL (`open_store`):
`memory://`, `sqlite:///path`, `redis://...`, `postgresql://...`.
"""

from __future__ import annotations

from typing import Protocol

from msgkit.dedup.deduplicator import Dedup, DedupClaim, current_claim
from msgkit.dedup.factory import open_store
from msgkit.dedup.store import (
    ClaimResult,
    ClaimStatus,
    IdempotencyStore,
    LeaseLostError,
    Scope,
    StoreUnavailableError,
    TransactionalStore,
)
from msgkit.message import Message


class Claim(Protocol):
    async def complete(self) -> None: ...

    async def release(self) -> None: ...


class Deduplicator(Protocol):
    async def claim(self, msg: Message, group: str | None) -> Claim | None: ...

    async def close(self) -> None: ...


__all__ = [
    "Claim",
    "ClaimResult",
    "ClaimStatus",
    "Dedup",
    "DedupClaim",
    "Deduplicator",
    "IdempotencyStore",
    "LeaseLostError",
    "Scope",
    "StoreUnavailableError",
    "TransactionalStore",
    "current_claim",
    "open_store",
]
