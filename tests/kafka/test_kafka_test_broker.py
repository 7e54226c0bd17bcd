"""Which Kafka the test kit picks: Apache Kafka first; Tansu only outside CI, with a warning."""

from __future__ import annotations

import pytest

from msgkit.errors import BrokerUnavailableError
from msgkit_kafka import testing


def _no_local_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither Java nor Docker here."""
    def refuse(*args: object) -> None:
        raise BrokerUnavailableError("no java on PATH")

    monkeypatch.setattr(testing, "LocalKafka", refuse)
    monkeypatch.setattr(testing.KafkaTestBroker, "_start_container", refuse)
    monkeypatch.delenv("MSGKIT_TEST_KAFKA_URL", raising=False)


def test_ci_refuses_the_tansu_fallback_and_says_how_to_get_apache_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_local_kafka(monkeypatch)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BrokerUnavailableError, match="Install Java 17") as refused:
        testing.KafkaTestBroker().start()
    assert "no java on PATH" in str(refused.value)
    assert "CI does not accept the Tansu fallback" in str(refused.value)


def test_without_java_or_docker_tests_fall_back_to_tansu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_local_kafka(monkeypatch)
    monkeypatch.delenv("CI", raising=False)
    broker = testing.KafkaTestBroker()
    with pytest.warns(UserWarning, match="Tansu, a Kafka-protocol stand-in"):
        url = broker.start()
    try:
        assert "consumer.session.timeout.ms=2000" in url
    finally:
        broker.stop()


def test_ci_refuses_a_given_url_that_is_tansu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MSGKIT_TEST_KAFKA_URL", "kafka://127.0.0.1:9092")
    monkeypatch.setattr(testing, "is_tansu", lambda url: True)
    with pytest.raises(BrokerUnavailableError, match="points at Tansu; CI needs Apache Kafka"):
        testing.KafkaTestBroker().start()


def test_a_given_url_is_used_as_is_with_sessions_every_broker_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("MSGKIT_TEST_KAFKA_URL", "kafka://kafka.example:9092?acks=all")
    url = testing.KafkaTestBroker().start()
    assert url.startswith("kafka://kafka.example:9092?acks=all&")
    assert "consumer.session.timeout.ms=6000" in url
