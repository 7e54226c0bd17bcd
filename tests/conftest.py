"""Real idempotency stores for the tests (dedup, failover): each test gets its own namespace.

Redis: `MSGKIT_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0), a fresh key prefix,
deleted afterwards. PostgreSQL: `MSGKIT_TEST_POSTGRES_URL` (default
postgresql://postgres@127.0.0.1:5432/test), a fresh table, dropped afterwards. SQLite: a file
in the test's tmp_path. A server that is not up is started (`msgkit.testing.stores`); a store
that still cannot be reached skips its tests, or fails them when `CI` is set.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlencode

import psycopg
import pytest
import redis
from psycopg import sql

from msgkit.errors import BrokerUnavailableError
from msgkit.testing import stores
from msgkit.testing.brokers import unavailable
from msgkit.testing.stores import POSTGRES_URL, REDIS_URL
from msgkit.url import redact

STORES = ["memory", "sqlite", "redis", "postgres"]
T = TypeVar("T")


@functools.cache
def ensured(ensure: Callable[[], str]) -> str:
    """Starts a store's server at most once per session; '' when it is up, else why not."""
    try:
        ensure()
    except BrokerUnavailableError as exc:
        return str(exc)
    return ""


def store_unavailable(what: str, exc: BaseException | str) -> NoReturn:
    unavailable(f"{what} unavailable: {redact(str(exc))}")


def connected(what: str, url: str, connect: Callable[[], T], ensure: Callable[[], str],
              errors: tuple[type[BaseException], ...]) -> T:
    """A client of the store at `url`, starting its server once if it is not up."""
    try:
        return connect()
    except errors:
        why_not = ensured(ensure)
    if why_not:
        store_unavailable(f"{what} at {redact(url)}", why_not)
    try:
        return connect()
    except errors as exc:
        store_unavailable(f"{what} at {redact(url)}", exc)


def with_params(url: str, **params: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


@pytest.fixture
def redis_store_url() -> Iterator[str]:
    prefix = f"msgkit-test:{uuid.uuid4().hex[:12]}:"

    def connect() -> redis.Redis:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        return client

    client = connected("Redis", REDIS_URL, connect, stores.ensure_redis, (redis.RedisError, OSError))
    yield with_params(REDIS_URL, prefix=prefix)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def postgres_store_url() -> Iterator[str]:
    table = f"dedup_test_{uuid.uuid4().hex[:12]}"
    conn = connected("PostgreSQL", POSTGRES_URL,
                     lambda: psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3),
                     stores.ensure_postgres, (psycopg.Error,))
    yield with_params(POSTGRES_URL, table=table)
    with conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dedup.db'}"


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh namespace in each kind of store, in turn."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{request.param}_store_url"))


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Prints a test's figures (seed, counts, recovery times) in the run's output, also
    when it passes."""

    def show(line: str) -> None:
        with capsys.disabled():
            print(f"\n    {line}", flush=True)

    return show
