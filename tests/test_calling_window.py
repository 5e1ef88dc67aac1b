"""Calling windows: the setting's grammar and its one-line errors, and when a window is open,
and since when, across time zones and daylight saving changes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from exporter.calling_window import (
    CallingHours,
    CallingWindow,
    check_calling_window,
    parse_calling_window,
)
from exporter.config import ConfigError, load_settings
from tests.helpers import ROOT, FakeClock, load_yaml

BERLIN = "Mon-Fri 09:00-20:00 Europe/Berlin"


def at(text: str) -> float:
    """Unix time of an ISO 8601 time with its offset."""
    return datetime.fromisoformat(text).timestamp()


def local_rule(window: CallingWindow, moment: float) -> bool:
    """Open or not by reading the local clock directly: the definition to compare against."""
    local = datetime.fromtimestamp(moment, window.zone or ZoneInfo("UTC"))
    minute = local.hour * 60 + local.minute
    day = local.weekday()
    for span in window.spans:
        if span.start < span.end and day in span.days and span.start <= minute < span.end:
            return True
        if span.start > span.end and (
            (day in span.days and minute >= span.start)
            or ((day - 1) % 7 in span.days and minute < span.end)
        ):
            return True
    return False


def test_always_is_the_default_and_open_since_forever() -> None:
    """No window (the default, or an empty text) is open at every moment, since -inf."""
    for text in ("always", " ALWAYS ", ""):
        window = parse_calling_window(text)
        assert window.always
        assert window.open_since(at("2026-01-01T03:00:00+00:00")) == -math.inf
    assert check_calling_window("  ") == "always"


def test_grammar_days_spans_zone_and_description() -> None:
    """Day sets, several spans, several windows and a zone at the end read as written."""
    window = parse_calling_window(
        "Mon-Fri 09:00-13:00 14:00-20:00; sat,SUN 10:00-14:00 Asia/Kolkata"
    )
    assert window.describe() == (
        "Mon-Fri 09:00-13:00; Mon-Fri 14:00-20:00; Sat-Sun 10:00-14:00 Asia/Kolkata"
    )
    assert parse_calling_window("09:00-17:00").describe() == "Mon-Sun 09:00-17:00 UTC"
    assert parse_calling_window("Fri-Mon 00:00-24:00").describe() == "Mon,Fri-Sun 00:00-24:00 UTC"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Mon-Fri", "'Mon-Fri' has no HH:MM-HH:MM span"),
        ("Mon-Fri 9:00-20:00", "'9:00-20:00' is not a span HH:MM-HH:MM"),
        ("Mon-Fri 09:00-09:00", "is empty (a whole day is 00:00-24:00)"),
        ("Mon 10:00-24:30", "ends after 24:00"),
        ("Mon-Fri 09:00-20:00 Europe/Berlinn", "unknown time zone 'Europe/Berlinn'"),
        ("Mon 09:00-10:00 ../../etc/passwd", "is not a span"),
        ("Mon 09:00-10:00 Etc/../../passwd", "is not a span"),
        ("Mon 09:00-10:00 Etc/Nowhere_Land", "unknown time zone"),
        ("Mon 09:00-10:00 UTC; Tue 10:00-11:00", "a time zone goes once, at the end"),
        ("Mon 09:00-10:00 UTC UTC", "a time zone goes once, at the end"),
        ("x" * 10_000, "longer than 500 characters"),
        ("Mon 09:00-10:00 Europe/\x1b[31mBerlin", "is not a span"),
    ],
)
def test_bad_windows_are_refused_with_one_line(text: str, message: str) -> None:
    """Every unusable text is a ValueError whose one-line message says what is wrong."""
    with pytest.raises(ValueError, match=r".") as caught:
        parse_calling_window(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "\x1b" not in str(caught.value)
    assert len(str(caught.value)) < 200


def test_a_bad_window_is_a_configuration_error_naming_the_setting() -> None:
    """load_settings turns a bad window into a one-line ConfigError for DIALNEXA_CALLING_WINDOW."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"api_key": "k", "campaign_ids": ["a"], "calling_window": "Mon 25:00-26:00"})
    assert str(caught.value).startswith("DIALNEXA_CALLING_WINDOW: ")
    settings = load_settings({"api_key": "k", "campaign_ids": ["a"], "calling_window": BERLIN})
    assert settings.calling_window == BERLIN


def test_berlin_window_follows_daylight_saving_both_ways() -> None:
    """09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer, on both sides of each change."""
    window = parse_calling_window(BERLIN)
    # Spring forward on Sunday 2026-03-29: Friday before is CET (+1), Monday after is CEST (+2).
    assert window.open_since(at("2026-03-27T08:30:00+00:00")) == at("2026-03-27T08:00:00+00:00")
    assert not window.is_open(at("2026-03-27T07:59:59+00:00"))
    assert window.open_since(at("2026-03-30T07:30:00+00:00")) == at("2026-03-30T07:00:00+00:00")
    assert not window.is_open(at("2026-03-30T06:59:59+00:00"))
    assert not window.is_open(at("2026-03-30T18:00:00+00:00"))  # 20:00 CEST: closed
    # Fall back on Sunday 2026-10-25: Monday after is CET again.
    assert window.open_since(at("2026-10-23T07:00:00+00:00")) == at("2026-10-23T07:00:00+00:00")
    assert window.open_since(at("2026-10-26T08:00:00+00:00")) == at("2026-10-26T08:00:00+00:00")
    assert not window.is_open(at("2026-10-26T07:30:00+00:00"))
    # The weekend in between stays closed.
    assert not window.is_open(at("2026-03-28T12:00:00+00:00"))


