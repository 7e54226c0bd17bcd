"""The outbox table, in PostgreSQL and SQLite.

One row per message: `id` orders it (per key), `published_at` is set once the broker
confirmed it (when published rows are kept), `error` sets aside a row no broker will ever
take (an invalid topic, a message too large), so it blocks nothing and is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgkit.dedup.sql import check_identifier
from msgkit.errors import ConfigurationError
from msgkit.outbox.rows import COLUMNS

DEFAULT_TABLE = "msgkit_outbox"
PENDING = "published_at IS NULL AND error IS NULL"


@dataclass(frozen=True)
class Table:
    """Where the outbox lives: `name`, optionally in a PostgreSQL `schema`."""

    name: str = DEFAULT_TABLE
    schema: str | None = None

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if self.schema is not None:
            check_identifier(self.schema)
        # PostgreSQL cuts names at 63 bytes: the longest index name and the channel must fit.
        if len(self.index("pending_key")) - 2 > 63 or len(self.channel) > 63:
            raise ConfigurationError(
                f"outbox table {self.sql} has too long a name: keep the table's name within "
                f"{63 - len('_pending_key')} characters and schema + table within 62")

    @property
    def sql(self) -> str:
        """The table as it goes into statements (quoted: names keep their case)."""
        return f'"{self.schema}"."{self.name}"' if self.schema else f'"{self.name}"'

    @property
    def channel(self) -> str:
        """The PostgreSQL notification channel that wakes relays."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def index(self, suffix: str) -> str:
        return f'"{self.name}_{suffix}"'

    @property
    def lease(self) -> str:
        """SQLite: the one-row table saying which relay is publishing."""
        return f'"{self.name}_relay"'

    def postgres_ddl(self) -> list[str]:
        t = self.sql
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "message_id text NOT NULL, topic text NOT NULL, key bytea, key_is_text boolean NOT NULL, "
            "value bytea NOT NULL, headers text NOT NULL, created_at double precision NOT NULL, "
            "published_at timestamptz, error text)",
            f"CREATE INDEX IF NOT EXISTS {self.index('pending')} ON {t} (id) WHERE {PENDING}",
            f"CREATE INDEX IF NOT EXISTS {self.index('pending_key')} ON {t} (key, id) WHERE {PENDING}",
            f"CREATE INDEX IF NOT EXISTS {self.index('published')} ON {t} (published_at) "
            "WHERE published_at IS NOT NULL",
        ]

    def sqlite_ddl(self) -> list[str]:
        t = self.sql
        return [
            # AUTOINCREMENT: an id is never reused after its row was deleted, so ids keep order.
            f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "message_id TEXT NOT NULL, topic TEXT NOT NULL, key BLOB, key_is_text INTEGER NOT NULL, "
            "value BLOB NOT NULL, headers TEXT NOT NULL, created_at REAL NOT NULL, "
            "published_at REAL, error TEXT)",
            f"CREATE INDEX IF NOT EXISTS {self.index('pending')} ON {t} (id) WHERE {PENDING}",
            f"CREATE INDEX IF NOT EXISTS {self.index('published')} ON {t} (published_at) "
            "WHERE published_at IS NOT NULL",
            f"CREATE TABLE IF NOT EXISTS {self.lease} (one INTEGER PRIMARY KEY CHECK (one = 1), "
            "owner TEXT NOT NULL, expires REAL NOT NULL)",
        ]

    def insert(self, placeholders: list[str]) -> str:
        return f"INSERT INTO {self.sql} ({', '.join(COLUMNS)}) VALUES ({', '.join(placeholders)})"


POSTGRES_TYPES = ("text", "text", "bytea", "boolean", "bytea", "text", "float8")
"""The columns' types, for casts: a NULL key must not arrive as text."""
