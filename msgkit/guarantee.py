"""Delivery guarantees: one word on producers and consumers instead of a dozen client settings."""

from __future__ import annotations

from enum import StrEnum


class Guarantee(StrEnum):
    """What msgkit promises about each message.

    - AT_MOST_ONCE: the producer does not wait for the broker; the consumer acknowledges
      before the handler runs. A crash may lose a message, never repeat it.
    - AT_LEAST_ONCE (default): the producer returns once the broker confirmed; the consumer
      acknowledges after the handler returned. A crash may repeat a message, never lose it.
    - EXACTLY_ONCE: at-least-once delivery whose effects happen once (Kafka transactions,
      or an idempotency store).
    """

    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"
