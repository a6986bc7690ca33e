"""Logging setup for the entry points: one JSON object per line, or plain text.

Only entry points call :func:`configure`. Context (connection id, user, channel)
rides in contextvars so log lines carry it without threading it through calls.
Tokens are never logged: no code here or elsewhere formats one.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

log_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pgcast_log_context", default=None
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = log_context.get()
        if ctx:
            entry.update(ctx)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger once, from an entry point."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print query strings, which may carry tokens.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
