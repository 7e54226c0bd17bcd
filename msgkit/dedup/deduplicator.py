"""`Dedup`: the `Deduplicator` the consumer calls, on top of any `IdempotencyStore`.

    dedup = Dedup("sqlite:///dedup.db", ttl=24 * 3600, lease=30)
    broker.consumer("payments", group="billing", dedup=dedup)

The key is the message's `idempotency_key`, else `key(msg)`, else the message id; the scope
is (topic, group). A duplicate that arrives while the first delivery is in progress waits
(polling with backoff) until that one is done (then it is acknowledged without running the
handler) or its lease expired (then this delivery takes the key over and runs).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from msgkit.dedup.factory import open_store
from msgkit.dedup.store import (
    ClaimResult,
    ClaimStatus,
    IdempotencyStore,
    Scope,
    StoreUnavailableError,
    TransactionalStore,
)
from msgkit.errors import ConfigurationError
from msgkit.logs import get_logger
from msgkit.message import Message
from msgkit.settings import Settings

log = get_logger("msgkit.dedup")

DEFAULT_TTL = 24 * 3600.0
DEFAULT_LEASE = 30.0
COMPLETE_ATTEMPTS = 4
"""Tries to mark a key done before giving up (the message then stays unacknowledged)."""

_current: ContextVar[DedupClaim | None] = ContextVar("msgkit_dedup_claim", default=None)


def current_claim() -> DedupClaim | None:
    """Inside a handler: the claim of the message it runs for (None without dedup).

    Use it to mark the key done in the handler's own database transaction:
    `await current_claim().complete_in(conn)`.
    """
    return _current.get()


class DedupClaim:
    """This delivery owns `key` in `scope` until `complete()`, `release()` or its lease ends."""

    __slots__ = ("_dedup", "_in_transaction", "_settled", "key", "scope", "token")

    def __init__(self, dedup: Dedup, scope: Scope, key: str, token: str) -> None:
        self._dedup = dedup
        self.scope = scope
        self.key = key
        self.token = token
        self._in_transaction = False
        self._settled = False

    async def complete(self) -> None:
        """Mark the key done (a no-op after `complete_in`: the transaction did it). A call
        that raised may be made again."""
        if self._settled:
            return
        if self._in_transaction:
            self._settled = True
            return
        dedup = self._dedup
        try:
            marked = await dedup.store.complete(self.scope, self.key, self.token, dedup.ttl)
        except StoreUnavailableError:
            # The handler's work is done: a short outage should not make it run again.
            retrying = AsyncRetrying(
                stop=stop_after_attempt(COMPLETE_ATTEMPTS - 1),
                wait=wait_exponential(multiplier=0.05, max=1.0),
                retry=retry_if_exception_type(StoreUnavailableError),
                reraise=True,
            )
            marked = await retrying(dedup.store.complete, self.scope, self.key, self.token,
                                    dedup.ttl)
        self._settled = True
        if not marked:
            log.warning(
                "idempotency key %r of %s/%s: the handler outlived its %ss lease and another "
                "delivery took the key over, so the handler may have run twice; raise the lease",
                self.key, self.scope.topic, self.scope.group, dedup.lease,
            )

    async def release(self) -> None:
        """Free the key so a retry can claim it (a no-op if the key is done meanwhile)."""
        if self._settled:
            return
        self._settled = True
        await self._dedup.store.release(self.scope, self.key, self.token)

    async def complete_in(self, conn: Any) -> None:
        """Mark the key done through `conn`, inside the handler's own open transaction, so the
        handler's writes and the mark commit (or roll back) together.

        `conn` is a psycopg `AsyncConnection` (PostgreSQL store) or a `sqlite3.Connection` /
        aiosqlite connection on the same file (SQLite store). Raises `LeaseLostError` when
        another delivery holds or finished the key: let it propagate so the transaction rolls back.
        """
        await self._transactional().complete_in(conn, self.scope, self.key, self.token,
                                                 self._dedup.ttl)
        self._in_transaction = True

    def complete_in_sync(self, conn: Any) -> None:
        """`complete_in` through a blocking connection (`sqlite3.Connection`,
        `psycopg.Connection`), e.g. from a worker thread running the business transaction."""
        self._transactional().complete_in_sync(conn, self.scope, self.key, self.token,
                                               self._dedup.ttl)
        self._in_transaction = True

    def _transactional(self) -> TransactionalStore:
        store = self._dedup.store
        if not isinstance(store, TransactionalStore):
            raise ConfigurationError(
                f"{store!r} cannot mark keys done inside your transaction; the SQLite and "
                "PostgreSQL stores can"
            )
        return store

    def __repr__(self) -> str:
        return f"<DedupClaim {self.key!r} of {self.scope.topic!r}/{self.scope.group!r}>"


class Dedup:
    """Idempotency-key deduplication for consumers: `broker.consumer(..., dedup=Dedup(store))`.

    `store` is an `IdempotencyStore` or a store URL (then this object owns it and closes it).
    `ttl`: seconds a done key is remembered. `lease`: seconds a claim lasts if its consumer
    dies; it must exceed the longest handler run, or a duplicate may run alongside it.
    `key`: a function deriving the key from a message without an `idempotency_key` (return
    None to fall back to the message id). One `Dedup` may serve many consumers.
    """

    def __init__(
        self,
        store: IdempotencyStore | str = "memory://",
        *,
        ttl: float = DEFAULT_TTL,
        lease: float = DEFAULT_LEASE,
        key: Callable[[Message], str | None] | None = None,
        max_poll: float = 1.0,
    ) -> None:
        for name, value in (("ttl", ttl), ("lease", lease), ("max_poll", max_poll)):
            if not value > 0 or math.isinf(value):
                raise ConfigurationError(f"dedup {name} must be a positive number of seconds, not {value}")
        self._owns_store = isinstance(store, str)
        self.store: IdempotencyStore = open_store(store) if isinstance(store, str) else store
        self.ttl = ttl
        self.lease = lease
        self.max_poll = max_poll
        self._key = key
        # Consumers without a group each see every message, so each gets a scope of its own.
        self._private_group = f"~private-{uuid.uuid4().hex[:12]}"
        self._scopes: dict[str | None, dict[str, Scope]] = {}  # group -> topic -> scope

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> Dedup:
        """A `Dedup` on `MSGKIT_DEDUP_URL` (`Settings.dedup_url`), else `memory://`."""
        url = (settings or Settings()).dedup_url or "memory://"
        return cls(url, **kwargs)

    def key_of(self, msg: Message) -> str:
        """The idempotency key of `msg`."""
        if msg.idempotency_key:
            return msg.idempotency_key
        if self._key is not None:
            derived = self._key(msg)
            if derived:
                return derived
        return msg.id

    async def claim(self, msg: Message, group: str | None) -> DedupClaim | None:
        topic = msg.topic
        scopes = self._scopes.get(group)
        scope = scopes.get(topic) if scopes is not None else None
        if scope is None:
            scope = self._scope(topic, group)
        key = msg.idempotency_key or (self.key_of(msg) if self._key is not None else msg.id)
        result = await self.store.claim(scope, key, self.lease)
        if result.status is ClaimStatus.IN_PROGRESS:
            result = await self._wait(scope, key, result)
        if result.status is ClaimStatus.DONE:
            return None
        assert result.token is not None
        claim = DedupClaim(self, scope, key, result.token)
        _current.set(claim)
        return claim

    def _scope(self, topic: str, group: str | None) -> Scope:
        scope = Scope(topic, group if group is not None else self._private_group)
        self._scopes.setdefault(group, {})[topic] = scope
        return scope

    async def close(self) -> None:
        if self._owns_store:
            await self.store.close()

    async def __aenter__(self) -> Dedup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _wait(self, scope: Scope, key: str, first: ClaimResult) -> ClaimResult:
        log.debug("idempotency key %r of %s/%s is in progress elsewhere; waiting",
                  key, scope.topic, scope.group)
        backoff = wait_exponential(multiplier=0.005, max=self.max_poll) + wait_random(0, 0.005)

        def wait(state: RetryCallState) -> float:
            # Poll with backoff, but look again as soon as the holder's lease runs out.
            pause = backoff(state)
            assert state.outcome is not None
            left: float = state.outcome.result().retry_after
            return min(pause, left + 0.002) if left > 0 else pause

        pending = [first]  # tenacity's first attempt is the answer we already have

        async def attempt() -> ClaimResult:
            return pending.pop() if pending else await self.store.claim(scope, key, self.lease)

        retrying = AsyncRetrying(
            retry=retry_if_result(lambda r: r.status is ClaimStatus.IN_PROGRESS),
            wait=wait,
            reraise=True,
        )
        result: ClaimResult = await retrying(attempt)
        return result

    def __repr__(self) -> str:
        return f"<Dedup {self.store!r} ttl={self.ttl}s lease={self.lease}s>"
