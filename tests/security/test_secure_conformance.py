"""The whole conformance suite (dead letters, retries, the failure policy, dedup, ...) over
the secure connections: Kafka with SASL_SSL (SCRAM-SHA-512, ACLs on) and RabbitMQ over TLS
with a user limited to its virtual host and the `t-` names."""

from __future__ import annotations

import pytest

from msgkit.testing.conformance import ConformanceSuite


@pytest.mark.parametrize("msgkit_url", ["kafka-sasl-ssl", "amqps"], indirect=True)
class TestConformanceOverSecureConnections(ConformanceSuite):
    @pytest.fixture
    def msgkit_url(self, request: pytest.FixtureRequest) -> str:
        fixture = {"kafka-sasl-ssl": "kafka_sasl_url", "amqps": "amqps_url"}[request.param]
        return str(request.getfixturevalue(fixture))
