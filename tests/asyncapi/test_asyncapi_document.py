"""`msgkit.asyncapi.document`: a service's declarations as an AsyncAPI 3.0 document that the
official schema accepts, on every backend; no broker is reached."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, create_model

import msgkit
from msgkit.asyncapi import document, render
from msgkit.dedup import Dedup
from tests.asyncapi.asyncapi_schema import errors

URLS = {"memory": "memory://", "kafka": "kafka://alice:s3cret@k1:9092,k2:9092",
        "amqp": "amqps://alice:s3cret@rabbit:5671/shop"}


class Line(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    order_id: str
    lines: list[Line]


class Invoice(BaseModel):
    order_id: str
    total: float


@dataclass
class Audit:
    who: str


def service(url: str) -> msgkit.Broker:
    """Every handler shape: a model with its context, a batch, raw messages, text."""
    broker = msgkit.connect(url)
    broker.publishes("orders", Order, summary="The shop's checkout")

    @broker.subscriber("orders", group="billing", dedup=Dedup("memory://"))
    @broker.publishes("invoices", Invoice)
    async def bill(order: Order, ctx: msgkit.Context) -> None:
        """Bills each order.

        Once per idempotency key."""

    @broker.subscriber("orders", group="audit", batch=10,
                       failure=msgkit.FailurePolicy(dead_letter=False))
    async def audit(orders: list[Order]) -> None: ...

    @broker.subscriber("raw.bytes")
    async def raw(msg: msgkit.Message) -> None: ...

    @broker.subscriber("notes", group="readers")
    async def note(text: str) -> None: ...

    @broker.subscriber("audits", group="keepers")
    async def keep(entry: Audit) -> None: ...

    return broker


@pytest.fixture(params=list(URLS))
def contract(request: pytest.FixtureRequest) -> dict[str, Any]:
    return document(service(URLS[request.param]), title="shop", version="2.1.0")


def _kind(doc: dict[str, Any]) -> str:
    servers: dict[str, Any] = doc.get("servers", {"memory": None})
    return next(iter(servers))


def test_the_document_validates_against_the_asyncapi_3_schema(contract: dict[str, Any]) -> None:
    assert errors(contract) == []
    assert contract["asyncapi"] == "3.0.0"
    assert contract["info"] == {"title": "shop", "version": "2.1.0"}


def test_a_broken_document_fails_the_check(contract: dict[str, Any]) -> None:
    contract["operations"]["bill"]["action"] = "consume"
    contract["operations"]["raw"]["channel"] = {"$ref": "#/channels/nowhere"}
    found = errors(contract)
    assert any("consume" in e for e in found) and "unresolved $ref #/channels/nowhere" in found


def test_each_subscriber_receives_its_payload_from_its_topic(contract: dict[str, Any]) -> None:
    channels, operations = contract["channels"], contract["operations"]
    messages = contract["components"]["messages"]
    expected = {"bill": ("orders", "Order"), "audit": ("orders", "Order"),
                "raw": ("raw.bytes", "Bytes"), "note": ("notes", "Text"),
                "keep": ("audits", "Audit")}
    for name, (topic, message) in expected.items():
        operation = operations[name]
        assert operation["action"] == "receive"
        assert channels[operation["channel"]["$ref"].split("/")[-1]]["address"] == topic
        assert operation["messages"] == [{"$ref": f"#/channels/{topic}/messages/{message}"}]
    assert messages["Bytes"]["contentType"] == "application/octet-stream"
    assert messages["Text"]["contentType"].startswith("text/plain")
    assert messages["Order"]["contentType"] == "application/json"
    assert operations["bill"]["summary"] == "Bills each order."
    assert operations["bill"]["description"] == "Once per idempotency key."
    assert operations["bill"]["x-msgkit"]["deduplicated"] is True
    assert operations["audit"]["x-msgkit"]["batch"] == 10


def test_payload_schemas_come_from_the_models_nested_ones_included(
    contract: dict[str, Any],
) -> None:
    schemas = contract["components"]["schemas"]
    assert contract["components"]["messages"]["Order"]["payload"] == {
        "$ref": "#/components/schemas/Order"}
    assert schemas["Order"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert set(schemas["Line"]["required"]) == {"sku", "quantity"}
    assert schemas["Audit"]["properties"]["who"]["type"] == "string"


def test_declared_publications_are_send_operations(contract: dict[str, Any]) -> None:
    operations = contract["operations"]
    by_handler = operations["bill_sends_to_invoices"]
    assert by_handler["action"] == "send" and by_handler["description"] == "Sent by the handler bill."
    assert by_handler["messages"] == [{"$ref": "#/channels/invoices/messages/Invoice"}]
    by_service = operations["service_sends_to_orders"]
    assert by_service["summary"] == "The shop's checkout"
    assert by_service["channel"] == {"$ref": "#/channels/orders"}


def test_dead_letter_topics_are_channels_unless_dead_lettering_is_off(
    contract: dict[str, Any],
) -> None:
    channels = contract["channels"]
    assert "orders.billing.dlq" in channels and "orders.audit.dlq" not in channels
    assert "raw.bytes.dlq" in channels  # a consumer without a group
    dead = contract["components"]["messages"]["OrderDeadLetter"]
    assert "msgkit-dlq-exception-type" in dead["headers"]["properties"]
    assert dead["payload"] == contract["components"]["messages"]["Order"]["payload"]
    assert contract["operations"]["bill_dead_letters"]["action"] == "send"


def test_each_broker_adds_its_bindings_and_servers(contract: dict[str, Any]) -> None:
    orders = contract["channels"]["orders"]
    bill = contract["operations"]["bill"]
    kind = _kind(contract)
    if kind == "memory":
        assert "servers" not in contract and "bindings" not in orders and "bindings" not in bill
    elif kind.startswith("kafka"):
        # credentials in the URL: msgkit connects with SASL_SSL, so the servers are secure
        assert contract["servers"] == {
            "kafka-1": {"host": "k1:9092", "protocol": "kafka-secure"},
            "kafka-2": {"host": "k2:9092", "protocol": "kafka-secure"}}
        assert orders["bindings"]["kafka"]["topic"] == "orders"
        assert bill["bindings"]["kafka"]["groupId"] == {"type": "string", "enum": ["billing"]}
        assert contract["components"]["messages"]["Order"]["bindings"]["kafka"]["key"]
    else:
        assert contract["servers"] == {"amqps": {"host": "rabbit:5671", "protocol": "amqps",
                                                 "pathname": "/shop"}}
        exchange = orders["bindings"]["amqp"]["exchange"]
        assert exchange == {"name": "orders", "type": "topic", "durable": True,
                            "autoDelete": False, "vhost": "shop"}
        assert bill["bindings"]["amqp"]["ack"] is True
        send = contract["operations"]["bill_sends_to_invoices"]["bindings"]["amqp"]
        assert send["deliveryMode"] == 2 and send["mandatory"] is True


def test_yaml_and_json_say_the_same_and_hold_no_password(contract: dict[str, Any]) -> None:
    as_yaml, as_json = render(contract, "yaml"), render(contract, "json")
    assert yaml.safe_load(as_yaml) == json.loads(as_json) == contract
    assert "s3cret" not in as_yaml and "alice" not in as_json


def test_every_member_of_a_group_is_one_operation() -> None:
    broker = msgkit.connect("memory://")

    async def work(msg: msgkit.Message) -> None: ...

    for _ in range(3):
        broker.subscriber("jobs", group="workers")(work)
    broker.subscriber("jobs", group="auditors")(work)
    receives = [name for name, op in document(broker)["operations"].items()
                if op["action"] == "receive"]
    assert receives == ["work", "work_2"]


def test_an_unknown_format_says_which_exist() -> None:
    with pytest.raises(msgkit.ConfigurationError, match="yaml, json"):
        render(document(msgkit.connect("memory://")), "toml")



OtherOrder = create_model("Order", total=(float, ...))
"""Another module's `Order`: the same name, another type."""


def test_two_types_of_one_name_get_two_messages_and_one_type_one() -> None:
    broker = msgkit.connect("memory://")

    async def a(order: Order) -> None: ...

    async def b(order: OtherOrder) -> None: ...  # type: ignore[valid-type]

    async def c(order: Order) -> None: ...

    for topic, handler in (("one", a), ("two", b), ("three", c)):
        broker.subscriber(topic, group="g")(handler)
    contract = document(broker)
    messages = contract["components"]["messages"]
    assert {n for n in messages if "DeadLetter" not in n} == {"Order", "Order_2"}
    assert contract["channels"]["three"]["messages"] == {
        "Order": {"$ref": "#/components/messages/Order"}}


def test_a_decorator_declaration_names_its_own_handler_beside_an_equal_one() -> None:
    broker = msgkit.connect("memory://")
    broker.publishes("invoices", Invoice)

    @broker.publishes("invoices", Invoice)
    async def bill(order: Order) -> None: ...

    assert [p.handler for p in broker.publications] == [None, bill]
