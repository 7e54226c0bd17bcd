"""Brokers with security on, one of each per session, beside the plain test brokers:
certificates made for the session, a TLS RabbitMQ node and a SASL_SSL / mutual-TLS Apache
Kafka with the standard authorizer (see `msgkit_rabbitmq.secure_rabbit` and
`msgkit_kafka.secure_kafka` for their users and permissions)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import unavailable
from msgkit.testing.certs import TestCertificates, make_certificates
from msgkit_kafka.secure_kafka import SecureKafka
from msgkit_kafka.testing import LOCAL_QUERY, with_query
from msgkit_rabbitmq.secure_rabbit import SecureRabbit


@pytest.fixture(scope="session")
def certs() -> Iterator[TestCertificates]:
    # Not under pytest's tmp folder: that is private to root, and RabbitMQ reads the files
    # as its own user.
    directory = Path(tempfile.mkdtemp(prefix="msgkit-certs-"))
    yield make_certificates(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def secure_kafka(certs: TestCertificates) -> Iterator[SecureKafka]:
    try:
        kafka = SecureKafka(certs)
    except BrokerUnavailableError as exc:
        unavailable(f"no local Apache Kafka with SASL_SSL: {exc}")
    yield kafka
    kafka.stop()


@pytest.fixture(scope="session")
def secure_rabbit(certs: TestCertificates) -> Iterator[SecureRabbit]:
    try:
        rabbit = SecureRabbit(certs)
    except BrokerUnavailableError as exc:
        unavailable(f"no local RabbitMQ node with TLS: {exc}")
    yield rabbit
    rabbit.stop()


@pytest.fixture
def kafka_sasl_url(secure_kafka: SecureKafka) -> str:
    """alice over SASL_SSL, with the suite's short group timeouts."""
    return with_query(secure_kafka.url(), LOCAL_QUERY)


@pytest.fixture
def amqps_url(secure_rabbit: SecureRabbit) -> str:
    return secure_rabbit.url()
