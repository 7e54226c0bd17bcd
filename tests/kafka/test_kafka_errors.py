"""Errors against a real broker say what to change, and never show a password."""

from __future__ import annotations

import pytest

import msgkit


async def test_credentials_against_a_plaintext_broker_name_the_protocol_msgkit_assumed(
    kafka_url: str,
) -> None:
    host = kafka_url.split("://", 1)[1].split("?", 1)[0]
    with pytest.raises(msgkit.BrokerUnavailableError) as info:
        async with msgkit.connect(f"kafka://user:s3cret@{host}", connect_timeout=3):
            pass
    text = str(info.value)
    assert "security.protocol=SASL_SSL" in text and "SASL_PLAINTEXT" in text
    assert "s3cret" not in text


async def test_a_message_over_the_size_limit_names_the_setting_to_raise(
    kafka: msgkit.Broker, unique_name: str
) -> None:
    with pytest.raises(msgkit.PublishError, match=r"message\.max\.bytes"):
        await kafka.producer().send(unique_name, b"x" * 2_000_000)
