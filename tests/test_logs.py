"""Logs an operator can read: repeats of one cause are summarised with exact counts, a
traceback is written once per cause, and JSON lines carry the message id, topic and group."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from prometheus_client import CollectorRegistry

import msgkit
from msgkit.jsonlog import JsonFormatter
from msgkit.logs import BURST, SUMMARISE, get_logger
from msgkit.metrics import Metrics
from msgkit.testing import Collector, eventually

POISON = 2000


async def test_poison_messages_write_a_few_lines_and_count_every_one(
    unique_name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SUMMARISE, "window", 1.0)
    caplog.set_level(logging.WARNING, logger="msgkit")
    registry = CollectorRegistry()
    async with msgkit.connect(f"memory://{unique_name}", instruments=[Metrics(registry)]) as broker:
        poisoned = Collector(fail=lambda msg: True)
        policy = msgkit.FailurePolicy(max_attempts=1, delays=())
        await broker.consumer(unique_name, group="g", failure=policy).start(poisoned)
        producer = broker.producer()
        await producer.send_many(unique_name, [b"poison"] * POISON)

        def dead_lettered() -> float:
            return registry.get_sample_value("msgkit_handled_messages_total", {
                "system": "memory", "topic": unique_name, "group": "g",
                "outcome": "dead_lettered"}) or 0.0

        await eventually(lambda: dead_lettered() == POISON, timeout=30)
        await asyncio.sleep(SUMMARISE.window)  # a quiet spell: the next line sums it up
        await producer.send(unique_name, b"poison")
        await eventually(lambda: dead_lettered() == POISON + 1, timeout=30)
    lines = [r.getMessage() for r in caplog.records if "dead-lettered to" in r.getMessage()]
    left_out = sum(int(n) for line in lines for n in re.findall(r"and (\d+) more like it", line))
    print(f"\n    {POISON + 1} dead letters: {len(lines)} log lines, {left_out} left out")
    assert len(lines) <= 3 * BURST
    assert len(lines) + left_out == POISON + 1  # every one accounted for


def test_a_cause_writes_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("msgkit.test_logs")
    caplog.set_level(logging.WARNING, logger="msgkit")
    for _ in range(3):
        try:
            raise ConnectionError("redis://:hunter2@cache:6379 is down")
        except ConnectionError:
            log.exception("could not reach the store")
    tracebacks = [r for r in caplog.records if r.exc_info or r.exc_text]
    assert len(tracebacks) == 1
    assert [r.getMessage().endswith("; traceback as before)") for r in caplog.records] == \
        [False, True, True]
    assert "ConnectionError: redis://:***@cache:6379 is down" in caplog.records[1].getMessage()
    assert "hunter2" not in caplog.text


def test_json_lines_carry_the_message_fields() -> None:
    record = logging.LogRecord("msgkit.consumer", logging.WARNING, __file__, 1,
                               "handler failed on message %s", ("m-1",), None)
    record.__dict__.update(message_id="m-1", topic="orders", group="payments", attempt=2)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "handler failed on message m-1"
    assert (line["message_id"], line["topic"], line["group"], line["attempt"]) == \
        ("m-1", "orders", "payments", 2)
    assert line["level"] == "warning" and line["logger"] == "msgkit.consumer"
