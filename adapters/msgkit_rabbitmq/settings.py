"""Backend options: msgkit's own RabbitMQ settings, split from what goes to aio-pika untouched.

URL query parameters and `msgkit.connect(url, **options)` arrive merged. The keys in
`OWN` are msgkit's; every other key is an aio-pika/aiormq connection option (`heartbeat`,
`name`, `ssl_context`, `client_properties`, TLS files such as `cafile` in the query, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yarl

from msgkit.errors import ConfigurationError
from msgkit.url import URL
from msgkit_rabbitmq.nodes import per_node

QueueType = Literal["quorum", "classic"]
ExchangeType = Literal["topic", "fanout"]

OWN = frozenset({
    "queue_type", "ordered_per_key", "exchange_type", "exchange_arguments", "queue_arguments",
    "connect_timeout", "publish_timeout", "publish_window", "reconnect_interval",
})
PRODUCER_OPTIONS = frozenset({"publish_timeout", "publish_window", "mandatory"})
CONSUMER_OPTIONS = frozenset({"queue_arguments", "consumer_arguments"})

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    queue_type: QueueType = "quorum"
    """Type of group queues (and their retry queues)."""
    ordered_per_key: bool = False
    """Group queues get `x-single-active-consumer`: one consumer of a group at a time."""
    exchange_type: ExchangeType = "topic"
    exchange_arguments: Mapping[str, Any] = field(default_factory=dict)
    queue_arguments: Mapping[str, Any] = field(default_factory=dict)
    """Extra arguments of every group queue (e.g. `x-max-length`); they win over msgkit's."""
    connect_timeout: float = 10.0
    publish_timeout: float = 30.0
    """How long a publish may wait for the broker (outage, confirms) before `PublishError`."""
    publish_window: int = 1024
    """Confirms in flight at once in one `publish(batch)`."""
    reconnect_interval: float = 1.0


def parse(url: URL, options: Mapping[str, Any]) -> tuple[Settings, list[str], dict[str, Any]]:
    """Returns msgkit's settings, the URL for aio-pika of each node and the options passed
    to it."""
    settings = Settings(
        queue_type=_choice(options, "queue_type", ("quorum", "classic"), "quorum"),  # type: ignore[arg-type]
        ordered_per_key=flag(options, "ordered_per_key", False),
        exchange_type=_choice(options, "exchange_type", ("topic", "fanout"), "topic"),  # type: ignore[arg-type]
        exchange_arguments=_mapping(options, "exchange_arguments"),
        queue_arguments=_mapping(options, "queue_arguments"),
        connect_timeout=positive(options, "connect_timeout", 10.0),
        publish_timeout=positive(options, "publish_timeout", 30.0),
        publish_window=int(positive(options, "publish_window", 1024)),
        reconnect_interval=positive(options, "reconnect_interval", 1.0),
    )
    native_urls = []
    for raw in per_node(url):
        parsed = yarl.URL(raw)
        native_urls.append(str(parsed.with_query(
            {k: v for k, v in parsed.query.items() if k not in OWN})))
    passthrough = {
        k: v for k, v in options.items() if k not in OWN and url.query.get(k) != v
    }
    passthrough["reconnect_interval"] = settings.reconnect_interval
    return settings, native_urls, passthrough


def check_keys(options: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown RabbitMQ {what} option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(allowed))}"
        )


def positive(options: Mapping[str, Any], name: str, default: float) -> float:
    raw = options.get(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"RabbitMQ option {name}={raw!r} must be a number") from None
    if value <= 0:
        raise ConfigurationError(f"RabbitMQ option {name}={raw!r} must be greater than 0")
    return value


def flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = options.get(name, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"RabbitMQ option {name}={raw!r} must be true or false")


def _choice(options: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = str(options.get(name, default)).lower()
    if raw not in choices:
        raise ConfigurationError(
            f"RabbitMQ option {name}={raw!r} is not one of {', '.join(choices)}"
        )
    return raw


def _mapping(options: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    raw = options.get(name) or {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"RabbitMQ option {name} must be a dict (pass it to msgkit.connect(), not in the URL)"
        )
    return dict(raw)
