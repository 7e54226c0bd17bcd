"""Splits msgkit options into adapter settings and librdkafka settings per client kind.

Rules (also in the package docstring):
- A key with a dot, or one of librdkafka's dotless names (`acks`, `debug`, ...), is a
  librdkafka setting. `producer.<name>` / `consumer.<name>` / `admin.<name>` reach only
  that kind of client; an unprefixed name reaches every client (connection, TLS, SASL).
- Options given to `broker.producer(...)` or `broker.consumer(...)` reach only that client.
- The dotless names in `Settings` are msgkit's own (topic creation, timeouts, buffering).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from msgkit.errors import ConfigurationError
from msgkit.logs import get_logger
from msgkit.url import SECRET_WORDS, URL

log = get_logger("msgkit.kafka")
librdkafka_log = get_logger("msgkit.kafka.librdkafka")

KINDS = ("producer", "consumer", "admin")
TANSU_CLUSTER_PREFIX = "tansu"
"""Tansu's cluster ids start with this: how `tansu_workarounds=auto` recognises it."""
# librdkafka properties without a dot: everything else dotless is ours or a typo.
_DOTLESS_NATIVE = frozenset({
    "acks", "debug", "retries", "partitioner", "logger", "error_cb", "stats_cb", "throttle_cb",
    "oauth_cb", "on_delivery", "on_commit", "offset_commit_cb", "plugin_library_paths",
})


@dataclass(frozen=True, slots=True)
class Settings:
    """msgkit's own Kafka settings (URL query or keyword options, dotless names)."""

    partitions: int = 3
    """Partitions of each topic msgkit creates (per-key order holds within one)."""
    replication_factor: int = -1
    """Replicas of each topic msgkit creates; -1 takes the broker's default."""
    create_topics: bool = True
    """Create missing topics on first use; False: a missing topic is an error."""
    connect_timeout: float = 10.0
    """Seconds `connect()` and topic administration wait for the broker."""
    join_timeout: float = 60.0
    """Seconds a subscription waits for its consumer-group join."""
    close_timeout: float = 30.0
    """Seconds closing waits to flush pending publishes or leave the group."""
    buffer_messages: int = 0
    """Messages a subscription holds locally (fetched, not yet finished) before it pauses
    its partitions; 0 means max(4 x prefetch, 2048)."""
    buffer_bytes: int = 64 * 1024 * 1024
    """Payload bytes a subscription holds locally before it pauses (with large messages
    this binds before `buffer_messages`); judged by the average size of recent records.
    0: no byte bound. librdkafka's own queue (`queued.max.messages.kbytes`) is separate."""
    transactional_id: str = ""
    """The `transactional.id` of an exactly-once consumer or producer. Empty: a fresh one
    per instance. Give each instance a stable one (e.g. `orders-relay-<pod>`) and its
    restart fences the crashed one at once, instead of readers of its output waiting up to
    `transaction.timeout.ms` (10 s) for the dead transaction to be aborted."""
    tansu_workarounds: str = "auto"
    """Work around Tansu 0.6 (see the README's Kafka notes): find a partition's true end by
    reading its last batch (its high watermark is wrong), and finish a rebalance before
    leaving the group (a member leaving mid-rebalance blocks the group). "auto": on for
    Tansu."""

    def __post_init__(self) -> None:
        for name in ("buffer_messages", "buffer_bytes"):
            if getattr(self, name) < 0:
                raise ConfigurationError(
                    f"kafka option {name}={getattr(self, name)} is negative; give a size, or 0 "
                    "for the default" + (" (no byte bound)" if name == "buffer_bytes" else ""))

    def merged(self, options: Mapping[str, Any]) -> Settings:
        """These settings updated by the dotless msgkit keys in `options`."""
        changes: dict[str, Any] = {}
        for f in fields(self):
            if f.name in options:
                changes[f.name] = _convert(f.name, options[f.name], type(getattr(self, f.name)))
        return replace(self, **changes) if changes else self


_OWN = frozenset(f.name for f in fields(Settings))


def _convert(name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is str:
            return str(value).lower() if isinstance(value, (str, bool)) else str(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"kafka option {name}={value!r} is invalid: expected {kind.__name__}"
        ) from None


@dataclass(frozen=True, slots=True)
class ClientConfigs:
    """librdkafka settings for each client kind, before msgkit's defaults are added."""

    common: dict[str, Any]
    kind: dict[str, dict[str, Any]]
    assumed: tuple[str, ...] = ()
    """Settings msgkit chose that the user did not give (`name=value`), for error messages."""

    def for_kind(self, kind: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        conf = dict(self.common)
        conf.update(self.kind.get(kind, {}))
        if extra:
            conf.update(native_only(extra))
        return conf


def split_options(url: URL, options: Mapping[str, Any]) -> tuple[Settings, ClientConfigs]:
    """Backend-level options -> (msgkit settings, librdkafka settings per client kind)."""
    settings = Settings().merged(options)
    common: dict[str, Any] = {"bootstrap.servers": bootstrap(url), "logger": librdkafka_log}
    if url.username:
        common["sasl.username"] = url.username
        common["sasl.password"] = url.password or ""
    per_kind: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    for key, value in options.items():
        prefix, _, rest = key.partition(".")
        if prefix in per_kind and rest:
            per_kind[prefix][rest] = value
        elif key not in _OWN:
            _check_native(key)
            common[key] = value
    assumed = []
    if url.username:  # credentials without a protocol: the usual managed-Kafka setup
        for name, value in SASL_DEFAULTS.items():
            if name not in common:
                common[name] = value
                assumed.append(f"{name}={value}")
    return settings, ClientConfigs(common, per_kind, tuple(assumed))


SASL_DEFAULTS = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}
"""What `kafka://user:password@...` uses unless the URL or options say otherwise."""


def native_only(options: Mapping[str, Any]) -> dict[str, Any]:
    """The librdkafka settings among per-client options (msgkit's own names removed)."""
    out = {}
    for key, value in options.items():
        if key in _OWN:
            continue
        _check_native(key)
        out[key] = value
    return out


def _check_native(key: str) -> None:
    if "." not in key and key not in _DOTLESS_NATIVE:
        hint = key.replace("_", ".")
        raise ConfigurationError(
            f"unknown kafka option {key!r}: librdkafka settings are written with dots "
            f"(e.g. {hint!r}); msgkit's own options are {', '.join(sorted(_OWN))}"
        )


def bootstrap(url: URL) -> str:
    if not url.hosts or not all(host for host, _ in url.hosts):
        raise ConfigurationError(
            f"kafka URL {url.redacted!r} names no broker; write kafka://host:9092[,host2:9092]"
        )
    return ",".join(f"{host}:{port or 9092}" for host, port in url.hosts)


def redacted(conf: Mapping[str, Any]) -> dict[str, Any]:
    """`conf` fit for logs: secrets replaced by ***, callables by their names."""
    out: dict[str, Any] = {}
    for key, value in conf.items():
        if any(word in key.lower() for word in SECRET_WORDS):
            out[key] = "***"
        elif callable(value) or isinstance(value, logging.Logger):
            out[key] = getattr(value, "name", None) or getattr(value, "__name__", repr(value))
        else:
            out[key] = value
    return out
