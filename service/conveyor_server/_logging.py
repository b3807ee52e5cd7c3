"""Log lines of the command-line server: plain text or one JSON object each.

Conveyor's modules log with `extra=` fields (`task_fields`, `rpc_method`);
the JSON format copies the known ones into each object, the text format
leaves them out (its messages name the task already). Payloads, results and
tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from conveyor_server.stores import TaskRecord

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Fields a record may carry through `extra=`, in the order JSON lists them.
FIELDS = ("task_id", "task_type", "tenant", "attempt", "rpc_method")


def task_fields(record: TaskRecord) -> dict[str, Any]:
    """The `extra=` fields of a line about one task."""
    fields: dict[str, Any] = {
        "task_id": record.id,
        "task_type": record.type,
        "attempt": record.attempt,
    }
    if record.tenant:
        fields["tenant"] = record.tenant
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger,
    message, then the known `extra=` fields a record has, and the exception's
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        values = record.__dict__
        for name in FIELDS:
            value = values.get(name)
            if value is not None and value != "":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every logger's records at `level` and above to `stream`
    (stderr), as text or JSON lines. For the command-line entry points only."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
