"""`memory://`: keys in a bounded LRU map in this process (tests, single-process services).

Nothing survives a restart and nothing is shared between processes. When the map is full
the least recently used entry goes first; keep `max_entries` well above the keys seen per
TTL window, or old done keys are forgotten early.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from msgkit.dedup.store import DONE, ClaimResult, ClaimStatus, Scope, new_token

DEFAULT_MAX_ENTRIES = 100_000


class _Entry:
    __slots__ = ("done", "expires", "token")

    def __init__(self, token: str, done: bool, expires: float) -> None:
        self.token = token
        self.done = done
        self.expires = expires


class MemoryStore:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Scope, str], _Entry] = OrderedDict()

    async def claim(self, scope: Scope, key: str, lease_s: float) -> ClaimResult:
        at = (scope, key)
        entries = self._entries
        entry = entries.get(at)
        now = time.monotonic()
        if entry is not None:
            if entry.expires > now:
                if entry.done:
                    entries.move_to_end(at)
                    return DONE
                return ClaimResult(ClaimStatus.IN_PROGRESS, None, entry.expires - now)
            entries.move_to_end(at)
        token = new_token()
        entries[at] = _Entry(token, False, now + lease_s)
        if entry is None and len(entries) > self.max_entries:
            entries.popitem(last=False)
        return ClaimResult(ClaimStatus.ACQUIRED, token)

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        at = (scope, key)
        entry = self._entries.get(at)
        now = time.monotonic()
        if entry is None:  # the lease ran out and the entry was evicted: still ours to finish
            self._entries[at] = _Entry(token, True, now + ttl_s)
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return True
        if entry.token != token and (entry.done or entry.expires > now):
            return False
        entry.token, entry.done, entry.expires = token, True, now + ttl_s
        return True

    async def release(self, scope: Scope, key: str, token: str) -> None:
        entry = self._entries.get((scope, key))
        if entry is not None and entry.token == token and not entry.done:
            del self._entries[(scope, key)]

    async def close(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._entries)}/{self.max_entries} entries>"