@pytest.mark.parametrize(
    ("text", "start"),
    [
        (BERLIN, "2026-03-23"),  # the week of the spring change in Europe
        (BERLIN, "2026-10-19"),  # and of the autumn one
        ("Mon-Sat 08:00-21:00 America/New_York", "2026-03-05"),  # US change, 2026-03-08
        ("Sun-Thu 22:00-06:00 Australia/Sydney", "2026-04-01"),  # overnight, southern change
        ("Mon-Fri 09:30-18:00 Asia/Kolkata", "2026-06-01"),  # +05:30, no daylight saving
    ],
)
def test_open_agrees_with_the_local_clock_minute_by_minute(text: str, start: str) -> None:
    """Over two weeks around a change, every minute's answer is the local clock's reading."""
    window = parse_calling_window(text)
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    hours = CallingHours(window, lambda: moment)
    for minute in range(0, 14 * 24 * 60, 7):  # every 7th minute: all weekdays and times
        moment = (first + timedelta(minutes=minute)).timestamp()
        expected = local_rule(window, moment)
        assert window.is_open(moment) == expected, datetime.fromtimestamp(moment, UTC)
        assert hours.open_now() == expected


def test_overnight_windows_open_since_the_evening_before() -> None:
    """A window past midnight opened the evening before, and only after a listed day."""
    window = parse_calling_window("Mon-Fri 22:00-06:00 UTC")
    assert window.open_since(at("2026-12-05T05:00:00+00:00")) == at("2026-12-04T22:00:00+00:00")
    assert not window.is_open(at("2026-12-05T22:30:00+00:00"))  # Saturday evening
    assert not window.is_open(at("2026-12-07T05:00:00+00:00"))  # Monday morning: Sunday unlisted
    assert window.is_open(at("2026-12-07T23:00:00+00:00"))


def test_touching_windows_merge_into_one_opening() -> None:
    """Back-to-back spans are one opening: open since the first of them."""
    window = parse_calling_window("Mon-Fri 09:00-12:00 12:00-18:00 UTC")
    assert window.open_since(at("2026-12-07T15:00:00+00:00")) == at("2026-12-07T09:00:00+00:00")
    always_open = parse_calling_window("00:00-24:00 Europe/Berlin")
    since = always_open.open_since(at("2026-12-07T15:00:00+00:00"))
    assert since is not None
    assert at("2026-12-07T15:00:00+00:00") - since > 7 * 86400


def test_calling_hours_recompute_when_their_clock_moves_on() -> None:
    """A reader kept for days answers for its clock's now, not for when it first computed."""
    clock = FakeClock(at("2026-12-07T08:00:00+00:00"))
    window = parse_calling_window("Mon-Fri 09:00-17:00 UTC")
    hours = CallingHours(window, clock.monotonic)  # the fake's monotonic reading is a Unix time
    seen = []
    for _ in range(5 * 24):
        seen.append(hours.open_now())
        assert hours.open_now() == local_rule(window, clock.monotonic())
        clock.advance(3600)
    assert seen[:10] == [False, True, True, True, True, True, True, True, True, False]
    assert hours.open_since() is None  # Saturday 2026-12-12 08:00
    clock.advance(-4 * 86400 + 3 * 3600)  # Tuesday 11:00: the cache is not trusted backwards
    assert hours.open_since() == at("2026-12-08T09:00:00+00:00")


def expand_series(values: str) -> list[float | None]:
    """promtool's series notation (``a+bxN``, ``a-bxN``, ``_xN``) as one value per step."""
    out: list[float | None] = []
    for term in values.split():
        if term.startswith("_x"):
            out.extend([None] * int(term[2:]))
            continue
        head, _, count = term.partition("x")
        sign = "+" if "+" in head[1:] else "-"
        first, _, step = head.rpartition(sign) if head[1:].count(sign) else (head, "", "0")
        delta = float(step) * (1 if sign == "+" else -1)
        out.extend(float(first) + delta * i for i in range(int(count or 0) + 1))
    return out


@pytest.mark.parametrize(
    ("instance", "window_text"),
    [
        ("berlin:10027", "Mon-Fri 09:00-20:00 Europe/Berlin"),
        ("newyork:10027", "Mon-Fri 09:00-17:00 America/New_York"),
    ],
)
def test_the_promtool_night_feeds_the_gauge_the_exporter_computes(
    instance: str, window_text: str
) -> None:
    """tests/rules/calling-window.test.yml's gauge is, minute by minute, this module's answer."""
    document = load_yaml((ROOT / "tests/rules/calling-window.test.yml").read_text("utf-8"))
    wanted = (
        f'dialnexa_exporter_calling_window_open{{job="dialnexa-exporter",instance="{instance}"}}'
    )
    (values,) = [
        entry["values"]
        for test in document["tests"]
        for entry in test["input_series"]
        if entry["series"] == wanted
    ]
    series = expand_series(values)
    window = parse_calling_window(window_text)
    assert len(series) > 1000
    assert series == [float(window.is_open(minute * 60.0)) for minute in range(len(series))]
