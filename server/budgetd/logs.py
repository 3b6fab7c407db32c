"""Structured logs on stderr: one line per event, `key=value` pairs or JSON.

Call sites log an event name as the message and the details as `extra={"fields": {...}}`,
so the same record reads well in a terminal and parses in a log pipeline.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Libraries whose debug output is their own loop chatter, not budgetd's story: at
# `--log-level debug` budgetd logs one line per call instead (budgetd.calls).
QUIET = ("asyncio", "grpc", "grpc._cython.cygrpc", "grpc._server")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, "fields", {})
    return fields


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 with milliseconds and the UTC offset: `2026-12-02T06:29:23.123+00:00`,
    the same in both formats."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"event={_quote(record.getMessage())}",
        ]
        parts += [f"{key}={_quote(value)}" for key, value in _fields(record).items()]
        if record.exc_info:
            parts.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def fields(**values: object) -> dict[str, Any]:
    """`log.info("event", extra=fields(k=v))`."""
    return {"fields": values}
