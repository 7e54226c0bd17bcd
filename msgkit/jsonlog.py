"""`msgkit run --log-format json`: one JSON object per log line, with the message id, topic
and group as fields where a line is about a message (`extra={"message_id": ...}`)."""

from __future__ import annotations

import json
import logging
import time

FIELDS = ("message_id", "topic", "group", "attempt")
"""`extra=` names msgkit's log lines carry; they become fields of the JSON object."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Root logging for a worker: `text` (logging's default layout) or `json`."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
