"""Structured logs: one line per event, as text or as one JSON object.

Code logs an event with a short message and its fields as `extra`:

    logger.info("listening", extra={"event": "listening", "host": host, "port": port})

text:  2025-01-01T12:00:00.000Z INFO nnserve.service listening event=listening port=50051
json:  {"time": "...", "level": "info", "logger": "...", "message": "listening", "event": ...}

A traceback is part of its event: a "traceback" field in JSON, indented lines in text.
"""

import json
import logging
import sys
from datetime import datetime, timezone

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _fields(record):
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


def _time(record):
    moment = datetime.fromtimestamp(record.created, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`"""

    def format(self, record):
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{_time(record)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line += "\n" + "\n".join("    " + text for text in self.formatException(record.exc_info).splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, traceback."""

    def format(self, record):
        payload = {"time": _time(record), "level": record.levelname.lower(), "logger": record.name,
                   "message": record.getMessage()}
        payload.update(_fields(record))
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(log_format="text", level="info", stream=None):
    """Send every logger's records (ours, grpc's) to one stream handler on the root logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
