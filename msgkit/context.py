"""What a handler may ask for besides the message: where it came from, and a way to send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from msgkit.message import Message

if TYPE_CHECKING:
    from msgkit.producer import Producer


@dataclass(frozen=True, slots=True)
class Context:
    """Passed as the handler's second parameter when it has one.

    `producer` sends with the consumer's guarantee; messages sent through it follow the
    consumer's delivery promise (under exactly-once on Kafka they join its transaction).
    """

    message: Message
    group: str | None
    producer: Producer

    async def send(
        self,
        topic: str,
        value: object,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        return await self.producer.send(
            topic, value, key=key, headers=headers, idempotency_key=idempotency_key
        )
