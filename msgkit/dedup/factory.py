"""`open_store(url)`: the idempotency store a URL names; client libraries load only when used."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from msgkit.dedup.store import IdempotencyStore
from msgkit.errors import ConfigurationError
from msgkit.url import URL

SCHEMES = ("memory", "sqlite", "redis", "rediss", "postgresql", "postgres")

# msgkit's own query parameters per store, with their types; other parameters of Redis and
# PostgreSQL URLs go to the client library untouched.
_OPTIONS: dict[str, dict[str, Callable[[str], Any]]] = {
    "memory": {"max_entries": int},
    "sqlite": {"table": str, "busy_timeout": float, "purge_interval": float},
    "redis": {"prefix": str},
    "postgresql": {"table": str, "schema": str, "pool_size": int, "connect_timeout": float,
                   "purge_interval": float},
}


def open_store(url: str, **options: Any) -> IdempotencyStore:
    """The store for `url`; it connects on first use. `options` override URL parameters.

    - `memory://[?max_entries=100000]`
    - `sqlite:///relative.db`, `sqlite:////absolute/path.db` `[?table=&busy_timeout=5]`
    - `redis://[:password@]host:6379/0[?prefix=msgkit:dedup:]`, `rediss://...` (`msgkit[redis]`)
    - `postgresql://user:pass@host:5432/db[?table=&schema=&pool_size=4]` (`msgkit[postgres]`)
    """
    parsed = URL.parse(url)
    scheme = {"rediss": "redis", "postgres": "postgresql"}.get(parsed.scheme, parsed.scheme)
    if scheme not in _OPTIONS:
        raise ConfigurationError(
            f"no dedup store for {parsed.redacted!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    ours = _typed(parsed, _OPTIONS[scheme], strict=scheme in ("memory", "sqlite"))
    ours.update(options)
    try:
        if scheme == "memory":
            from msgkit.dedup.memory_store import MemoryStore

            return MemoryStore(**ours)
        if scheme == "sqlite":
            from msgkit.dedup.sqlite_store import SQLiteStore

            if parsed.hosts or not parsed.path:
                raise ConfigurationError(
                    f"{parsed.redacted!r} names no file; write sqlite:///relative/path.db "
                    "or sqlite:////absolute/path.db"
                )
            return SQLiteStore(parsed.path, **ours)
        if scheme == "redis":
            try:
                from msgkit.dedup.redis_store import RedisStore
            except ImportError as exc:
                raise _missing("redis", exc) from None
            return RedisStore(_without(url, set(_OPTIONS[scheme])), **ours)
        try:
            from msgkit.dedup.postgres_store import PostgresStore
        except ImportError as exc:
            raise _missing("postgres", exc) from None
        return PostgresStore(_without(url, set(_OPTIONS[scheme])), **ours)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"dedup store {parsed.redacted!r}: {exc}") from None


def _typed(parsed: URL, known: Mapping[str, Callable[[str], Any]], *, strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in parsed.query.items():
        if name not in known:
            if strict:
                raise ConfigurationError(
                    f"unknown parameter {name!r} in {parsed.redacted!r}; known: {', '.join(known)}"
                )
            continue
        try:
            out[name] = known[name](raw)
        except ValueError:
            raise ConfigurationError(
                f"parameter {name}={raw!r} in {parsed.redacted!r} is not a valid "
                f"{known[name].__name__}"
            ) from None
    return out


def _without(url: str, names: set[str]) -> str:
    """`url` without msgkit's own query parameters, which the client library would reject."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in names]
    return f"{base}?{urlencode(kept)}" if kept else base


def _missing(extra: str, exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"the {extra} dedup store needs its client library: pip install 'msgkit[{extra}]' ({exc})"
    )
