"""msgkit's loggers: what they emit has passwords and secret parameters of URLs redacted, in
the message, its arguments and its traceback (a handler's exception may quote a DSN), and
repeated lines of one cause are summarised.

Summaries: lines with the same logger, text template and exception type (e.g. "handler
failed on message %s ..." raising `MailServerDown`) are written at most `BURST` times per
`WINDOW` seconds; the first line after a quiet spell says how many were left out. A
traceback is written once per cause (the line's logger and text, the exception's type and
text); later lines of that cause name the exception and say so instead. Counts of every
outcome are in the metrics (`msgkit.metrics`).
"""

from __future__ import annotations

import logging
import threading
import time

from msgkit.url import redact

_FORMATTER = logging.Formatter()
BURST = 5
WINDOW = 10.0
_MAX_CAUSES = 1024
"""Causes remembered for the once-per-cause tracebacks (beyond: written again)."""


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


class Summarise(logging.Filter):
    """Rate-limits repeats of one cause and writes each cause's traceback once."""

    def __init__(self, burst: int = BURST, window: float = WINDOW) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._lock = threading.Lock()
        self._spells: dict[tuple[object, ...], list[float | int]] = {}  # start, written, left out
        self._traced: dict[tuple[str, str, str, str], None] = {}

    def reset(self) -> None:
        """Forget every cause (tests start from a clean slate)."""
        with self._lock:
            self._spells.clear()
            self._traced.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        error = record.exc_info[1] if record.exc_info else _error_in(record)
        cause = (record.name, str(record.msg), type(error).__name__ if error else None)
        now = time.monotonic()
        with self._lock:
            spell = self._spells.get(cause)
            if spell is None or now - spell[0] >= self.window:
                left_out = int(spell[2]) if spell is not None else 0
                if len(self._spells) > _MAX_CAUSES:
                    self._spells.clear()
                self._spells[cause] = [now, 1, 0]
                if left_out:
                    record.msg = f"{record.msg} (and {left_out} more like it left out in " \
                                 f"the last {self.window:.0f}s)"
            elif spell[1] < self.burst:
                spell[1] += 1
            else:
                spell[2] += 1
                return False
            if record.exc_info and error is not None:
                text = redact(str(error))
                traced = (record.name, str(record.msg), type(error).__qualname__, text)
                if traced in self._traced:
                    record.exc_info, record.exc_text = None, None
                    record.msg = f"{record.msg} ({type(error).__name__}: {text}; traceback " \
                                 "as before)"
                else:
                    if len(self._traced) >= _MAX_CAUSES:
                        self._traced.clear()
                    self._traced[traced] = None
        return True


def _error_in(record: logging.LogRecord) -> BaseException | None:
    args = record.args if isinstance(record.args, tuple) else ()
    return next((a for a in args if isinstance(a, BaseException)), None)


_REDACT = RedactSecrets()
SUMMARISE = Summarise()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the summarising and redacting filters (once per name)."""
    logger = logging.getLogger(name)
    if _REDACT not in logger.filters:
        logger.addFilter(SUMMARISE)
        logger.addFilter(_REDACT)
    return logger
