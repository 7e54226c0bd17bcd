"""msgkit's RabbitMQ mapping as AsyncAPI 3.0 bindings (AMQP bindings 0.3.0): a durable topic
exchange per channel, the message key as routing key, persistent mandatory publishes and
acknowledged deliveries."""

from __future__ import annotations

from typing import Any

VERSION = "0.3.0"


def bindings(vhost: str, part: str, topic: str, group: str | None) -> dict[str, Any]:
    if part == "channel":
        exchange = {"name": topic, "type": "topic", "durable": True, "autoDelete": False,
                    "vhost": vhost}
        return {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": VERSION}}
    if part == "receive":
        return {"amqp": {"ack": True, "bindingVersion": VERSION}}
    if part == "send":
        return {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": VERSION}}
    return {}
