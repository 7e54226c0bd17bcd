"""Configuration of dedup: store URLs, settings, the key, and secrets kept out of reprs."""

from __future__ import annotations

import sys

import pytest

import msgkit
from msgkit.dedup import (
    Dedup,
    IdempotencyStore,
    Scope,
    StoreUnavailableError,
    TransactionalStore,
    open_store,
)
from msgkit.dedup.deduplicator import COMPLETE_ATTEMPTS
from msgkit.dedup.memory_store import MemoryStore
from msgkit.dedup.postgres_store import PostgresStore
from msgkit.dedup.redis_store import RedisStore
from msgkit.dedup.sqlite_store import SQLiteStore
from msgkit.message import Message


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryStore),
        ("sqlite:///relative.db", SQLiteStore),
        ("sqlite:////tmp/absolute.db", SQLiteStore),
        ("redis://localhost:6379/0", RedisStore),
        ("rediss://:pw@localhost:6380/1?prefix=app:", RedisStore),
        ("postgresql://u:pw@localhost/db?table=dedup&schema=app", PostgresStore),
        ("postgres://localhost/db", PostgresStore),
    ],
)
async def test_url_scheme_picks_the_store(url: str, kind: type) -> None:
    store = open_store(url)
    try:
        assert isinstance(store, kind) and isinstance(store, IdempotencyStore)
        assert isinstance(store, TransactionalStore) == (kind in (SQLiteStore, PostgresStore))
        assert "pw" not in repr(store)
    finally:
        await store.close()


def test_url_parameters_reach_the_store() -> None:
    memory = open_store("memory://?max_entries=10")
    assert isinstance(memory, MemoryStore) and memory.max_entries == 10
    sqlite = open_store("sqlite:///x.db?table=mine&busy_timeout=1.5")
    assert isinstance(sqlite, SQLiteStore) and (sqlite.table, sqlite.busy_timeout) == ("mine", 1.5)
    pg = open_store("postgresql://localhost/db?table=t&pool_size=2&sslmode=disable")
    assert isinstance(pg, PostgresStore) and (pg.table, pg.pool_size) == ("t", 2)
    assert "sslmode=disable" in repr(pg) and "pool_size" not in repr(pg)
    redis = open_store("redis://localhost/0?prefix=app:")
    assert isinstance(redis, RedisStore) and redis.prefix == "app:"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mongodb://u:secret@localhost/db", "no dedup store"),
        ("memory://?max_entries=lots", "not a valid int"),
        ("memory://?colour=blue", "unknown parameter 'colour'"),
        ("sqlite://", "names no file"),
        ("sqlite:///x.db?table=x;drop", "not a valid SQL table"),
        ("postgresql://localhost/db?pool_size=0", "pool_size must be at least 1"),
        ("not a url", "is not a URL"),
    ],
)
def test_bad_store_urls_say_what_to_change(url: str, complaint: str) -> None:
    with pytest.raises(msgkit.ConfigurationError, match=complaint) as caught:
        open_store(url)
    assert "secret" not in str(caught.value)


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgkit.dedup.redis_store", None)
    with pytest.raises(msgkit.ConfigurationError, match=r"pip install 'msgkit\[redis\]'"):
        open_store("redis://localhost")
    monkeypatch.setitem(sys.modules, "msgkit.dedup.postgres_store", None)
    with pytest.raises(msgkit.ConfigurationError, match=r"pip install 'msgkit\[postgres\]'"):
        open_store("postgresql://localhost/db")


async def test_settings_choose_the_store_and_redact_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGKIT_DEDUP_URL", "postgresql://app:hunter2@db.internal/app")
    settings = msgkit.Settings()
    assert settings.dedup_url == "postgresql://app:hunter2@db.internal/app"
    assert "hunter2" not in repr(settings)
    dedup = Dedup.from_settings(settings, lease=5)
    assert isinstance(dedup.store, PostgresStore) and dedup.lease == 5
    assert "hunter2" not in repr(dedup)
    await dedup.close()
    monkeypatch.delenv("MSGKIT_DEDUP_URL")
    async with Dedup.from_settings() as default:
        assert isinstance(default.store, MemoryStore)


def test_key_is_idempotency_key_then_user_function_then_message_id() -> None:
    by_order = Dedup(key=lambda m: m.header("order"))
    plain = Dedup()
    with_key = Message("t", b"", headers={"order": "o-1"}, id="m-1", idempotency_key="pay-1")
    assert by_order.key_of(with_key) == plain.key_of(with_key) == "pay-1"
    derived = Message("t", b"", headers={"order": "o-1"}, id="m-1")
    assert by_order.key_of(derived) == "o-1" and plain.key_of(derived) == "m-1"
    underived = Message("t", b"", id="m-2")
    assert by_order.key_of(underived) == "m-2"


@pytest.mark.parametrize("bad", [{"ttl": 0}, {"lease": -1}, {"ttl": float("inf")},
                                 {"lease": float("nan")}])
def test_bad_durations_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(msgkit.ConfigurationError, match="positive number of seconds"):
        Dedup(**bad)  # type: ignore[arg-type]


async def test_consumers_without_a_group_dedup_only_against_themselves() -> None:
    async with Dedup() as mine, Dedup(mine.store) as theirs:
        msg = Message("t", b"", id="m-1")
        first = await mine.claim(msg, None)
        assert first is not None
        await first.complete()
        assert await mine.claim(msg, None) is None
        assert await theirs.claim(msg, None) is not None  # another broadcast subscriber


class CompleteFails(MemoryStore):
    """A memory store whose first `failures` completes fail as if it were unreachable."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailableError("store went away (injected)")
        return await super().complete(scope, key, token, ttl_s)


async def test_marking_done_rides_out_a_short_outage() -> None:
    store = CompleteFails(failures=2)
    dedup = Dedup(store)
    msg = Message("t", b"", id="m-1")
    claim = await dedup.claim(msg, "g")
    assert claim is not None
    await claim.complete()
    assert store.calls == 3
    assert await dedup.claim(msg, "g") is None


async def test_marking_done_gives_up_on_a_long_outage() -> None:
    store = CompleteFails(failures=100)
    dedup = Dedup(store)
    claim = await dedup.claim(Message("t", b"", id="m-1"), "g")
    assert claim is not None
    with pytest.raises(StoreUnavailableError):
        await claim.complete()  # the consumer then leaves the message unacknowledged
    assert store.calls == COMPLETE_ATTEMPTS
