"""How log lines look: ``text`` for people, ``logfmt`` and ``json`` for log pipelines; and text
from elsewhere (the API's headers, names, error messages) made safe for a terminal."""

from __future__ import annotations

import json
import logging
from typing import Any

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with every character a terminal or a log reader could act on written as a
    Python escape: C0 and C1 controls (ESC, backspace, vertical tab, CR, LF), DEL, line and
    paragraph separators, bidi overrides (``\\x1b``, ``\\u202e``). With ``lines``, line feeds
    are kept (a traceback's lines)."""
    if text.isprintable():
        return text  # the usual case, at C speed
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def printable_record(record: logging.LogRecord, formatter: logging.Formatter) -> logging.LogRecord:
    """A copy of ``record`` whose message and exception text are ``printable``: whatever an
    upstream put in them, a log line stays one line and cannot drive a terminal."""
    safe = logging.makeLogRecord(record.__dict__)
    safe.msg, safe.args = printable(record.getMessage()), None
    if record.exc_info:
        safe.exc_text = printable(formatter.formatException(record.exc_info), lines=True)
    if record.stack_info:
        safe.stack_info = printable(record.stack_info, lines=True)
    return safe


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        entry: dict[str, Any] = {
            "time": self.formatTime(record, TIME_FORMAT),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logfmt_value(text: str) -> str:
    """A logfmt value: bare when it is one plain word, else quoted with escapes."""
    if text and all(ch.isprintable() and ch not in ' "=\\' for ch in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    escaped = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """``time=… level=… logger=… msg="…"`` (the logfmt of Prometheus' own components)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one logfmt line."""
        pairs = [
            ("time", self.formatTime(record, TIME_FORMAT)),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        if record.exc_info:
            pairs.append(("exception", record.exc_text or self.formatException(record.exc_info)))
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs)


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of a ``log_format`` setting: text (the default), logfmt or json."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "logfmt":
        return LogfmtFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
