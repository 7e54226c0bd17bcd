"""Real brokers for tests: each backend ships a `TestBroker` under the `msgkit.test_brokers`
entry-point group; the pytest plugin asks it for a URL once per session.

`python -m msgkit.testing.brokers up` (run by `make brokers`, so by `make test` and `make
bench`) brings up what the suite needs on a fresh machine: each backend's `ensure_service`
(RabbitMQ started, and installed when missing; Kafka's jars fetched) and the idempotency
stores (Redis, PostgreSQL). Quick when all are up already.
"""

from __future__ import annotations

import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import ClassVar, NoReturn

from msgkit.errors import BrokerUnavailableError

ENTRY_POINT_GROUP = "msgkit.test_brokers"


def unavailable(text: str) -> NoReturn:
    """A test's broker or store cannot be had: skip it, or fail it when `CI` is set (so a
    missing service never passes silently)."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(text + " (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(text)


class TestBroker(ABC):
    """How the test kit gets one kind of broker: from `env_var`, a local server, or Docker."""

    __test__ = False  # not a pytest test class
    name: ClassVar[str]
    env_var: ClassVar[str | None] = None

    @abstractmethod
    def start(self) -> str:
        """Return a URL of a reachable broker (starting one if needed), or raise
        `BrokerUnavailableError` saying why and how to provide one."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop what `start` started."""

    def url_for_test(self, url: str, test_id: str) -> str:
        """The URL one test uses; backends without other isolation may add a namespace."""
        return url

    @classmethod
    def ensure_service(cls) -> str:
        """Bring up a system service this backend's tests need; returns a status line."""
        return "nothing to start"


def test_brokers() -> dict[str, type[TestBroker]]:
    found: dict[str, type[TestBroker]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[entry.name] = entry.load()
        except ImportError as exc:  # extra not installed: say so where it is used
            print(f"msgkit: test broker {entry.name!r} unavailable: {exc}", file=sys.stderr)
    return found


def _report(name: str, ensure: Callable[[], str]) -> bool:
    started = time.monotonic()
    try:
        status = ensure()
    except BrokerUnavailableError as exc:
        print(f"{name}: UNAVAILABLE: {exc}", file=sys.stderr)
        return False
    print(f"{name}: {status} ({time.monotonic() - started:.1f}s)")
    return True


def main(argv: list[str]) -> int:
    if argv[:1] != ["up"]:
        print("usage: python -m msgkit.testing.brokers up", file=sys.stderr)
        return 2
    from msgkit.testing.stores import ensure_postgres, ensure_redis

    ok = True
    for name, cls in sorted(test_brokers().items()):
        if cls.env_var and os.environ.get(cls.env_var):
            print(f"{name}: using ${cls.env_var}")
            continue
        ok &= _report(name, cls.ensure_service)
    ok &= _report("redis", ensure_redis)
    ok &= _report("postgres", ensure_postgres)
    return 1 if not ok and os.environ.get("CI") else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
