"""Bad input gets a clear msgkit error before anything reaches the broker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

import msgkit


class BadInputContract:
    @pytest.mark.parametrize("topic", ["", "has space", "x" * 300, "slash/es", ".."])
    async def test_invalid_topic_names_are_rejected(
        self, msgkit_broker: msgkit.Broker, topic: str
    ) -> None:
        with pytest.raises(msgkit.InvalidTopicError):
            await msgkit_broker.producer().send(topic, b"x")
        with pytest.raises(msgkit.InvalidTopicError):
            msgkit_broker.consumer(topic, group="g")

    async def test_handler_must_be_async(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        def not_async(msg: msgkit.Message) -> None: ...

        with pytest.raises(msgkit.HandlerError, match="async"):
            await msgkit_broker.consumer(unique_name, group="g").start(not_async)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [object(), 3.5, datetime.now(), {"d": object()}])
    async def test_unsupported_values_are_rejected(
        self, msgkit_broker: msgkit.Broker, unique_name: str, value: Any
    ) -> None:
        with pytest.raises(msgkit.SerializationError, match="send"):
            await msgkit_broker.producer().send(unique_name, value)

    @pytest.mark.parametrize(
        "headers", [{"n": 1}, {2: "x"}, {"msgkit-id": "forged"}, {"MsgKit-Attempt": "9"}, ["a"]])
    async def test_bad_headers_are_rejected(
        self, msgkit_broker: msgkit.Broker, unique_name: str, headers: Any
    ) -> None:
        with pytest.raises(msgkit.SerializationError):
            await msgkit_broker.producer().send(unique_name, b"x", headers=headers)
