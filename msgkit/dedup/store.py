"""The idempotency-store interface every dedup store implements, and its result types.

A key moves through three states inside a scope (topic, group):
- free (never seen, released, lease expired, or done longer ago than its TTL)
- claimed by one owner token until its lease expires
- done until its TTL expires

`claim` takes a free key (returns ACQUIRED with a fresh token) or reports DONE or
IN_PROGRESS. `complete` and `release` act only for the token's owner, so a holder whose
lease expired and was taken over cannot settle the new holder's claim.
"""

from __future__ import annotations

import enum
import itertools
import os
from typing import Any, NamedTuple, Protocol, runtime_checkable

from msgkit.errors import MsgkitError


class StoreUnavailableError(MsgkitError, ConnectionError):
    """The idempotency store cannot be reached or answered with an error.

    The message is then left unacknowledged: the failure policy retries it later.
    """


class LeaseLostError(MsgkitError):
    """Marking a key done failed: another delivery holds or finished it (this lease expired).

    Raised inside the business transaction by `complete_in`, so that transaction rolls back.
    """

    @classmethod
    def of(cls, scope: Scope, key: str) -> LeaseLostError:
        return cls(f"key {key!r} of {scope.topic!r}/{scope.group!r} is held or finished by "
                   "another delivery (this claim's lease expired); not marking it done")


class Scope(NamedTuple):
    """Where a key is unique: one consumer group of one topic."""

    topic: str
    group: str


class ClaimStatus(enum.Enum):
    ACQUIRED = "acquired"
    DONE = "done"
    IN_PROGRESS = "in-progress"


class ClaimResult(NamedTuple):
    status: ClaimStatus
    token: str | None = None
    """The owner token when ACQUIRED."""
    retry_after: float = 0.0
    """When IN_PROGRESS: seconds until the holder's lease expires (0 if unknown)."""


DONE = ClaimResult(ClaimStatus.DONE)


@runtime_checkable
class IdempotencyStore(Protocol):
    """Stores claim and done marks per (scope, key). Every method raises
    `StoreUnavailableError` when the store cannot answer; none guesses."""

    async def claim(self, scope: Scope, key: str, lease_s: float) -> ClaimResult:
        """Take the key for `lease_s` seconds if it is free."""
        ...

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        """Mark the key done for `ttl_s` seconds. False when it could not: another token holds
        a live claim on it or finished it (this claim's lease expired and was taken over)."""
        ...

    async def release(self, scope: Scope, key: str, token: str) -> None:
        """Free the key if `token` still holds an unfinished claim on it; else do nothing."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class TransactionalStore(IdempotencyStore, Protocol):
    """A SQL store that can mark a key done inside the caller's own database transaction."""

    async def complete_in(
        self, conn: Any, scope: Scope, key: str, token: str, ttl_s: float
    ) -> None:
        """Mark done through `conn` (an async connection, inside the caller's transaction);
        raises `LeaseLostError` when `complete` would return False."""
        ...

    def complete_in_sync(
        self, conn: Any, scope: Scope, key: str, token: str, ttl_s: float
    ) -> None:
        """The same through a blocking connection (e.g. `sqlite3.Connection`)."""
        ...


# Tokens are unique across processes (random prefix) and cheap (a counter). A forked child
# must not reuse its parent's prefix, or two processes could both think they own a key.
_token_prefix = os.urandom(8).hex()
_token_counter = itertools.count(1)


def _new_prefix() -> None:
    global _token_prefix, _token_counter
    _token_prefix = os.urandom(8).hex()
    _token_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)


def new_token() -> str:
    return f"{_token_prefix}{next(_token_counter):x}"
