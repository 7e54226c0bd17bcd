"""Which offsets may be committed: only finished messages, contiguously per partition.

Messages of a partition are handed out in offset order and may finish in any order; the
commit position is the first offset not finished yet (a slow message at 10 holds back
11 and 12). The consumer thread adds and commits; the event loop finishes: one lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

Key = tuple[str, int]


class PartitionOffsets:
    """One assigned partition, for one assignment (a new assignment gets a new object)."""

    __slots__ = ("committed", "finished", "key", "pending", "position", "revoked")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.pending: deque[int] = deque()
        """Offsets handed out and not finished, in order."""
        self.finished: set[int] = set()
        """Finished offsets behind an unfinished one."""
        self.position: int | None = None
        """The next offset to commit (first unfinished), once anything finished."""
        self.committed: int | None = None
        self.revoked = False

    def add(self, offset: int) -> None:
        self.pending.append(offset)

    def finish(self, offset: int) -> bool:
        """Marks `offset` finished; True if the commit position moved."""
        pending = self.pending
        if not pending or pending[0] != offset:
            self.finished.add(offset)
            return False
        pending.popleft()
        last = offset
        finished = self.finished
        while pending and pending[0] in finished:
            last = pending.popleft()
            finished.discard(last)
        self.position = last + 1
        return True

    def uncommitted(self) -> int | None:
        """The commit position if it moved since the last commit, else None."""
        if self.position is None or self.position == self.committed:
            return None
        return self.position


class OffsetTracker:
    """Every assigned partition of one consumer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parts: dict[Key, PartitionOffsets] = {}
        self._dirty: set[PartitionOffsets] = set()

    def assign(self, keys: Iterable[Key]) -> list[PartitionOffsets]:
        with self.lock:
            fresh = []
            for key in keys:
                old = self.parts.get(key)
                if old is not None:
                    old.revoked = True
                    self._dirty.discard(old)
                part = self.parts[key] = PartitionOffsets(key)
                fresh.append(part)
            return fresh

    def revoke(self, keys: Iterable[Key]) -> list[tuple[Key, int]]:
        """Forgets `keys`; returns their commit positions not committed yet.

        Late finishes of their messages are ignored from now on."""
        out = []
        with self.lock:
            for key in keys:
                part = self.parts.pop(key, None)
                if part is None:
                    continue
                part.revoked = True
                self._dirty.discard(part)
                position = part.uncommitted()
                if position is not None:
                    out.append((key, position))
        return out

    def add(self, part: PartitionOffsets, offsets: Iterable[int]) -> None:
        with self.lock:
            part.pending.extend(offsets)

    def finish(self, part: PartitionOffsets, offset: int) -> None:
        with self.lock:
            if not part.revoked and part.finish(offset):
                self._dirty.add(part)

    def take(self, *, every: bool = False) -> list[tuple[Key, int]]:
        """Commit positions that moved (all assigned ones with `every`), marked committed.

        If the commit then fails, the next moved position is committed anyway (Kafka
        keeps the highest one a member commits), so nothing is lost by marking early."""
        with self.lock:
            parts = list(self.parts.values()) if every else list(self._dirty)
            self._dirty.clear()
            out = []
            for part in parts:
                position = part.uncommitted()
                if position is not None:
                    part.committed = position
                    out.append((part.key, position))
            return out

    def mark_committed(self, key: Key, position: int) -> None:
        """`position` is already the group's stored position (e.g. resolved at assignment)."""
        with self.lock:
            part = self.parts.get(key)
            if part is not None and part.committed is None:
                part.committed = position

    def commit_failed(self, failed: Iterable[tuple[Key, int]]) -> None:
        """A commit of these positions failed: commit them again next time."""
        with self.lock:
            for key, position in failed:
                part = self.parts.get(key)
                if part is not None and part.committed == position:
                    part.committed = None
                    self._dirty.add(part)
