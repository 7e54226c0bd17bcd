"""msgkit's loggers: what they emit has passwords and secret parameters of URLs redacted, in
the message, its arguments and its traceback (a handler's exception may quote a DSN)."""

from __future__ import annotations

import logging

from msgkit.url import redact

_FORMATTER = logging.Formatter()


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        safe = redact(text)
        if safe != text:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            # Formatters use a record's exc_text when it is set.
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        return True


_REDACT = RedactSecrets()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the redacting filter (loggers are per name: once)."""
    logger = logging.getLogger(name)
    if _REDACT not in logger.filters:
        logger.addFilter(_REDACT)
    return logger
