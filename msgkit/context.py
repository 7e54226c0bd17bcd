"""What a handler may ask for besides the message: where it came from, and a way to send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from msgkit.codec import SendHeaders
from msgkit.message import Key, Message
from msgkit.pending import OUTBOX, derived_key

if TYPE_CHECKING:
    from msgkit.producer import Producer


@dataclass(frozen=True, slots=True)
class Context:
    """Passed as the handler's second parameter when it has one.

    `send` follows the consumer's delivery promise. Under EXACTLY_ONCE it keeps the messages
    until the handler returned and publishes them only then (on Kafka inside the transaction
    that commits the input's offset); each gets an idempotency key derived from the input's
    (unless given), the same on every redelivery. `producer` sends at once, outside of that.
    """

    message: Message
    group: str | None
    producer: Producer

    async def send(
        self,
        topic: str,
        value: object,
        *,
        key: Key | None = None,
        headers: SendHeaders | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        outbox = OUTBOX.get()
        if outbox is None:
            return await self.producer.send(
                topic, value, key=key, headers=headers, idempotency_key=idempotency_key
            )
        if idempotency_key is None:
            source = self.message.idempotency_key or self.message.id
            idempotency_key = derived_key(source, len(outbox))
        out = self.producer.build(topic, value, key=key, headers=headers,
                                  idempotency_key=idempotency_key)
        outbox.append(out)
        return out.id
