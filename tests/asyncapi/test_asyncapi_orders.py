"""`msgkit asyncapi` on the examples: the order flow's document lists every channel and
message the running flow uses (every message it sent fits its schema) and is committed as
`examples/orders/asyncapi.yaml`; each example service has a valid contract."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.orders.flow import run
from msgkit.instrument import Instrument, PublishObservation
from msgkit.message import Outgoing
from tests.asyncapi.asyncapi_schema import errors, payload_errors

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = re.compile(r"^(shop\.[a-z_]+)\.[0-9a-f]{8}(\..+)?$")
"""A run's topic `shop.<name>.<suffix>[.<group>.dlq]`, as the contract names it."""


class Sent(Instrument):
    """Every message the flow publishes, dead letters included."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    def publishing(self, system: str, messages: Sequence[Outgoing], *, copies: bool
                   ) -> PublishObservation | None:
        self.messages.extend(messages)
        return None


def contract_topic(topic: str) -> str:
    match = SUFFIX.match(topic)
    assert match, f"the flow used {topic!r}, which is not one of its shop topics"
    return match[1] + (match[2] or "")


def asyncapi(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MSGKIT_URL"}  # memory://: no servers
    return subprocess.run([sys.executable, "-m", "msgkit.cli", "asyncapi", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)


async def test_the_contract_lists_every_channel_and_message_the_flow_uses(
    tmp_path: Path,
) -> None:
    out = tmp_path / "orders.json"
    done = asyncapi("examples.orders.contract:broker", "--format", "json", "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    contract: dict[str, Any] = json.loads(out.read_text())
    assert errors(contract) == []

    sent = Sent()
    await run("memory://", db=f"sqlite:///{tmp_path / 'orders.db'}", quiet=True,
              instruments=[sent])
    channels = {c["address"]: c for c in contract["channels"].values()}
    messages = contract["components"]["messages"]
    used: set[str] = set()
    for message in sent.messages:
        topic = contract_topic(message.topic)
        used.add(topic)
        assert topic in channels, f"{topic} is missing from the contract"
        allowed = [messages[ref["$ref"].split("/")[-1]]
                   for ref in channels[topic]["messages"].values()]
        value = json.loads(message.value)
        assert any(not payload_errors(contract, m, value) for m in allowed), \
            f"{value} sent to {topic} fits none of {[m['name'] for m in allowed]}"
    receiving = {channels_address(contract, op) for op in contract["operations"].values()
                 if op["action"] == "receive"}
    assert receiving <= used, f"subscribed but never used by the flow: {receiving - used}"
    assert "shop.orders.receipts.dlq" in used, "the flow's dead letter is in the contract"


def channels_address(contract: dict[str, Any], operation: dict[str, Any]) -> str:
    address: str = contract["channels"][operation["channel"]["$ref"].split("/")[-1]]["address"]
    return address


def test_yaml_on_stdout_describes_the_module() -> None:
    done = asyncapi("examples.orders.contract:broker")
    assert done.returncode == 0, done.stderr
    contract = yaml.safe_load(done.stdout)
    assert contract["info"]["title"] == "examples.orders.contract"
    assert "The order flow's contract" in contract["info"]["description"]
    assert errors(contract) == []
    actions = [op["action"] for op in contract["operations"].values()]
    dead_letters = [name for name in contract["operations"] if name.endswith("_dead_letters")]
    # the figures docs/pages/guides/asyncapi.md gives
    assert (len(contract["channels"]), actions.count("receive"),
            actions.count("send") - len(dead_letters)) == (15, 8, 10)
    assert {m for m in contract["components"]["messages"] if "DeadLetter" not in m} == {
        "OrderPlaced", "PaymentProcessed", "StockReserved", "Command", "Reply"}


def test_a_target_that_cannot_load_fails_with_a_message_not_a_traceback() -> None:
    done = asyncapi("examples.orders.contract:nothing_here")
    assert done.returncode == 1
    assert "has no attribute 'nothing_here'" in done.stdout and "Traceback" not in done.stdout


def test_the_committed_orders_contract_is_what_the_code_declares() -> None:
    done = asyncapi("examples.orders.contract:broker")
    assert done.returncode == 0, done.stderr
    committed = (ROOT / "examples" / "orders" / "asyncapi.yaml").read_text()
    assert done.stdout == committed, ("examples/orders/asyncapi.yaml is stale: run msgkit "
                                      "asyncapi examples.orders.contract:broker -o "
                                      "examples/orders/asyncapi.yaml")


@pytest.mark.parametrize("target, receives, sends", [
    ("examples.payments_service:broker", {"charge"}, set()),
    ("examples.shop_api:broker", {"receipt"}, {"service_sends_to_shop.orders"}),
])
def test_each_example_service_has_a_valid_contract(
    target: str, receives: set[str], sends: set[str]
) -> None:
    done = asyncapi(target, "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    contract = json.loads(done.stdout)
    assert errors(contract) == []
    operations = contract["operations"]
    assert {n for n, op in operations.items() if op["action"] == "receive"} == receives
    assert {n for n, op in operations.items()
            if op["action"] == "send" and not n.endswith("_dead_letters")} == sends
