"""Which offsets may be committed: only finished messages, contiguously per partition.

Messages of a partition are handed out in offset order and may finish in any order; the
commit position is the first offset not finished yet (a slow message at 10 holds back
11 and 12).

Two threads share this without a lock (a lock contended under the GIL costs a thread
switch per message). Each field has one writer:
- consumer thread: sets `committed` and `revoked`;
- event loop: owns `pending` (offsets join it as their deliveries are handed out),
  `finished` and `position`.
The consumer thread reads `position` to commit; a stale read is only ever behind.
"""

from __future__ import annotations

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
        """The next offset to commit (the first unfinished), once anything finished."""
        self.committed: int | None = None
        self.revoked = False

    def finish(self, offset: int) -> None:
        """Marks `offset` finished (event loop); moves the commit position if it can."""
        if self.revoked:
            return  # given up: the new owner handles it from the committed position
        pending = self.pending
        if not pending or pending[0] != offset:
            self.finished.add(offset)
            return
        pending.popleft()
        last = offset
        finished = self.finished
        while pending and pending[0] in finished:
            last = pending.popleft()
            finished.discard(last)
        self.position = last + 1

    def uncommitted(self) -> int | None:
        """The commit position if it moved since the last commit, else None."""
        position, committed = self.position, self.committed
        if position is None or (committed is not None and position <= committed):
            return None  # never move a group's position back
        return position


class OffsetTracker:
    """Every assigned partition of one consumer (changed by the consumer thread only)."""

    def __init__(self) -> None:
        self.parts: dict[Key, PartitionOffsets] = {}

    def assign(self, keys: Iterable[Key]) -> list[PartitionOffsets]:
        fresh = []
        for key in keys:
            old = self.parts.get(key)
            if old is not None:
                old.revoked = True
            part = self.parts[key] = PartitionOffsets(key)
            fresh.append(part)
        return fresh

    def revoke(self, keys: Iterable[Key]) -> list[tuple[Key, int]]:
        """Forgets `keys`; returns their commit positions not committed yet.

        Late finishes of their messages are ignored from now on."""
        out = []
        for key in keys:
            part = self.parts.pop(key, None)
            if part is None:
                continue
            part.revoked = True
            position = part.uncommitted()
            if position is not None:
                out.append((key, position))
        return out

    def take(self) -> list[tuple[Key, int]]:
        """Commit positions that moved since the last commit, marked committed.

        If that commit fails, `commit_failed` brings them back for the next one."""
        out = []
        for part in self.parts.values():
            position = part.uncommitted()
            if position is not None:
                part.committed = position
                out.append((part.key, position))
        return out

    def mark_committed(self, key: Key, position: int) -> None:
        """`position` is already the group's stored position (e.g. resolved at assignment)."""
        part = self.parts.get(key)
        if part is not None and part.committed is None:
            part.committed = position

    def commit_failed(self, failed: Iterable[tuple[Key, int]]) -> None:
        """A commit of these positions failed: commit them again next time."""
        for key, position in failed:
            part = self.parts.get(key)
            if part is not None and part.committed == position:
                part.committed = None
