"""Topic names and topic administration (AdminClient calls run in a thread)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from msgkit.errors import (
    AuthorizationError,
    BrokerUnavailableError,
    ConfigurationError,
    InvalidTopicError,
)
from msgkit_kafka.config import Settings

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
MAX_NAME = 249


def validate_name(name: str) -> None:
    """Kafka's own rule, checked before any network call."""
    if not _LEGAL.match(name) or name in (".", ".."):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidTopicError(
            f"topic or group {shown!r} is invalid on Kafka: use 1-{MAX_NAME} letters, digits, "
            "'.', '_' or '-' (and not '.' or '..')"
        )


def retry_topic(topic: str, group: str) -> str:
    """Where redelivered copies wait for this group: `<topic>.<group>.retry`."""
    name = f"{topic}.{group}.retry"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:16]
    return f"{topic[: MAX_NAME - len(digest) - 7]}.{digest}.retry"


class Topics:
    """Creates topics on first use (or checks they exist) and remembers the known ones."""

    def __init__(self, admin: AdminClient, settings: Settings) -> None:
        self._admin = admin
        self._settings = settings
        self.known: set[str] = set()
        self._lock = asyncio.Lock()

    async def ensure(self, names: Iterable[str]) -> None:
        missing = [n for n in dict.fromkeys(names) if n not in self.known]
        if not missing:
            return
        async with self._lock:
            missing = [n for n in missing if n not in self.known]
            if missing:
                await asyncio.to_thread(self._ensure, missing)
                self.known.update(missing)

    async def exists(self, name: str) -> bool:
        """Whether topic `name` exists (asking never creates it)."""
        if name in self.known:
            return True
        found = await asyncio.to_thread(self._existing, [name], self._settings.connect_timeout)
        return name in found

    def partitions(self, topic: str) -> list[int]:
        """The partition ids of `topic` (blocking: call in a thread)."""
        md = self._admin.list_topics(topic, timeout=self._settings.connect_timeout)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def _ensure(self, names: list[str]) -> None:
        settings = self._settings
        deadline = time.monotonic() + settings.connect_timeout
        existing = self._existing(names, settings.connect_timeout)
        missing = [n for n in names if n not in existing]
        if not missing:
            return
        if not settings.create_topics:
            raise ConfigurationError(
                f"Kafka topic(s) {', '.join(map(repr, missing))} do not exist and the option "
                "create_topics is off: create them, or allow msgkit to (create_topics=true)"
            )
        futures = self._admin.create_topics(
            [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing],
            request_timeout=settings.connect_timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise _admin_error(f"cannot create Kafka topic {name!r}", exc) from exc
        # Wait until metadata shows them, so clients created next see their partitions.
        while True:
            left = [n for n in missing if n not in self._existing(missing, 1.0)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"Kafka topic(s) {left} were created but do not appear in metadata "
                    f"after {settings.connect_timeout}s"
                )
            time.sleep(0.05)

    def _existing(self, names: list[str], timeout: float) -> set[str]:
        try:
            md: Any = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise _admin_error("cannot read Kafka metadata", exc) from exc
        for n in names:
            error = md.topics[n].error if n in md.topics else None
            if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise AuthorizationError(f"Kafka refused access to topic {n!r}: {error.str()}"
                                         f"{_GRANT}")
        return {
            n for n in names
            if n in md.topics and md.topics[n].error is None and md.topics[n].partitions
        }


_GRANT = ("; grant this client's principal an ACL for the topic (DESCRIBE, and READ to consume, "
          "WRITE to publish, CREATE for msgkit to create it), or create the topic beforehand")


def _admin_error(what: str, exc: KafkaException) -> Exception:
    err = exc.args[0] if exc.args else None
    reason = err.str() if isinstance(err, KafkaError) else str(exc)
    code = err.code() if isinstance(err, KafkaError) else None
    if code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN):
        return BrokerUnavailableError(f"{what}: {reason}")
    if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        return AuthorizationError(f"{what}: {reason}{_GRANT}")
    if code in (KafkaError.TOPIC_EXCEPTION,
                KafkaError.INVALID_REPLICATION_FACTOR, KafkaError.INVALID_PARTITIONS,
                KafkaError.POLICY_VIOLATION):
        return ConfigurationError(f"{what}: {reason}")
    return BrokerUnavailableError(f"{what}: {reason}")
