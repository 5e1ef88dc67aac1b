"""Log line formats: text, logfmt and json, with awkward messages."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from exporter.logformat import (
    JsonFormatter,
    LogfmtFormatter,
    formatter_for,
    logfmt_value,
    printable,
)
from exporter.logs import RedactingFormatter


def record_of(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    """A log record of the exporter's logger, optionally carrying the current exception."""
    record = logging.LogRecord("exporter.poller", logging.ERROR, __file__, 1, message, args, None)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
    return record


def test_json_log_lines_are_objects() -> None:
    """The json log format writes one parseable object per record, exception included."""
    entry = json.loads(JsonFormatter().format(record_of("bad %s", "x", exc=True)))
    assert entry["message"] == "bad x"
    assert entry["level"] == "error"
    assert entry["logger"] == "exporter.poller"
    assert "ValueError: boom" in entry["exception"]


def test_logfmt_lines_are_key_value_pairs() -> None:
    """logfmt: time, level, logger and msg, the message quoted, one line even with an
    exception."""
    line = LogfmtFormatter().format(record_of('campaign %s failed ("timeout")', "cmp_a", exc=True))
    assert "\n" not in line
    assert line.startswith("time=")
    assert " level=error logger=exporter.poller " in line
    assert 'msg="campaign cmp_a failed (\\"timeout\\")"' in line
    assert 'exception="Traceback' in line


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ("", '""'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("line\nbreak", '"line\\nbreak"'),
        ("bell\x07", '"bell\\u0007"'),
        ("esc\x1b[31mred", '"esc\\u001b[31mred"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_logfmt_values_cannot_break_the_line(text: str, shown: str) -> None:
    """Spaces, quotes, '=', newlines and control characters are quoted or escaped: a value
    can never forge another key or another line."""
    assert logfmt_value(text) == shown


@pytest.mark.parametrize(
    ("name", "kind"),
    [("json", JsonFormatter), ("logfmt", LogfmtFormatter), ("text", logging.Formatter)],
)
def test_each_log_format_has_its_formatter(name: str, kind: type[logging.Formatter]) -> None:
    """The log_format setting picks the formatter; text is the plain default."""
    assert type(formatter_for(name)) is kind


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name, é and 日本", "plain name, é and 日本"),
        ("\b" * 3 + "\x1bc\v", "\\x08\\x08\\x08\\x1bc\\x0b"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x7f\x9b[2J", "\\x7f\\x9b[2J"),  # DEL, and the one-byte CSI of C1
        ("bidi \u202eevil\u2028line", "bidi \\u202eevil\\u2028line"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    """Controls (C0, DEL, C1), line separators and bidi overrides become Python escapes;
    everything else, accents and scripts included, is kept."""
    assert printable(text) == shown
    assert printable("one\x1b\ntwo", lines=True) == "one\\x1b\ntwo"


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_no_format_lets_upstream_text_drive_the_terminal(fmt: str) -> None:
    """A campaign name and an exception message holding 60 backspaces, ESC c and a vertical
    tab: the finished line, message and traceback alike, carries none of them raw."""
    attack = "\b" * 60 + "\x1bc\v"
    record = record_of("campaign %s renamed", attack)
    try:
        raise ValueError(f"Location {attack}")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = RedactingFormatter(formatter_for(fmt)).format(record)
    assert {ch for ch in line if not ch.isprintable() and ch != "\n"} == set()
    assert "x1bc" in line
    if fmt != "text":
        assert "\n" not in line  # one record, one line
