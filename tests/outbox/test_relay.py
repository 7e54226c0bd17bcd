"""The relay: committed rows reach consumers byte for byte, in order per key, once per row
with several relays; rolled-back rows never; failures keep rows and block nothing else."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

import msgkit
from msgkit.errors import PublishError
from msgkit.message import Outgoing
from msgkit.outbox import Counts, Relay
from msgkit.outbox.relay import Database
from msgkit.testing import Collector, eventually
from tests.outbox.conftest import OutboxDB, Row

WAIT = 30.0
GROUP = "g"


async def _consume(broker: msgkit.Broker, topic: str) -> Collector:
    collector = Collector()
    await broker.consumer(topic, group=GROUP, start="earliest", prefetch=200).start(collector)
    return collector


async def test_committed_rows_arrive_byte_for_byte_and_rolled_back_ones_never(
    msgkit_broker: msgkit.Broker, outbox_db: OutboxDB, unique_name: str
) -> None:
    received = await _consume(msgkit_broker, unique_name)
    headers = [("trace", b"\x00\xfe"), ("tag", "a"), ("empty", None)]
    committed = await outbox_db.write([(unique_name, b"\x00\x01binary", {"key": b"\xff\x00k",
                                                                         "headers": headers}),
                                       (unique_name, {"n": 2}, {"key": "text-key"})])
    [rolled_back] = await outbox_db.write([(unique_name, "rolled back", {})], commit=False)
    [last] = await outbox_db.write([(unique_name, "after the rollback", {})])
    async with Relay(outbox_db.url, msgkit_broker, table=outbox_db.table,
                     required_groups=(GROUP,)) as relay:
        await eventually(lambda: {*committed, last} <= received.ids, timeout=WAIT,
                         message="every committed row")
        await _settled(relay)
    assert relay.published == 3, "the relay published something else"
    assert rolled_back not in received.ids and len(received.messages) == 3
    by_id = {m.id: m for m in received.messages}
    first, second, third = by_id[committed[0]], by_id[committed[1]], by_id[last]
    assert (first.value, first.key_bytes, first.headers.get("trace"), first.headers.get("tag"),
            "empty" in first.headers, first.headers.get("empty")) == (
        b"\x00\x01binary", b"\xff\x00k", b"\x00\xfe", "a", True, None)
    assert (second.value, second.key) == (b'{"n":2}', "text-key")
    assert all(m.idempotency_key == m.id for m in received.messages)
    assert third.value == b"after the rollback"


async def test_two_relays_publish_each_row_once_and_each_key_in_order(
    msgkit_broker: msgkit.Broker, outbox_db: OutboxDB, unique_name: str,
    report: collections.abc.Callable[[str], None],
) -> None:
    received = await _consume(msgkit_broker, unique_name)
    keys, per_transaction, transactions = 12, 20, 30
    relays = [Relay(outbox_db.url, msgkit_broker, table=outbox_db.table, batch_size=25, lease=5.0,
                    required_groups=(GROUP,)) for _ in range(2)]
    async with relays[0], relays[1]:
        written: list[str] = []
        for t in range(transactions):  # while both relays run
            rows: list[Row] = [(unique_name, f"{t * per_transaction + n}",
                                {"key": f"k{(t * per_transaction + n) % keys}"})
                               for n in range(per_transaction)]
            written += await outbox_db.write(rows)
        await eventually(lambda: set(written) <= received.ids, timeout=WAIT,
                         message="every row published")
        await _settled(relays[0])
    times = collections.Counter(m.id for m in received.messages)
    repeated = {i: n for i, n in times.items() if n > 1}
    report(f"two relays on {outbox_db.kind}: {len(written)} rows, published "
           f"{relays[0].published} + {relays[1].published}, {len(repeated)} twice")
    assert not repeated and relays[0].published + relays[1].published == len(written)
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for m in received.messages:
        by_key[str(m.key)].append(int(m.value))
    assert all(values == sorted(values) for values in by_key.values()), "a key's rows reordered"


async def test_a_row_no_broker_takes_is_set_aside_and_its_key_goes_on(
    memory_broker: msgkit.Broker, outbox_db: OutboxDB, unique_name: str
) -> None:
    received = await _consume(memory_broker, unique_name)
    first, bad, after = await outbox_db.write([(unique_name, "1", {"key": "k"}),
                                               ("bad topic!", "2", {"key": "k"}),
                                               (unique_name, "3", {"key": "k"})])
    relay = Relay(outbox_db.url, memory_broker, table=outbox_db.table)
    async with relay:
        await eventually(lambda: after in received.ids, timeout=WAIT, message="the row after")
        await _settled(relay, failed=1)
        assert await relay.retry_failed() == 1  # still invalid: set aside again
        await _settled(relay, failed=1)
    assert [m.id for m in received.messages] == [first, after]
    assert bad not in received.ids


async def _settled(relay: Relay, *, failed: int = 0) -> Counts:
    """The relay's counts once it marked every row it handled: a consumer can receive a row
    before the relay, which marks rows after the broker confirmed them, has marked it."""
    counts = await relay.counts()

    async def marked() -> bool:
        nonlocal counts
        counts = await relay.counts()
        return counts.pending == 0 and counts.failed == failed

    await eventually(marked, timeout=WAIT, message=f"no row pending, {failed} set aside")
    return counts


class FlakyRelay(Relay):
    """Its broker refuses the first `failures` publishes."""

    failures = 4

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self.failures:
            self.failures -= 1
            raise PublishError("broker unavailable (injected)", reason="test")
        await super().publish(messages)


async def test_failed_publishes_keep_every_row_and_each_keys_order(
    memory_broker: msgkit.Broker, outbox_db: OutboxDB, unique_name: str
) -> None:
    received = await _consume(memory_broker, unique_name)
    written = await outbox_db.write([(unique_name, f"{n}", {"key": f"k{n % 3}"}) for n in range(60)])
    relay = FlakyRelay(outbox_db.url, memory_broker, table=outbox_db.table, batch_size=10,
                       max_backoff=0.2)
    async with relay:
        await eventually(lambda: set(written) <= received.ids, timeout=WAIT,
                         message="every row published")
    assert relay.failures == 0
    assert sorted(m.id for m in received.messages) == sorted(written), "lost or repeated"
    for k in range(3):
        values = [int(m.value) for m in received.messages if m.key == f"k{k}"]
        assert values == sorted(values)


async def test_retention_keeps_published_rows_until_purged(
    memory_broker: msgkit.Broker, outbox_db: OutboxDB, unique_name: str
) -> None:
    received = await _consume(memory_broker, unique_name)
    written = await outbox_db.write([(unique_name, f"{n}", {}) for n in range(5)])
    relay = Relay(outbox_db.url, memory_broker, table=outbox_db.table, retention=3600)
    async with relay:
        await eventually(lambda: set(written) <= received.ids, timeout=WAIT, message="published")
        counts = await _settled(relay)
        assert (counts.pending, counts.published) == (0, 5)
        assert await relay.purge(older_than=3600) == 0
        assert await relay.purge() == 5


@pytest.mark.parametrize("given", ["sqlalchemy URL", "engine", "async engine"])
async def test_a_sqlalchemy_url_or_engine_names_the_outbox_database(
    memory_broker: msgkit.Broker, outbox_db: OutboxDB, unique_name: str, given: str
) -> None:
    driver = {"sqlite": "+aiosqlite" if given == "async engine" else "+pysqlite",
              "postgres": "+psycopg"}[outbox_db.kind]
    scheme, rest = outbox_db.url.split("://", 1)
    url = f"{scheme}{driver}://{rest}"
    db: Database = (url if given == "sqlalchemy URL" else
                    create_engine(url) if given == "engine" else create_async_engine(url))
    received = await _consume(memory_broker, unique_name)
    [row] = await outbox_db.write([(unique_name, "via sqlalchemy", {})])
    async with Relay(db, memory_broker, table=outbox_db.table):
        await eventually(lambda: row in received.ids, timeout=WAIT, message="published")


def test_an_engines_password_stays_out_of_the_relays_repr(memory_broker: msgkit.Broker) -> None:
    engine = create_engine("postgresql+psycopg://app:s3cret@db.example/shop")  # never connects
    relay = Relay(engine, memory_broker)
    assert "s3cret" not in repr(relay) and "db.example/shop" in repr(relay)


async def test_rabbitmq_rows_wait_for_a_queue_then_go(
    amqp_url: str, outbox_db: OutboxDB, unique_name: str
) -> None:
    """Without `required_groups` nothing is bound yet: RabbitMQ refuses the rows (NO_ROUTE);
    they wait, and go once a group's queue is bound."""
    async with msgkit.connect(amqp_url) as broker:
        [row] = await outbox_db.write([(unique_name, "early", {})])
        async with Relay(outbox_db.url, broker, table=outbox_db.table, max_backoff=0.5) as relay:
            await eventually(lambda: relay._failures > 0, timeout=WAIT, message="a refused publish")
            assert (await relay.counts()).pending == 1
            received = await _consume(broker, unique_name)
            await eventually(lambda: row in received.ids, timeout=WAIT, message="published")


async def test_kafka_a_message_over_the_size_limit_is_set_aside(
    kafka_url: str, outbox_db: OutboxDB, unique_name: str
) -> None:
    too_large, fits = await outbox_db.write([(unique_name, b"x" * 1_100_000, {"key": "k"}),
                                             (unique_name, "fits", {"key": "k"})])
    async with msgkit.connect(kafka_url) as broker:
        received = await _consume(broker, unique_name)
        async with Relay(outbox_db.url, broker, table=outbox_db.table) as relay:
            await eventually(lambda: fits in received.ids, timeout=WAIT, message="the next row")
            await _settled(relay, failed=1)
    assert too_large not in received.ids


pytestmark = pytest.mark.timeout(120)
