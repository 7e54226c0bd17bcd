"""Options, names and errors that need no broker: checked before any network call."""

from __future__ import annotations

import time

import pytest

import msgkit
from msgkit.url import URL
from msgkit_kafka.config import redacted, split_options
from msgkit_kafka.publisher import producer_config
from msgkit_kafka.topics import retry_topic

UNREACHABLE = "kafka://127.0.0.1:1"


def test_credentials_keep_a_protocol_the_user_gave() -> None:
    _, configs = split_options(URL.parse("kafka://u:p@h:9092"),
                               {"security.protocol": "SASL_PLAINTEXT"})
    assert configs.common["security.protocol"] == "SASL_PLAINTEXT"
    assert configs.assumed == ("sasl.mechanism=PLAIN",)


@pytest.mark.parametrize("name", ["", "has space", "x" * 250, "slash/es", ".", "..", "ü"])
async def test_invalid_topic_is_rejected_before_any_network_call(name: str) -> None:
    broker = msgkit.connect(UNREACHABLE)  # never started: nothing may touch the network
    started = time.monotonic()
    with pytest.raises(msgkit.InvalidTopicError):
        broker.validate_topic(name)
    with pytest.raises(msgkit.InvalidTopicError):
        await broker.producer().send(name, b"x")
    with pytest.raises(msgkit.InvalidTopicError):
        broker.consumer(name, group="g")
    with pytest.raises(msgkit.InvalidTopicError):
        broker.consumer("fine", group=name or "bad name")
    assert time.monotonic() - started < 1.0


def test_valid_names_pass() -> None:
    broker = msgkit.connect(UNREACHABLE)
    for name in ("orders", "a.b_c-d", "x" * 249, "..."):
        broker.validate_topic(name)


def test_options_split_by_client_kind() -> None:
    url = URL.parse("kafka://h1:9092,h2?security.protocol=SSL&consumer.fetch.min.bytes=10"
                    "&producer.linger.ms=20&partitions=6")
    settings, configs = split_options(url, {**url.query, "admin.request.timeout.ms": 5000})
    assert settings.partitions == 6
    common = configs.for_kind("admin")
    assert common["bootstrap.servers"] == "h1:9092,h2:9092"
    assert common["security.protocol"] == "SSL" and common["request.timeout.ms"] == 5000
    assert configs.for_kind("consumer")["fetch.min.bytes"] == "10"
    assert "fetch.min.bytes" not in configs.for_kind("producer")
    assert configs.for_kind("producer", {"acks": 1, "close_timeout": 3})["acks"] == 1
    assert "close_timeout" not in configs.for_kind("producer", {"close_timeout": 3})


def test_url_credentials_become_sasl_settings_and_never_show() -> None:
    url = URL.parse("kafka://alice:s3cret@broker:9093")
    _, configs = split_options(url, {"ssl.key.password": "k3y"})
    conf = configs.for_kind("producer")
    assert conf["sasl.username"] == "alice" and conf["sasl.password"] == "s3cret"
    assert conf["security.protocol"] == "SASL_SSL"
    shown = repr(redacted(conf))
    assert "s3cret" not in shown and "k3y" not in shown and "alice" in shown


def test_unknown_dotless_option_says_how_to_write_it() -> None:
    with pytest.raises(msgkit.ConfigurationError, match=r"bootstrap\.servers"):
        msgkit.connect(UNREACHABLE, bootstrap_servers="x")
    with pytest.raises(msgkit.ConfigurationError, match="partitions"):
        msgkit.connect(UNREACHABLE + "?partitions=many")


def test_negative_buffer_limits_are_rejected() -> None:
    for option in ("buffer_bytes", "buffer_messages"):
        with pytest.raises(msgkit.ConfigurationError, match=f"{option}=-1 is negative"):
            msgkit.connect(UNREACHABLE + f"?{option}=-1")


def test_guarantees_set_acks_and_idempotence() -> None:
    alo = producer_config(msgkit.Guarantee.AT_LEAST_ONCE, {})
    assert alo["acks"] == "all" and alo["enable.idempotence"] is True
    amo = producer_config(msgkit.Guarantee.AT_MOST_ONCE, {})
    assert amo["acks"] == 1 and amo["enable.idempotence"] is False
    with pytest.raises(msgkit.ConfigurationError, match="acks"):
        producer_config(msgkit.Guarantee.AT_LEAST_ONCE, {"acks": 0})


def test_retry_topic_names_stay_legal() -> None:
    assert retry_topic("orders", "billing") == "orders.billing.retry"
    long = retry_topic("t" * 200, "g" * 200)
    assert len(long) <= 249 and long.endswith(".retry")
    assert long != retry_topic("t" * 200, "g" * 199 + "h")


async def test_unreachable_broker_fails_fast_with_a_clear_error() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = msgkit.connect(f"kafka://127.0.0.1:{port}", connect_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(msgkit.BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        await broker.start()
    assert time.monotonic() - started < 5.0
    await broker.close()


def test_awaited_sends_skip_the_linger_unless_the_user_chose_one() -> None:
    """`send` goes through a client without linger (each call is awaited alone); a linger
    the user set, in the URL or the producer's options, is kept for sends too."""
    plain = msgkit.connect("kafka://localhost:9092").backend
    assert plain.lone_send_options({"acks": "all"}) == {"acks": "all", "linger.ms": 0}
    assert plain.lone_send_options({"linger.ms": 20}) is None
    configured = msgkit.connect("kafka://localhost:9092?producer.linger.ms=20").backend
    assert configured.lone_send_options({}) is None
