"""Builds an AsyncAPI 3.0 document from a broker's `@subscriber`s and `publishes` declarations.

Channels are topics (and the dead-letter topics of subscribers that dead-letter), operations
are the subscribers (`receive`) and the declared publications (`send`), messages carry the
handlers' payload schemas; the backend adds its broker's bindings.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from msgkit import headers as h
from msgkit.asyncapi.payloads import Payload, component_key, payload
from msgkit.handler import Handler, payload_type

if TYPE_CHECKING:
    from msgkit.broker import Broker
    from msgkit.consumer import Consumer
    from msgkit.contract import Publication

SPEC_VERSION = "3.0.0"


def _header(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


HEADERS: dict[str, Any] = {
    h.MESSAGE_ID: _header("Unique id of the message, set by msgkit on send."),
    h.IDEMPOTENCY_KEY: _header("Consumers with dedup= act once per key."),
    h.ATTEMPT: _header("Delivery attempt, from 1; set on retry copies."),
    h.CONTENT_TYPE: _header("How the payload is encoded."),
}
DEAD_LETTER_HEADERS: dict[str, Any] = {
    h.DLQ_ORIGINAL_TOPIC: _header("Topic the message failed on."),
    h.DLQ_GROUP: _header("Group whose handler failed."),
    h.DLQ_EXCEPTION_TYPE: _header("Qualified name of the last exception."),
    h.DLQ_EXCEPTION_MESSAGE: _header("Its message (credentials redacted)."),
    h.DLQ_TRACEBACK: _header("Its traceback (credentials redacted)."),
    h.DLQ_ATTEMPTS: _header("Deliveries tried."),
    h.DLQ_LAST_FAILURE_AT: _header("When the last try failed (Unix seconds)."),
}


def document(broker: Broker, *, title: str = "msgkit service", version: str = "1.0.0",
             description: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of what `broker` declares (as a dict; `render` writes it)."""
    contract = _Contract(broker)
    for consumer, handler in broker.subscribers:
        contract.subscriber(consumer, handler)
    for publication in broker.publications:
        contract.publication(publication)
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    result: dict[str, Any] = {"asyncapi": SPEC_VERSION, "info": info,
                              "defaultContentType": h.JSON}
    servers = _servers(broker)
    if servers:
        result["servers"] = servers
    result["channels"] = contract.channels
    result["operations"] = contract.operations
    result["components"] = {"messages": contract.messages, "schemas": contract.schemas}
    return result


