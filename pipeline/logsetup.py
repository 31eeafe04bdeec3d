"""The pipeline's own logs: JSON lines (or text) on stderr, kept apart from the audit stream.

Operational messages ("upload failed, retrying", "backpressure on") are not audit events:
they go to stderr for the container runtime's log collector, never into the hash chain.
``setup_logging`` therefore configures only the ``pipeline`` logger and turns off its
propagation, so that an application which routes the root logger into the audit log (an
``AuditLogHandler`` on the root logger) does not also record the pipeline's chatter, and
the pipeline's output does not depend on how the application configured logging.

A JSON line::

    {"ts":"2024-05-01T12:00:00.123Z","level":"WARNING","logger":"pipeline.ship",
     "msg":"upload failed","segment":"seg-...","error":"...","exc":"Traceback ..."}

Fields passed with ``extra={...}`` become top-level keys.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any, TextIO

import orjson

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging"]

LOGGER_NAME = "pipeline"

# Attributes every LogRecord has; anything else on a record came from extra={...}.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _ts(created: float) -> str:
    return dt.datetime.fromtimestamp(created, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _extras(record).items():
            out.setdefault(k, v)  # the fixed keys win: a caller's "msg" must not hide ours
        if record.exc_info and record.exc_info[0] is not None:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: message key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(v: Any) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v, default=str).decode()
    # quote what would be ambiguous when split on spaces
    return orjson.dumps(s).decode() if (not s or any(c.isspace() or c in '"=' for c in s)) else s


class _PipelineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so that a second setup replaces it."""


def setup_logging(log_format: str = "json", level: int | str = logging.INFO,
                  stream: TextIO | None = None) -> logging.Handler:
    """Send the ``pipeline`` logger (and its children) to ``stream`` (default stderr) in
    ``log_format`` ("json" or "text").  Idempotent: calling it again (SIGHUP reload)
    replaces the previous handler.  Returns the handler."""
    if log_format not in ("json", "text"):
        raise ValueError(f"log_format must be json or text, not {log_format!r}")
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if isinstance(h, _PipelineHandler):
            logger.removeHandler(h)
            h.close()
    handler = _PipelineHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
