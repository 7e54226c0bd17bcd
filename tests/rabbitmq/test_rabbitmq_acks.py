"""Ack coalescing: a multiple ack never covers an unsettled or an already acked tag."""

from __future__ import annotations

import random
from typing import cast

import aiormq

from msgkit_rabbitmq.acks import AckBatcher


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append((delivery_tag, multiple))


def _batcher(tags: range) -> tuple[AckBatcher, FakeChannel]:
    channel = FakeChannel()
    batcher = AckBatcher(cast(aiormq.abc.AbstractChannel, channel))
    for tag in tags:
        batcher.delivered(tag)
    return batcher, channel


def _settled(sent: list[tuple[int, bool]], delivered: range) -> list[int]:
    """Which delivery tags the broker considers acked after `sent`, checking each ack is valid."""
    outstanding = set(delivered)
    for tag, multiple in sent:
        assert tag in outstanding, f"ack of {tag}, which is not outstanding"
        covered = {t for t in outstanding if t <= tag} if multiple else {tag}
        outstanding -= covered
    return sorted(set(delivered) - outstanding)


async def test_in_order_acks_of_one_turn_become_one_frame() -> None:
    batcher, channel = _batcher(range(1, 6))
    for tag in range(1, 6):
        batcher.ack(tag)
    await batcher.flush()
    assert channel.sent == [(5, True)]


async def test_acks_behind_an_unsettled_delivery_go_one_by_one() -> None:
    delivered = range(1, 8)
    batcher, channel = _batcher(delivered)
    for tag in (2, 3, 5):
        batcher.ack(tag)
    await batcher.flush()
    assert _settled(channel.sent, delivered) == [2, 3, 5]
    for tag in (1, 4):  # now 1..5 are settled: one multiple ack up to the fresh 4
        batcher.ack(tag)
    await batcher.flush()
    assert _settled(channel.sent, delivered) == [1, 2, 3, 4, 5]
    assert channel.sent[-1] == (4, True)
    batcher.ack(7)
    await batcher.flush()
    assert _settled(channel.sent, delivered) == [1, 2, 3, 4, 5, 7]


async def test_many_turns_any_order_settle_exactly_what_was_acked() -> None:
    rng = random.Random(7)
    delivered = range(1, 201)
    batcher, channel = _batcher(delivered)
    order = list(delivered)
    rng.shuffle(order)
    acked: list[int] = []
    while order:
        for _ in range(rng.randint(1, 9)):
            if order:
                acked.append(order.pop())
                batcher.ack(acked[-1])
        await batcher.flush()
        assert _settled(channel.sent, delivered) == sorted(acked)
    assert len(channel.sent) < 200
