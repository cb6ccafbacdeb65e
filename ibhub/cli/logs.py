"""Logging set-up for ``ibhub run``: readable lines by default, JSON lines for shippers.

The text format is what a person tailing a terminal or ``journalctl`` wants: time,
level, logger, message. ``--log-format json`` writes one JSON object per line with
fixed keys (``ts`` ISO-8601 UTC, ``level``, ``logger``, ``message``, plus ``exc`` when
there is a traceback and any ``extra=`` fields a caller attached), which Loki,
Elasticsearch or Datadog ingest without a parsing rule.

Library modules never call this; only the command that owns the process does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO, Any, Final

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: Final = ("text", "json")

# Attributes every LogRecord has; anything else came from ``extra=`` and is kept.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values that JSON cannot carry become strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text",
                      stream: IO[str] | None = None) -> logging.Handler:
    """Install one handler on the root logger (replacing earlier ones); returns it.

    Raises ``ValueError`` naming the accepted values for an unknown level or format.
    """
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
