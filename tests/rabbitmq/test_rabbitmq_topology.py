"""RabbitMQ adapter: URLs, names, topology, unroutable messages and required groups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

import msgkit
from msgkit.testing import Collector
from msgkit_rabbitmq import RabbitMQBackend

QueueState = Callable[[str], Awaitable["tuple[int, int] | None"]]
RedeclareFails = Callable[[str, dict[str, Any]], Awaitable[bool]]


@pytest.mark.parametrize("name", [
    "amq.orders", "has space", "slash/name", "é", "x" * 256, ".", "star*",
])
def test_invalid_names_are_rejected_before_any_network_call(name: str) -> None:
    broker = msgkit.connect("amqp://guest:guest@127.0.0.1:1/")  # never connected
    with pytest.raises(msgkit.InvalidTopicError) as info:
        broker.producer()._check_topic(name)
    assert repr(name)[:40] in str(info.value) or "amq." in str(info.value)
    with pytest.raises(msgkit.InvalidTopicError):
        broker.consumer("fine", group=name)


def test_valid_names_pass() -> None:
    broker = msgkit.connect("amqp://127.0.0.1:1/")
    for name in ("orders", "orders.v2", "billing_EU-1", "svc:orders", "x" * 255):
        broker.validate_topic(name)


async def test_topic_and_group_too_long_together(rabbit: msgkit.Broker) -> None:
    consumer = rabbit.consumer("t" * 200, group="g" * 100)
    with pytest.raises(msgkit.InvalidTopicError, match="shorten"):
        await consumer.start(Collector())


async def test_connection_refused_fails_fast_without_leaking_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(msgkit.BrokerUnavailableError) as info:
        async with msgkit.connect("amqp://guest:s3cret@127.0.0.1:1/", connect_timeout=5):
            pass
    assert time.monotonic() - started < 3
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


async def test_a_refused_login_fails_at_once_and_says_so(amqp_url: str) -> None:
    url = amqp_url.replace("guest:guest@", "guest:wrong-pw@")
    if url == amqp_url:
        pytest.skip("test URL does not use guest:guest")
    connecting = msgkit.connect(url, connect_timeout=60).start()
    with pytest.raises(msgkit.AuthenticationError) as info:
        await asyncio.wait_for(connecting, 10)  # not the whole connect_timeout
    assert "refused" in str(info.value) and "password" in str(info.value)
    assert "wrong-pw" not in str(info.value)


async def test_a_missing_virtual_host_fails_at_once_and_says_so(amqp_url: str) -> None:
    url = amqp_url.rstrip("/") + "/no-such-vhost"
    with pytest.raises(msgkit.AuthenticationError, match="virtual host") as info:
        await asyncio.wait_for(msgkit.connect(url, connect_timeout=60).start(), 10)
    assert "no-such-vhost" in str(info.value)


def test_options_split_between_msgkit_and_aio_pika() -> None:
    backend = RabbitMQBackend(
        msgkit.url.URL.parse("amqp://u:p@h:5673/vh?queue_type=classic&heartbeat=15"),
        {"queue_type": "classic", "heartbeat": "15", "publish_timeout": 2,
         "client_properties": {"connection_name": "svc"}},
    )
    assert backend.settings.queue_type == "classic" and backend.settings.publish_timeout == 2
    [native] = backend._native_urls
    assert "queue_type" not in native and "heartbeat=15" in native
    assert backend._connect_options["client_properties"] == {"connection_name": "svc"}
    assert "heartbeat" not in backend._connect_options  # already in the URL


def test_amqps_tls_options_pass_through() -> None:
    url = "amqps://u:p%40ss@rabbit.example:5671/prod?cafile=/etc/ca.pem&ordered_per_key=1"
    backend = RabbitMQBackend(msgkit.url.URL.parse(url), {"ordered_per_key": "1",
                                                          "cafile": "/etc/ca.pem",
                                                          "ssl_context": "ctx"})
    [native] = backend._native_urls
    assert native.startswith("amqps://") and "cafile=" in native
    assert "ordered_per_key" not in native and "/prod" in native
    assert backend._connect_options["ssl_context"] == "ctx"
    assert backend.capabilities.ordered_per_key and not RabbitMQBackend.capabilities.ordered_per_key


def test_a_url_with_several_nodes_gives_one_aio_pika_url_per_node() -> None:
    url = "amqp://u:p%40ss@h1:5672,h2:5673,[::1]:5674/vh?heartbeat=15&publish_timeout=3"
    backend = RabbitMQBackend(msgkit.url.URL.parse(url), {"heartbeat": "15", "publish_timeout": "3"})
    assert backend._native_urls == [
        f"amqp://u:p%40ss@{host}/vh?heartbeat=15" for host in ("h1:5672", "h2:5673", "[::1]:5674")]
    assert "p%40ss" not in repr(msgkit.connect(url)) and "p@ss" not in repr(msgkit.connect(url))


async def test_several_nodes_in_one_url_connect_to_the_first_that_answers(
    amqp_url: str, unique_name: str
) -> None:
    netloc = urlsplit(amqp_url).netloc
    nodes = amqp_url.replace(netloc, netloc.replace("@", "@127.0.0.1:1,", 1), 1)
    assert "127.0.0.1:1," in nodes
    async with msgkit.connect(nodes, connect_timeout=5) as broker:
        got = Collector()
        await broker.consumer(unique_name, group="g").start(got)
        await broker.producer().send(unique_name, b"via the second node")
        assert (await got.wait_for(1, timeout=30))[0].value == b"via the second node"
        assert "127.0.0.1:1," in broker.url and "guest:guest" not in broker.url


@pytest.mark.parametrize("options", [
    {"queue_type": "stream"}, {"ordered_per_key": "maybe"}, {"publish_timeout": 0},
    {"queue_arguments": "x-max-length=5"},
])
def test_bad_options_are_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(msgkit.ConfigurationError):
        msgkit.connect("amqp://127.0.0.1/", **options)


async def test_unknown_consumer_option_is_rejected(rabbit: msgkit.Broker, unique_name: str) -> None:
    with pytest.raises(msgkit.ConfigurationError, match="prefech"):
        await rabbit.consumer(unique_name, group="g", prefech=3).start(Collector())


async def test_unroutable_publish_raises_publish_error(
    rabbit: msgkit.Broker, unique_name: str
) -> None:
    with pytest.raises(msgkit.PublishError) as info:
        await rabbit.producer().send(unique_name, b"nobody listens")
    assert info.value.reason == "NO_ROUTE"
    # At-most-once does not wait for the broker: no error, the message is dropped.
    await rabbit.producer(guarantee=msgkit.Guarantee.AT_MOST_ONCE).send(unique_name, b"gone")


async def test_required_groups_keep_messages_sent_before_the_consumer(
    rabbit: msgkit.Broker, unique_name: str
) -> None:
    producer = rabbit.producer(required_groups=("audit",))
    sent = await producer.send_many(unique_name, [b"a", b"b", b"c"])
    got = Collector()
    await rabbit.consumer(unique_name, group="audit").start(got)
    await got.wait_for(3)
    assert [m.id for m in got.messages] == sent


async def test_topology_quorum_by_default_classic_as_option(
    amqp_url: str, unique_name: str, queue_state: QueueState, redeclare_fails: RedeclareFails
) -> None:
    async with msgkit.connect(amqp_url) as quorum, \
            msgkit.connect(amqp_url, queue_type="classic") as classic:
        got_q, got_c = Collector(), Collector()
        await quorum.consumer(unique_name, group="q").start(got_q)
        await classic.consumer(unique_name, group="c").start(got_c)
        assert await queue_state(f"{unique_name}.q") == (0, 1)
        assert await queue_state(f"{unique_name}.c") == (0, 1)
        assert await redeclare_fails(f"{unique_name}.q", {"x-queue-type": "classic"})
        assert not await redeclare_fails(f"{unique_name}.q", {"x-queue-type": "quorum"})
        assert await redeclare_fails(f"{unique_name}.c", {"x-queue-type": "quorum"})
        # Both groups are bound to the topic's exchange: each gets its copy.
        await quorum.producer().send(unique_name, b"both")
        await got_q.wait_for(1)
        await got_c.wait_for(1)


async def test_mismatched_queue_settings_are_a_clear_error(
    amqp_url: str, unique_name: str
) -> None:
    async with msgkit.connect(amqp_url) as quorum, \
            msgkit.connect(amqp_url, queue_type="classic") as classic:
        await quorum.consumer(unique_name, group="g").start(Collector())
        with pytest.raises(msgkit.ConfigurationError, match="other settings"):
            await classic.consumer(unique_name, group="g").start(Collector())
        # The connection survives the refused declaration.
        got = Collector()
        await classic.consumer(unique_name, group="other").start(got)
        await classic.producer().send(unique_name, b"still fine")
        await got.wait_for(1)


async def test_private_consumer_queue_goes_away_with_it(
    rabbit: msgkit.Broker, unique_name: str, queue_state: QueueState
) -> None:
    got = Collector()
    consumer = rabbit.consumer(unique_name)
    await consumer.start(got)
    queue = consumer.describe()["client"]["queue"]
    assert queue.startswith(f"{unique_name}@")
    await rabbit.producer().send(unique_name, b"hi")
    await got.wait_for(1)
    await consumer.stop()
    assert await queue_state(queue) is None


async def test_message_fields_round_trip(rabbit: msgkit.Broker, unique_name: str) -> None:
    got = Collector()
    await rabbit.consumer(unique_name, group="g").start(got)
    producer = rabbit.producer()
    long_key = "k" * 300
    before = time.time()
    ids = [
        await producer.send(unique_name, {"n": 1}, key="order-1", headers={"h": "v"},
                            idempotency_key="idem-1"),
        await producer.send(unique_name, b"long", key=long_key),
        await producer.send(unique_name, "empty", key=""),
        await producer.send(unique_name, b"none"),
    ]
    first, long, empty, none = await got.wait_for(4)
    assert [m.id for m in got.messages] == ids
    assert first.json() == {"n": 1} and first.key == "order-1" and first.headers["h"] == "v"
    assert first.idempotency_key == "idem-1" and first.attempt == 1
    assert first.content_type == msgkit.headers.JSON
    assert before - 1 <= first.timestamp <= time.time() + 1
    assert first.native.routing_key == "order-1"  # aio-pika's IncomingMessage
    assert long.key == long_key and empty.key == "" and none.key is None
    assert not [k for m in got.messages for k in m.headers if k.startswith("x-")]


async def test_describe_shows_effective_settings_without_password(
    amqp_url: str, unique_name: str
) -> None:
    async with msgkit.connect(amqp_url, ordered_per_key=True, publish_window=64) as broker:
        assert broker.capabilities.ordered_per_key
        consumer = broker.consumer(unique_name, group="g", prefetch=7)
        await consumer.start(Collector())
        client = consumer.describe()["client"]
        assert client["prefetch"] == 7 and client["single_active_consumer"] is True
        assert client["queue"] == f"{unique_name}.g"
        producer = broker.producer()
        await producer.send(unique_name, b"x")
        described = producer.describe()["client"]
        assert described["publish_window"] == 64 and described["publisher_confirms"] is True
        assert "guest:guest" not in repr(described) + repr(client)
        assert producer.native is not None and consumer.native is not None
    async with msgkit.connect(amqp_url) as plain:
        assert not plain.capabilities.ordered_per_key


async def test_publish_to_group_reaches_only_that_group(
    rabbit: msgkit.Broker, unique_name: str
) -> None:
    mine, other = Collector(), Collector()
    await rabbit.consumer(unique_name, group="mine").start(mine)
    await rabbit.consumer(unique_name, group="other").start(other)
    publisher = await rabbit.backend.publisher(msgkit.Guarantee.AT_LEAST_ONCE, options={})
    try:
        out = msgkit.message.Outgoing(unique_name, b"replayed", "k", {"h": "v"}, "id-1", time.time())
        await publisher.publish_to_group("mine", [out])
        [msg] = await mine.wait_for(1)
        assert (msg.id, msg.key, msg.headers["h"], msg.attempt) == ("id-1", "k", "v", 1)
        with pytest.raises(msgkit.PublishError) as info:
            await publisher.publish_to_group("missing", [out])
        assert info.value.reason == "NO_ROUTE"
    finally:
        await publisher.close()
    await rabbit.producer().send(unique_name, b"sentinel")
    await other.wait_for(1)
    assert other.values == [b"sentinel"]
