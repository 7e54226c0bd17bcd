"""Real idempotency stores for the dedup tests: each test gets its own namespace.

Redis: `MSGKIT_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0), a fresh key prefix,
deleted afterwards. PostgreSQL: `MSGKIT_TEST_POSTGRES_URL` (default
postgresql://postgres@127.0.0.1:5432/test), a fresh table, dropped afterwards. SQLite: a file
in the test's tmp_path. A store that cannot be reached skips its tests, or fails them when
`CI` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
import redis
from psycopg import sql

from msgkit.url import redact

STORES = ["memory", "sqlite", "redis", "postgres"]

REDIS_URL = os.environ.get("MSGKIT_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
POSTGRES_URL = os.environ.get("MSGKIT_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"


def unavailable(what: str, exc: BaseException) -> None:
    text = f"{what} unavailable: {redact(str(exc))}"
    if os.environ.get("CI"):
        pytest.fail(text + " (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(text)


def with_params(url: str, **params: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


@pytest.fixture
def redis_store_url() -> Iterator[str]:
    prefix = f"msgkit-test:{uuid.uuid4().hex[:12]}:"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable(f"Redis at {redact(REDIS_URL)}", exc)
    yield with_params(REDIS_URL, prefix=prefix)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def postgres_store_url() -> Iterator[str]:
    table = f"dedup_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {redact(POSTGRES_URL)}", exc)
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
