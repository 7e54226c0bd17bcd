"""RabbitMQ over TLS: amqps:// with a CA (and a client certificate) carries messages, and each
refusal (credentials, certificates, permissions, permissions revoked while running) is a
clear msgkit error raised at once, with no secret in it."""

from __future__ import annotations

import asyncio
import logging

import pytest

import msgkit
from msgkit.testing import Collector, Holding, eventually
from msgkit.testing.certs import TestCertificates
from msgkit_rabbitmq.secure_rabbit import DENIED_USER, USER, SecureRabbit

WAIT = 30.0
PATIENT = {"connect_timeout": "60"}
"""Refusals must not wait this out: they are raised at once, as their own error types."""


async def round_trip(url: str, topic: str) -> list[bytes]:
    async with msgkit.connect(url) as broker:
        got = Collector()
        await broker.consumer(topic, group="g").start(got)
        await broker.producer().send_many(topic, [b"a", b"b", b"c"])
        return sorted(m.value for m in await got.wait_for(3, timeout=WAIT))


async def test_tls_and_a_client_certificate_carry_messages_and_hide_the_password(
    secure_rabbit: SecureRabbit, certs: TestCertificates, unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await round_trip(secure_rabbit.url(), unique_name) == [b"a", b"b", b"c"]
    mutual = secure_rabbit.url(certfile=str(certs.client_cert), keyfile=str(certs.client_key))
    assert await round_trip(mutual, f"{unique_name}-tls") == [b"a", b"b", b"c"]
    async with msgkit.connect(secure_rabbit.url()) as broker:
        shown = f"{broker!r} {broker.producer().describe()}"
    password = secure_rabbit.passwords[USER]
    assert USER in shown and password not in shown and password not in caplog.text


async def test_a_wrong_password_is_refused_at_once_naming_the_user(
    secure_rabbit: SecureRabbit,
) -> None:
    with pytest.raises(msgkit.AuthenticationError) as refused:
        await msgkit.connect(secure_rabbit.url(password="not-it", **PATIENT)).start()
    text = str(refused.value)
    assert f"{USER}:***@" in text and "PLAIN" in text and "not-it" not in text


async def test_an_untrusted_broker_certificate_names_cafile(
    secure_rabbit: SecureRabbit, certs: TestCertificates,
) -> None:
    with pytest.raises(msgkit.TLSError, match="set cafile"):
        await msgkit.connect(secure_rabbit.url(cafile=str(certs.other_ca), **PATIENT)).start()


async def test_a_host_name_the_certificate_does_not_name_is_a_tls_error(
    secure_rabbit: SecureRabbit,
) -> None:
    with pytest.raises(msgkit.TLSError, match="a host name the certificate names"):
        await msgkit.connect(secure_rabbit.url(host="127.0.0.1", **PATIENT)).start()


async def test_a_client_certificate_the_broker_does_not_trust_is_refused(
    secure_rabbit: SecureRabbit, certs: TestCertificates,
) -> None:
    url = secure_rabbit.url(certfile=str(certs.stranger_cert), keyfile=str(certs.stranger_key),
                            **PATIENT)
    with pytest.raises(msgkit.TLSError, match=r"refuse[sd] the client certificate"):
        await msgkit.connect(url).start()


async def test_publishing_without_write_permission_is_a_publish_error(
    secure_rabbit: SecureRabbit, unique_name: str,
) -> None:
    async with msgkit.connect(secure_rabbit.url(DENIED_USER)) as mallory:
        with pytest.raises(msgkit.PublishError, match=r"ACCESS_REFUSED.*set_permissions"):
            await mallory.producer().send(unique_name, b"x")


async def test_consuming_without_read_permission_stops_with_an_authorization_error(
    secure_rabbit: SecureRabbit, unique_name: str,
) -> None:
    async with msgkit.connect(secure_rabbit.url(DENIED_USER)) as mallory:
        consumer = mallory.consumer(unique_name, group="g")
        with pytest.raises(msgkit.AuthorizationError, match="ACCESS_REFUSED"):
            await asyncio.wait_for(consumer.start(Collector()), WAIT)
        assert not consumer.running


async def test_permissions_revoked_while_running_fail_producer_and_consumer_and_keep_messages(
    secure_rabbit: SecureRabbit, unique_name: str,
) -> None:
    handled = Holding(lambda msg: msg.value == b"held")
    try:
        async with msgkit.connect(secure_rabbit.url(reconnect_interval="0.2")) as alice:
            consumer = alice.consumer(unique_name, group="g")
            await consumer.start(handled)
            producer = alice.producer()
            await producer.send_many(unique_name, [b"before", b"held"])
            await eventually(lambda: b"held" in handled.started, timeout=WAIT)
            secure_rabbit.revoke(USER)
            with pytest.raises(msgkit.AuthenticationError, match="refused"):
                await asyncio.wait_for(consumer.wait(), WAIT)
            with pytest.raises(msgkit.PublishError, match="refused"):
                await asyncio.wait_for(producer.send(unique_name, b"after"), WAIT)
    finally:
        handled.release()
        secure_rabbit.allow(USER)
    again = Collector()
    async with msgkit.connect(secure_rabbit.url()) as alice:
        await alice.consumer(unique_name, group="g").start(again)
        await eventually(lambda: b"held" in again.values, timeout=WAIT)  # kept by the broker
