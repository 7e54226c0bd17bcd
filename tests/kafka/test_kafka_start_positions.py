"""Reading where a partition ends, right after its topic was created: no broker needed."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from msgkit_kafka.poller import Poller


class _LeaderlessFor:
    """A consumer whose partition has no leader for its first `misses` queries."""

    def __init__(self, misses: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION) -> None:
        self.misses, self.code, self.calls = misses, code, 0

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.misses:
            raise KafkaException(KafkaError(self.code))
        return 0, 42


def _poller(consumer: Any, timeout: float = 5.0) -> Poller:
    poller = Poller.__new__(Poller)
    poller.consumer, poller.timeout = consumer, timeout
    return poller


def test_the_end_is_read_once_the_new_partition_has_a_leader() -> None:
    consumer = _LeaderlessFor(3)
    assert _poller(consumer)._high_watermark("t", 0) == 42
    assert consumer.calls == 4


def test_a_partition_without_a_leader_past_the_timeout_raises() -> None:
    with pytest.raises(KafkaException):
        _poller(_LeaderlessFor(10**6), timeout=0.2)._high_watermark("t", 0)


def test_other_errors_are_not_retried() -> None:
    consumer = _LeaderlessFor(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        _poller(consumer)._high_watermark("t", 0)
    assert consumer.calls == 1