class _Contract:
    def __init__(self, broker: Broker) -> None:
        self.backend = broker.backend
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self._channel_of: dict[str, str] = {}
        self._members: set[tuple[Handler, str, str | None]] = set()
        self._message_names: dict[str, str] = {}

    def subscriber(self, consumer: Consumer, handler: Handler) -> None:
        member = (handler, consumer.topic, consumer.group)
        if member in self._members:  # one more member of a group: the same operation
            return
        self._members.add(member)
        described = self._payload(payload_type(handler, batch=consumer.batch is not None))
        message = self._message(described)
        channel = self._channel(consumer.topic, message)
        summary, details = _doc(handler)
        extension: dict[str, Any] = {"group": consumer.group, "guarantee": consumer.guarantee.value,
                                     "concurrency": consumer.concurrency,
                                     "deduplicated": consumer.dedup is not None}
        if consumer.batch is not None:
            extension["batch"] = consumer.batch
        name = self._operation(_name(handler), "receive", channel, message,
                               summary or f"Handles {consumer.topic}", details,
                               self.backend.asyncapi_bindings("receive", consumer.topic,
                                                              consumer.group))
        self.operations[name]["x-msgkit"] = extension
        policy = consumer.failure
        if policy.dead_letter:
            topic = policy.dead_letter_topic(consumer.topic, consumer.group)
            dead = self._message(described, dead_letter=True)
            self._operation(f"{name}_dead_letters", "send", self._channel(topic, dead), dead,
                            f"Dead letters of {name}",
                            f"What {name} failed to handle after {policy.deliveries} "
                            "deliveries, with msgkit-dlq-* headers saying why; `msgkit dlq` "
                            "lists and replays them.",
                            self.backend.asyncapi_bindings("send", topic))

    def publication(self, publication: Publication) -> None:
        message = self._message(self._payload(publication.payload))
        channel = self._channel(publication.topic, message)
        by = _name(publication.handler) if publication.handler is not None else None
        name = f"{by or 'service'}_sends_to_{channel}"
        self._operation(name, "send", channel, message,
                        publication.summary or f"Sends {message} to {publication.topic}",
                        f"Sent by the handler {by}." if by else None,
                        self.backend.asyncapi_bindings("send", publication.topic))

    def _channel(self, topic: str, message: str) -> str:
        key = self._channel_of.get(topic)
        if key is None:
            key = _unique(component_key(topic), self.channels)
            self._channel_of[topic] = key
            channel: dict[str, Any] = {"address": topic, "messages": {}}
            bindings = self.backend.asyncapi_bindings("channel", topic)
            if bindings:
                channel["bindings"] = bindings
            self.channels[key] = channel
        self.channels[key]["messages"][message] = {"$ref": f"#/components/messages/{message}"}
        return key

    def _payload(self, kind: Any) -> Payload:
        """`kind` described, under a numbered schema name if another type has its name."""
        described = payload(kind)
        taken = self.schemas.get(described.name)
        if taken is not None and taken != described.definitions.get(described.name, taken):
            described = payload(kind, _unique(described.name, self.schemas))
        return described

    def _message(self, described: Payload, *, dead_letter: bool = False) -> str:
        """The name of the message `described` (a dead letter of it): the same content gets
        the same name, another type of the same name a numbered one."""
        headers = {**HEADERS, **(DEAD_LETTER_HEADERS if dead_letter else {})}
        message: dict[str, Any] = {
            "contentType": described.content_type,
            "headers": {"type": "object", "properties": headers},
            "payload": described.schema,
        }
        bindings = self.backend.asyncapi_bindings("message", "")
        if bindings:
            message["bindings"] = bindings
        content = json.dumps(message, sort_keys=True)
        name = self._message_names.get(content)
        if name is None:
            name = _unique(f"{described.name}DeadLetter" if dead_letter else described.name,
                           self.messages)
            self._message_names[content] = name
            self.messages[name] = {"name": name, "title": name, **message}
            for key, schema in described.definitions.items():
                self.schemas.setdefault(key, schema)
        return name

    def _operation(self, name: str, action: str, channel: str, message: str, summary: str,
                   description: str | None, bindings: dict[str, Any]) -> str:
        name = _unique(name, self.operations)
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
            "summary": summary,
        }
        if description:
            operation["description"] = description
        if bindings:
            operation["bindings"] = bindings
        self.operations[name] = operation
        return name


def _servers(broker: Broker) -> dict[str, Any]:
    protocol = broker.backend.asyncapi_protocol
    if protocol is None:
        return {}
    url = broker.backend.url
    servers: dict[str, Any] = {}
    for n, (host, port) in enumerate(url.hosts, 1):
        server: dict[str, Any] = {"host": f"{host}:{port}" if port else host,
                                  "protocol": protocol}
        if url.path:
            server["pathname"] = f"/{url.path}"
        servers[f"{url.scheme}-{n}" if len(url.hosts) > 1 else url.scheme] = server
    return servers


def _doc(handler: Handler) -> tuple[str | None, str | None]:
    text = inspect.getdoc(handler)
    if not text:
        return None, None
    summary, _, rest = text.partition("\n")
    return summary.strip(), rest.strip() or None


def _name(handler: Handler) -> str:
    return component_key(getattr(handler, "__name__", type(handler).__name__))


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate
