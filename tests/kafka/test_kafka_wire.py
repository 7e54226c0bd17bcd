"""Kafka records as msgkit messages: the fields read from headers are decoded on first use."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import confluent_kafka
import pytest

from msgkit import Message
from msgkit import headers as h
from msgkit_kafka.wire import KafkaMessage, to_message


class Record:
    """Stands in for a confluent-kafka record; counts header reads."""

    def __init__(self, headers: list[tuple[str, bytes | None]] | None) -> None:
        self._headers = headers
        self.header_reads = 0
        self.value_reads = 0

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        self.value_reads += 1
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_500)

    def headers(self) -> Any:
        self.header_reads += 1
        return self._headers


def test_headers_and_what_msgkit_reads_from_them_decode_once_on_first_use() -> None:
    record = Record([(h.MESSAGE_ID, b"m-1"), (h.ATTEMPT, b"3"), (h.IDEMPOTENCY_KEY, b"ik"),
                     ("trace", None)])
    msg = to_message(record, retried=False)
    assert isinstance(msg, KafkaMessage)
    assert (msg.topic, msg.key, msg.value) == ("orders", "k", b"v")
    assert record.header_reads == 0, "decoded before anyone asked"
    assert msg.id == "m-1"
    assert (msg.attempt, msg.idempotency_key, msg.timestamp) == (3, "ik", 1_700_000_000.5)
    assert msg.headers == {h.MESSAGE_ID: "m-1", h.ATTEMPT: "3", h.IDEMPOTENCY_KEY: "ik",
                           "trace": None}, "a null header stays null"
    assert record.header_reads == 1
    assert msg.native is record


def test_a_message_reads_nothing_from_its_record_until_a_field_is_used() -> None:
    record = Record([(h.MESSAGE_ID, b"m-1")])
    msg = to_message(record, retried=False)
    assert (record.value_reads, record.header_reads) == (0, 0)
    assert msg.value == b"v"
    assert (record.value_reads, record.header_reads) == (1, 0), "the headers stay undecoded"


def test_a_record_sent_without_an_id_is_named_by_where_kafka_stored_it() -> None:
    msg = to_message(Record(None), retried=False)
    assert msg.headers == {} and msg.id == "orders-2-41" and msg.attempt == 1


@pytest.mark.parametrize("attempt", ["²", "x", "-1", ""])
def test_a_foreign_attempt_header_reads_as_the_first_attempt(attempt: str) -> None:
    msg = to_message(Record([(h.ATTEMPT, attempt.encode())]), retried=False)
    assert msg.attempt == 1 and msg.headers[h.ATTEMPT] == attempt


def test_a_lazy_message_behaves_as_a_frozen_message() -> None:
    msg = to_message(Record([(h.MESSAGE_ID, b"m-1")]), retried=False)
    again = dataclasses.replace(msg, attempt=2, value=b"changed")
    assert (again.id, again.attempt, dict(again.headers)) == ("m-1", 2, {h.MESSAGE_ID: "m-1"})
    assert again.value == b"changed" and type(again) is Message, "a copy holds what was given"
    assert msg == to_message(Record([(h.MESSAGE_ID, b"m-1")]), retried=False)
    assert "id='m-1'" in repr(msg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.no_such_field  # type: ignore[attr-defined]  # noqa: B018


def test_copies_and_pickles_are_plain_messages_equal_to_the_original() -> None:
    record = confluent_kafka.Message(topic="orders", partition=2, offset=41, key=b"k",
                                     value=b"v", headers=[(h.MESSAGE_ID, b"m-1")])
    msg = to_message(record, retried=False)
    for other in (copy.copy(msg), copy.deepcopy(msg), pickle.loads(pickle.dumps(msg)),
                  dataclasses.replace(msg)):
        assert type(other) is Message
        assert other == msg and msg == other
        assert (other.topic, other.key, other.value, other.id) == ("orders", "k", b"v", "m-1")
    assert msg != dataclasses.replace(msg, attempt=2)
