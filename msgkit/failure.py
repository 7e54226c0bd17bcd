"""What happens to a message whose handler raised: redeliver later, then dead-letter.

The policy acts only through `Delivery.redeliver` and a publisher, so it is the same on
every backend. Nothing is dropped: a dead-letter publish that fails leaves the message
unacknowledged, and the broker brings it back.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from msgkit import headers as h
from msgkit.backend import Delivery
from msgkit.errors import DecodeError
from msgkit.message import Message

TRACEBACK_LIMIT = 4000

DeadLetterPublish = Callable[[str, Message, Mapping[str, str]], Awaitable[None]]


def dead_letter_topic(topic: str, group: str | None) -> str:
    """`<topic>.<group>.dlq`, or `<topic>.dlq` for a consumer without a group."""
    return f"{topic}.{group}.dlq" if group else f"{topic}.dlq"


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """Redeliver through the broker up to `max_attempts` deliveries, then dead-letter.

    `delays[i]` is how long the broker holds the message before attempt i + 2 (the last
    one repeats). Exceptions in `non_retryable` (and `DecodeError`) go straight to the DLQ.
    """

    max_attempts: int = 5
    delays: tuple[float, ...] = (0.1, 0.5, 2.0)
    non_retryable: tuple[type[BaseException], ...] = ()
    dead_letter: bool = True

    def retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, (DecodeError, *self.non_retryable))

    async def handle(
        self, delivery: Delivery, exc: BaseException, group: str | None, publish: DeadLetterPublish
    ) -> None:
        msg = delivery.message
        now = f"{time.time():.6f}"
        first = msg.headers.get(h.FIRST_FAILURE_AT, now)
        if self.retryable(exc) and msg.attempt < self.max_attempts:
            headers = {**msg.headers, h.ATTEMPT: str(msg.attempt + 1), h.FIRST_FAILURE_AT: first}
            step = min(msg.attempt - 1, len(self.delays) - 1)
            await delivery.redeliver(delay=self.delays[step] if self.delays else 0.0, headers=headers)
            return
        if not self.dead_letter:
            await delivery.ack()
            return
        dead = {
            k: v for k, v in msg.headers.items() if k != h.ATTEMPT and not k.startswith(h.DLQ_PREFIX)
        }
        dead.update({
            h.FIRST_FAILURE_AT: first,
            h.DLQ_ORIGINAL_TOPIC: msg.topic,
            h.DLQ_GROUP: group or "",
            h.DLQ_EXCEPTION_TYPE: f"{type(exc).__module__}.{type(exc).__qualname__}",
            h.DLQ_EXCEPTION_MESSAGE: str(exc)[:TRACEBACK_LIMIT],
            h.DLQ_TRACEBACK: "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:],
            h.DLQ_ATTEMPTS: str(msg.attempt),
            h.DLQ_LAST_FAILURE_AT: now,
        })
        await publish(dead_letter_topic(msg.topic, group), msg, dead)
        await delivery.ack()
