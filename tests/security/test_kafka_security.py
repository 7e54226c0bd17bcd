"""Kafka with security on: SASL_SSL (SCRAM-SHA-512) and mutual TLS carry messages, and each
refusal (credentials, certificates, ACLs, an ACL revoked while running) is a clear msgkit
error raised at once, with no secret in it."""

from __future__ import annotations

import asyncio
import logging

import pytest

import msgkit
from msgkit.testing import Collector, Holding, eventually
from msgkit.testing.certs import TestCertificates
from msgkit_kafka.secure_kafka import DENIED_USER, MECHANISM, USER, SecureKafka
from msgkit_kafka.testing import LOCAL_QUERY, with_query

WAIT = 30.0
PATIENT = {"connect_timeout": "60"}
"""Refusals must not wait this out: they are raised at once, as their own error types."""


async def round_trip(url: str, topic: str) -> list[bytes]:
    async with msgkit.connect(with_query(url, LOCAL_QUERY)) as broker:
        got = Collector()
        await broker.consumer(topic, group="g", start="earliest").start(got)
        await broker.producer().send_many(topic, [b"a", b"b", b"c"])
        return sorted(m.value for m in await got.wait_for(3, timeout=WAIT))


async def test_sasl_ssl_and_mutual_tls_carry_messages_and_hide_the_password(
    secure_kafka: SecureKafka, unique_name: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await round_trip(secure_kafka.url(), unique_name) == [b"a", b"b", b"c"]
    assert await round_trip(secure_kafka.mtls_url(), f"{unique_name}-tls") == [b"a", b"b", b"c"]
    async with msgkit.connect(secure_kafka.url()) as broker:
        shown = f"{broker!r} {broker.producer().describe()}"
    password = secure_kafka.passwords[USER]
    assert USER in shown and password not in shown and password not in caplog.text


async def test_a_wrong_password_is_refused_at_once_naming_the_user_and_mechanism(
    secure_kafka: SecureKafka,
) -> None:
    with pytest.raises(msgkit.AuthenticationError) as refused:
        await msgkit.connect(secure_kafka.url(password="not-it", **PATIENT)).start()
    text = str(refused.value)
    assert f"user {USER!r} ({MECHANISM})" in text and "not-it" not in text


async def test_an_untrusted_broker_certificate_names_ssl_ca_location(
    secure_kafka: SecureKafka, certs: TestCertificates,
) -> None:
    url = secure_kafka.url(**{"ssl.ca.location": str(certs.other_ca)}, **PATIENT)
    with pytest.raises(msgkit.TLSError, match=r"set ssl\.ca\.location to the CA"):
        await msgkit.connect(url).start()


async def test_a_host_name_the_certificate_does_not_name_is_a_tls_error(
    secure_kafka: SecureKafka,
) -> None:
    url = secure_kafka.url(**PATIENT).replace("@localhost:", "@127.0.0.1:")
    with pytest.raises(msgkit.TLSError, match="a host name the certificate names"):
        await msgkit.connect(url).start()


async def test_a_client_certificate_the_broker_does_not_trust_is_refused(
    secure_kafka: SecureKafka, certs: TestCertificates,
) -> None:
    url = secure_kafka.mtls_url(**{"ssl.certificate.location": str(certs.stranger_cert),
                                   "ssl.key.location": str(certs.stranger_key)}, **PATIENT)
    with pytest.raises(msgkit.TLSError, match="refused the client certificate"):
        await msgkit.connect(url).start()


async def test_publishing_to_a_denied_topic_is_a_publish_error(
    secure_kafka: SecureKafka, unique_name: str,
) -> None:
    async with msgkit.connect(secure_kafka.url()) as alice:
        await alice.producer().send(unique_name, b"exists")  # the topic exists: only denied
    async with msgkit.connect(secure_kafka.url(DENIED_USER)) as mallory:
        producer = mallory.producer()
        for topic in (unique_name, f"{unique_name}-new"):
            with pytest.raises(msgkit.PublishError, match=r"(?i)authorization failed"):
                await producer.send(topic, b"x")


async def test_consuming_a_denied_topic_stops_the_consumer_with_an_authorization_error(
    secure_kafka: SecureKafka, unique_name: str,
) -> None:
    async with msgkit.connect(secure_kafka.url()) as alice:
        await alice.producer().send(unique_name, b"exists")
    async with msgkit.connect(secure_kafka.url(DENIED_USER)) as mallory:
        consumer = mallory.consumer(unique_name, group="g")
        with pytest.raises(msgkit.AuthorizationError, match=unique_name):
            await asyncio.wait_for(consumer.start(Collector()), WAIT)
        assert not consumer.running


async def test_an_acl_revoked_while_running_fails_producer_and_consumer_and_keeps_messages(
    secure_kafka: SecureKafka, unique_name: str,
) -> None:
    handled = Holding(lambda msg: msg.value == b"held")
    url = with_query(secure_kafka.url(), LOCAL_QUERY)
    async with msgkit.connect(url, partitions=1) as alice:
        consumer = alice.consumer(unique_name, group="g", start="earliest")
        await consumer.start(handled)
        producer = alice.producer()
        await producer.send_many(unique_name, [b"before", b"held"])
        await eventually(lambda: b"held" in handled.started, timeout=WAIT)
        secure_kafka.deny(USER, unique_name)
        try:
            with pytest.raises(msgkit.AuthorizationError, match=unique_name):
                await asyncio.wait_for(consumer.wait(), WAIT)
            with pytest.raises(msgkit.PublishError, match=r"(?i)authorization failed"):
                await producer.send(unique_name, b"after")
        finally:
            handled.release()
            secure_kafka.allow_again(USER, unique_name)
    again = Collector()
    async with msgkit.connect(url) as alice:
        await alice.consumer(unique_name, group="g").start(again)
        await eventually(lambda: b"held" in again.values, timeout=WAIT)  # kept by the broker
