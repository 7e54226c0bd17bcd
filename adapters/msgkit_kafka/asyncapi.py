"""msgkit's Kafka mapping as AsyncAPI 3.0 bindings (Kafka bindings 0.5.0): a topic per
channel, a consumer group per receiving operation, the message key as a string."""

from __future__ import annotations

from typing import Any

from msgkit_kafka.config import ClientConfigs, Settings

VERSION = "0.5.0"
SECURE = ("SSL", "SASL_SSL")


def protocol(configs: ClientConfigs) -> str:
    secure = str(configs.for_kind("producer").get("security.protocol", "")).upper() in SECURE
    return "kafka-secure" if secure else "kafka"


def bindings(settings: Settings, part: str, topic: str, group: str | None) -> dict[str, Any]:
    if part == "channel":
        # what msgkit creates a missing topic with; an existing topic keeps its own
        channel: dict[str, Any] = {"topic": topic, "partitions": settings.partitions}
        if settings.replication_factor > 0:
            channel["replicas"] = settings.replication_factor
        return {"kafka": {**channel, "bindingVersion": VERSION}}
    if part == "receive" and group is not None:
        return {"kafka": {"groupId": {"type": "string", "enum": [group]},
                          "bindingVersion": VERSION}}
    if part == "message":
        return {"kafka": {"key": {"type": "string"}, "bindingVersion": VERSION}}
    return {}
