"""Names of the headers msgkit itself reads and writes. All share the `msgkit-` prefix."""

from __future__ import annotations

PREFIX = "msgkit-"

MESSAGE_ID = "msgkit-id"
IDEMPOTENCY_KEY = "msgkit-idempotency-key"
ATTEMPT = "msgkit-attempt"
FIRST_FAILURE_AT = "msgkit-first-failure-at"
CONTENT_TYPE = "content-type"

# Dead-letter headers: replaced (never piled up) when a message is dead-lettered again.
DLQ_ORIGINAL_TOPIC = "msgkit-dlq-original-topic"
DLQ_GROUP = "msgkit-dlq-group"
DLQ_EXCEPTION_TYPE = "msgkit-dlq-exception-type"
DLQ_EXCEPTION_MESSAGE = "msgkit-dlq-exception-message"
DLQ_TRACEBACK = "msgkit-dlq-traceback"
DLQ_ATTEMPTS = "msgkit-dlq-attempts"
DLQ_LAST_FAILURE_AT = "msgkit-dlq-last-failure-at"
DLQ_PREFIX = "msgkit-dlq-"

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
