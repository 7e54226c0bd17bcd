"""No Docker engine runs on the project's machines, so the compose file is checked as data."""

from pathlib import Path
from typing import Any

import yaml

from msgkit_kafka.kafka_jars import kafka_version

COMPOSE = Path(__file__).parent.parent / "docker-compose.yml"


def _services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = data["services"]
    return services


def test_every_service_has_an_image_a_health_check_and_the_expected_ports() -> None:
    expected = {
        "kafka": ("apache/kafka", "9092:9092"),
        "rabbitmq": ("rabbitmq", "5672:5672"),
        "redis": ("redis", "6379:6379"),
        "postgres": ("postgres", "5432:5432"),
    }
    services = _services()
    for name, (image, port) in expected.items():
        service = services[name]
        assert service["image"].startswith(f"{image}:"), name
        assert port in service["ports"], name
        assert service["healthcheck"]["test"], name
    assert "management" in services["rabbitmq"]["image"]


def test_kafka_runs_in_kraft_mode_with_a_three_broker_profile() -> None:
    services = _services()
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    cluster = [services[f"kafka-{n}"] for n in (1, 2, 3)]
    assert all(node["profiles"] == ["kafka-cluster"] for node in cluster)
    voters = cluster[0]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters.count("@") == 3
    assert {node["environment"]["KAFKA_NODE_ID"] for node in cluster} == {1, 2, 3}


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    services = _services()
    kafkas = [s for name, s in services.items() if name.startswith("kafka")]
    assert {s["image"] for s in kafkas} == {f"apache/kafka:{kafka_version()}"}
