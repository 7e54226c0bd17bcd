"""Idempotency-key deduplication: claim a key before the handler, complete it after.

The consumer calls `Deduplicator.claim(msg, group)` before the handler runs:
- `None` means the key was already completed by this group: acknowledge, skip the handler.
- a `Claim` means this delivery owns the key (a lease): the consumer calls `claim.complete()`
  after the handler succeeded (before acknowledging), or `claim.release()` when it raised,
  so a retry can claim it again. A duplicate arriving while the first is still in progress
  waits for it (it is never acknowledged as done before the first succeeded).
A store that cannot be reached raises: the message is then not acknowledged.
"""

from __future__ import annotations

from typing import Protocol

from msgkit.message import Message


class Claim(Protocol):
    async def complete(self) -> None: ...

    async def release(self) -> None: ...


class Deduplicator(Protocol):
    async def claim(self, msg: Message, group: str | None) -> Claim | None: ...

    async def close(self) -> None: ...
