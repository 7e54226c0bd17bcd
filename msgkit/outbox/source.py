"""What a relay needs from the outbox's database: the contract the PostgreSQL and SQLite
sources fulfil.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from msgkit.errors import ConfigurationError
from msgkit.outbox.rows import Pending

HINT = ": check the table's name and schema, or create it with `msgkit outbox create`"


class MissingTableError(ConfigurationError):
    """The outbox table does not exist (and was not to be created): check its name, or
    create it with `msgkit outbox create`."""


@dataclass(frozen=True)
class Counts:
    """What the outbox holds: rows waiting, set aside, kept after publishing, and the age
    in seconds of the oldest waiting one (0 when none waits)."""

    pending: int
    failed: int
    published: int
    oldest_pending_age: float


class Claim(ABC):
    """Rows one relay holds: no other relay publishes them, or any later row of their keys,
    until `finish` or `release` (or the relay's death) ends the claim."""

    rows: Sequence[Pending]

    @abstractmethod
    async def finish(self, published: Collection[int], failed: Mapping[int, str]) -> None:
        """Mark `published` rows done (deleted, or kept with their time under a retention),
        set `failed` ones aside with their error; the rest go back to waiting."""

    @abstractmethod
    async def release(self) -> None:
        """Give every row back unchanged (the publish failed)."""


class Source(ABC):
    """One relay's access to the outbox table."""

    errors: tuple[type[BaseException], ...] = (OSError,)
    """What a lost or failing database raises: the relay reconnects after these."""

    @abstractmethod
    async def open(self, *, create: bool = True) -> None:
        """Connect, create the table if missing (else raise `MissingTableError`), start
        listening for commits."""

    @abstractmethod
    async def claim(self, limit: int, skip: Collection[bytes | int]) -> Claim | None:
        """Up to `limit` of the oldest waiting rows, whole key prefixes only, leaving out
        rows whose key (or, keyless, whose id) is in `skip`; None when there is nothing
        this relay may publish now."""

    @abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return when rows may have been committed, or after `timeout` seconds."""

    @abstractmethod
    async def counts(self) -> Counts: ...

    @abstractmethod
    async def retry_failed(self) -> int:
        """Put set-aside rows back to waiting; returns how many."""

    @abstractmethod
    async def purge(self, older_than: float) -> int:
        """Delete rows published more than `older_than` seconds ago; returns how many."""

    @abstractmethod
    async def close(self) -> None: ...
