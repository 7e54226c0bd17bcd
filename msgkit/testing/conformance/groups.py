"""Groups: competition inside a group, fan-out across groups, where a new group starts."""

from __future__ import annotations

import msgkit
from msgkit.testing.collect import Collector, eventually
from msgkit.testing.conformance.support import WAIT, requires


class GroupContract:
    async def test_each_group_receives_every_message(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        payments, emails = Collector(), Collector()
        await msgkit_broker.consumer(unique_name, group="payments").start(payments)
        await msgkit_broker.consumer(unique_name, group="emails").start(emails)
        ids = set(await msgkit_broker.producer().send_many(unique_name, [b"x"] * 50))
        await payments.wait_for(50, timeout=WAIT)
        await emails.wait_for(50, timeout=WAIT)
        assert payments.ids == ids and emails.ids == ids

    async def test_competing_consumers_share_one_copy(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "consumer_groups")
        first, second = Collector(), Collector()
        await msgkit_broker.consumer(unique_name, group="g").start(first)
        await msgkit_broker.consumer(unique_name, group="g").start(second)
        ids = set(await msgkit_broker.producer().send_many(
            unique_name, [str(i) for i in range(100)], key=lambda v: f"k{v}"
        ))
        await eventually(lambda: len(first.messages) + len(second.messages) >= 100,
                         timeout=WAIT, message="100 messages across both members")
        assert (first.ids | second.ids) == ids
        assert not (first.ids & second.ids), "a message went to two members of one group"
        assert len(first.messages) + len(second.messages) == 100

    async def test_new_group_starts_from_earliest_retained(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        requires(msgkit_broker, "replay_from_start")
        producer = msgkit_broker.producer(required_groups=("keeper",))
        old = set(await producer.send_many(unique_name, [b"old"] * 10))
        late = Collector()
        await msgkit_broker.consumer(unique_name, group="late", start="earliest").start(late)
        await late.wait_for(10, timeout=WAIT)
        assert late.ids == old

    async def test_latest_start_skips_earlier_messages(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        producer = msgkit_broker.producer(required_groups=("keeper",))
        await producer.send_many(unique_name, [b"old"] * 5)
        got = Collector()
        await msgkit_broker.consumer(unique_name, group="fresh", start="latest").start(got)
        new = set(await producer.send_many(unique_name, [b"new"] * 5))
        await got.wait_for(5, timeout=WAIT)
        assert got.ids == new

    async def test_consumer_without_group_gets_messages_published_while_it_runs(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector()
        await msgkit_broker.consumer(unique_name).start(got)
        ids = set(await msgkit_broker.producer().send_many(unique_name, [b"x"] * 10))
        await got.wait_for(10, timeout=WAIT)
        assert got.ids == ids

