"""What happens to a message whose handler raised: retry in process, then redeliver through
the broker after delays, then dead-letter. One value, applied in that order by msgkit.

The policy acts only through `Delivery.redeliver` and a publisher, so it is the same on every
backend. Nothing is dropped: the original is acknowledged only after its retry or dead-letter
copy was confirmed; a copy that fails is tried again (`until_settled`) while the consumer
runs, and left unacknowledged for the broker to bring back when it stops.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from msgkit import headers as h
from msgkit.backend import Delivery
from msgkit.errors import DecodeError
from msgkit.logs import get_logger
from msgkit.message import Headers, HeaderValue, Message, merged, text_of
from msgkit.url import redact

log = get_logger("msgkit.failure")

TRACEBACK_LIMIT = 4000
SETTLE_WAIT_MAX = 5.0
"""Longest pause between tries to store a failed message's retry or dead-letter copy."""

DeadLetterPublish = Callable[[str, Message, Headers], Awaitable[None]]


def dead_letter_topic(topic: str, group: str | None) -> str:
    """`<topic>.<group>.dlq`, or `<topic>.dlq` for a consumer without a group."""
    return f"{topic}.{group}.dlq" if group else f"{topic}.dlq"


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How a consumer handles a handler's exception.

    1. `retries` more tries in process, waiting exponentially from `backoff` up to
       `backoff_max` seconds with jitter (the message's key waits meanwhile).
    2. Redeliveries through the broker, `delays[i]` seconds before delivery i + 2, without
       blocking other messages; `max_attempts` deliveries in all (default 1 + len(delays);
       the last delay repeats when it is larger).
    3. The dead-letter topic (`dead_letter_topic`, default `<topic>.<group>.dlq`), unless
       `dead_letter=False` (then the message is acknowledged and only logged).

    Exceptions that retrying cannot fix skip 1 and 2: `DecodeError`, pydantic
    `ValidationError`, the types in `non_retryable`, and any for which `retry_if` is False.
    """

    retries: int = 0
    backoff: float = 0.05
    backoff_max: float = 2.0
    delays: tuple[float, ...] = (0.1, 0.5, 2.0)
    max_attempts: int | None = None
    non_retryable: tuple[type[BaseException], ...] = ()
    retry_if: Callable[[BaseException], bool] | None = None
    dead_letter: bool = True
    dead_letter_to: str | Callable[[str, str | None], str] | None = None

    @property
    def deliveries(self) -> int:
        return self.max_attempts if self.max_attempts is not None else 1 + len(self.delays)

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (DecodeError, ValidationError, *self.non_retryable)):
            return False
        return self.retry_if(exc) if self.retry_if is not None else True

    def dead_letter_topic(self, topic: str, group: str | None) -> str:
        target = self.dead_letter_to
        if target is None:
            return dead_letter_topic(topic, group)
        return target if isinstance(target, str) else target(topic, group)

    async def retry_in_process(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Call again up to `retries` times; re-raises the last exception."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential_jitter(multiplier=self.backoff, max=self.backoff_max,
                                         jitter=self.backoff),
            retry=retry_if_exception(self.retryable),
            reraise=True,
        ):
            with attempt:
                await call()

    async def handle(
        self, delivery: Delivery, exc: BaseException, group: str | None, publish: DeadLetterPublish,
        failed_at: float | None = None,
    ) -> str:
        """Settle a delivery whose handler failed (at `failed_at`, default now): redeliver
        later, or dead-letter. Returns what it did: "retried", "dead_lettered" or
        "discarded" (`dead_letter=False`)."""
        msg = delivery.message
        now = f"{failed_at if failed_at is not None else time.time():.6f}"
        first = text_of(msg.headers.get(h.FIRST_FAILURE_AT)) or now
        if self.retryable(exc) and msg.attempt < self.deliveries:
            # The id travels as a header: a foreign message's id (where the broker stored it)
            # would otherwise change with each copy.
            headers = merged(msg.headers, {h.MESSAGE_ID: msg.id, h.ATTEMPT: str(msg.attempt + 1),
                                           h.FIRST_FAILURE_AT: first})
            step = min(msg.attempt - 1, len(self.delays) - 1)
            await delivery.redeliver(delay=self.delays[step] if self.delays else 0.0, headers=headers)
            return "retried"
        if not self.dead_letter:
            await delivery.ack()
            return "discarded"
        await publish(self.dead_letter_topic(msg.topic, group), msg,
                      dead_letter_headers(msg, exc, group, first, now, delivery.origin))
        await delivery.ack()
        return "dead_lettered"


async def until_settled(
    settle: Callable[[], Awaitable[None]], *, stopping: Callable[[], bool], message_id: str,
    action: str = "retry or dead-letter",
) -> None:
    """Run `settle` until it succeeds, pausing 0.1 s doubling up to `SETTLE_WAIT_MAX` between
    tries. Re-raises its last error only once `stopping()` is true: a broker that refuses a
    copy for a while must neither drop the message nor hold it until the consumer closes."""

    def report(state: RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("could not %s message %s (try %d), trying again in %.1fs: %r",
                    action, message_id, state.attempt_number, wait,
                    state.outcome.exception() if state.outcome else None)

    async def pause(seconds: float) -> None:
        """Cut short once `stopping()`: a condition (the consumer stops, or the broker took
        the delivery back), not an event to wait on, so it is looked at every 0.1 s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not stopping() and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, 0.1))

    async for attempt in AsyncRetrying(
        wait=wait_exponential_jitter(multiplier=0.1, max=SETTLE_WAIT_MAX, jitter=0.1),
        sleep=pause,
        stop=lambda _: stopping(),
        retry=retry_if_exception_type(Exception),
        before_sleep=report,
        reraise=True,
    ):
        with attempt:
            await settle()


def dead_letter_headers(
    msg: Message, exc: BaseException, group: str | None, first_failure: str, now: str,
    origin: Mapping[str, str],
) -> Headers:
    """The message's own headers (in order, repeated and null ones too) plus the failure's;
    earlier dead-letter headers are replaced."""
    failure: dict[str, HeaderValue] = {f"{h.DLQ_PREFIX}{name}": value for name, value in origin.items()}
    failure.update({
        h.MESSAGE_ID: msg.id,
        h.FIRST_FAILURE_AT: first_failure,
        h.DLQ_ORIGINAL_TOPIC: msg.topic,
        h.DLQ_GROUP: group or "",
        h.DLQ_EXCEPTION_TYPE: f"{type(exc).__module__}.{type(exc).__qualname__}",
        h.DLQ_EXCEPTION_MESSAGE: redact(str(exc))[:TRACEBACK_LIMIT],
        h.DLQ_TRACEBACK: bounded(redact("".join(traceback.format_exception(exc))), TRACEBACK_LIMIT),
        h.DLQ_ATTEMPTS: str(msg.attempt),
        h.DLQ_LAST_FAILURE_AT: now,
    })
    return merged(msg.headers, failure, drop=(h.ATTEMPT,), drop_prefix=h.DLQ_PREFIX)


def bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters in the middle: a traceback's head says where the
    failure entered and its tail what was raised, so both are kept."""
    if len(text) <= limit:
        return text
    cut = "\n[...]\n"
    head = (limit - len(cut)) // 2
    return text[:head] + cut + text[len(text) - (limit - len(cut) - head):]
