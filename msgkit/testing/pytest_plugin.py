"""pytest plugin (entry point `pytest11`): fixtures that yield connected msgkit brokers.

- `msgkit_url`: a broker URL, parametrized over every backend (`--msgkit-backends` or
  `MSGKIT_TEST_BACKENDS` narrows it: `memory,kafka,amqp`).
- `msgkit_broker`: a connected `Broker` on that URL.
- `memory_broker`, `kafka_url`, `amqp_url`: one backend each.
- `unique_name`: a fresh topic/group name, so tests never see each other's messages.

A backend that cannot be reached is skipped with its reason, except when `CI` is set:
then the test fails, so a missing broker never passes silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import msgkit
from msgkit.errors import BrokerUnavailableError
from msgkit.logs import SUMMARISE
from msgkit.testing.brokers import TestBroker, test_brokers, unavailable


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--msgkit-backends",
        default=os.environ.get("MSGKIT_TEST_BACKENDS", ""),
        help="comma-separated backends for msgkit_url tests (default: all installed)",
    )


class TestBrokers:
    """Starts each kind of broker at most once per session; remembers why one failed."""

    __test__ = False

    def __init__(self) -> None:
        self._kinds = test_brokers()
        self._started: dict[str, TestBroker] = {}
        self._urls: dict[str, str] = {}
        self._errors: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._kinds)

    def url(self, name: str, test_id: str) -> str:
        if name not in self._kinds:
            self._unavailable(name, f"no test broker {name!r} is installed")
        if name in self._errors:
            self._unavailable(name, self._errors[name])
        if name not in self._urls:
            broker = self._kinds[name]()
            try:
                self._urls[name] = broker.start()
                self._started[name] = broker
            except BrokerUnavailableError as exc:
                self._errors[name] = str(exc)
                self._unavailable(name, str(exc))
        return self._started[name].url_for_test(self._urls[name], test_id)

    def stop(self) -> None:
        for broker in self._started.values():
            broker.stop()
        self._started.clear()

    @staticmethod
    def _unavailable(name: str, reason: str) -> None:
        unavailable(f"msgkit test broker {name!r} unavailable: {reason}")


@pytest.fixture(autouse=True)
def _msgkit_fresh_log_summaries() -> None:
    """Each test's log lines are summarised on their own (msgkit.logs.SUMMARISE)."""
    SUMMARISE.reset()


@pytest.fixture(scope="session")
def msgkit_test_brokers() -> Iterator[TestBrokers]:
    brokers = TestBrokers()
    yield brokers
    brokers.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "msgkit_url" not in metafunc.fixturenames:
        return
    if any(m.name == "parametrize" and "msgkit_url" in str(m.args[0])
           for m in metafunc.definition.iter_markers()):
        return
    chosen = [n for n in metafunc.config.getoption("--msgkit-backends").split(",") if n]
    names = chosen or sorted(test_brokers())
    metafunc.parametrize("msgkit_url", names, indirect=True, ids=names)


@pytest.fixture
def msgkit_url(request: pytest.FixtureRequest, msgkit_test_brokers: TestBrokers) -> str:
    name = getattr(request, "param", "memory")
    return msgkit_test_brokers.url(name, request.node.nodeid)


@pytest.fixture
async def msgkit_broker(msgkit_url: str) -> AsyncIterator[msgkit.Broker]:
    async with msgkit.connect(msgkit_url) as broker:
        yield broker


@pytest.fixture
async def memory_broker(request: pytest.FixtureRequest) -> AsyncIterator[msgkit.Broker]:
    async with msgkit.connect(f"memory://test-{uuid.uuid4().hex[:12]}") as broker:
        yield broker


@pytest.fixture
def kafka_url(request: pytest.FixtureRequest, msgkit_test_brokers: TestBrokers) -> str:
    return msgkit_test_brokers.url("kafka", request.node.nodeid)


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest, msgkit_test_brokers: TestBrokers) -> str:
    return msgkit_test_brokers.url("amqp", request.node.nodeid)


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"
