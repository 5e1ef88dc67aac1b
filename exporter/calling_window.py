"""Calling windows: the days and hours, in one time zone, in which campaigns place calls.

A campaign makes no call outside its window by design, so no progress there is not a stall.
The window is written once (``DIALNEXA_CALLING_WINDOW``) and read by everything that judges
stalls: the exporter's ``dialnexa_exporter_calling_window_open`` gauge, which the stall alert
requires to have been 1 for its whole lookback, and the status page, which asks the same
question of the same window here.

The text: ``always`` (the default), or windows separated by ``;``, each an optional set of
days (``Mon-Fri``, ``Sat,Sun``, ``Fri-Mon``; every day when left out) and one or more spans
``HH:MM-HH:MM`` (an end before the start crosses midnight, ``24:00`` ends at midnight), then
optionally one IANA time zone at the very end (``UTC`` when left out)::

    Mon-Fri 09:00-20:00 Europe/Berlin
    Mon-Fri 09:00-13:00 14:00-20:00; Sat 10:00-14:00 America/New_York

Times are local wall-clock times of the zone, so a window stays at 09:00 across daylight saving
changes: zoneinfo turns each day's local opening and closing into Unix times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ALWAYS = "always"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far back the opening of the current window is looked for: a week of windows and a day.
# A span open longer than that (every day round the clock) reads as open since that far back,
# which is why the stall threshold is bounded by a week.
LOOKBACK_DAYS = 8
# Bounds the spans (about 40) and so the work of each reading.
MAX_TEXT_CHARS = 500

_DAY = "(?:mon|tue|wed|thu|fri|sat|sun)"
_DAY_SET = re.compile(rf"{_DAY}(?:-{_DAY})?(?:,{_DAY}(?:-{_DAY})?)*", re.IGNORECASE)
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-/]*")
_SPAN = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class Span:
    """Open from ``start`` to ``end`` minutes after local midnight on each of ``days`` (0 is
    Monday); an ``end`` not after ``start`` closes on the next day."""

    days: frozenset[int]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """When campaigns call; no spans means always."""

    spans: tuple[Span, ...] = ()
    zone: ZoneInfo | None = None

    @property
    def always(self) -> bool:
        """Open at every moment."""
        return not self.spans

    def describe(self) -> str:
        """The window as an operator reads it."""
        if self.always:
            return "always"
        parts = []
        for span in self.spans:
            days = _day_text(span.days)
            parts.append(f"{days} {_clock(span.start)}-{_clock(span.end)}")
        zone = self.zone.key if self.zone is not None else "UTC"
        return f"{'; '.join(parts)} {zone}"

    def intervals(self, now: float) -> list[tuple[float, float]]:
        """The open intervals (Unix times, merged where they touch) from LOOKBACK_DAYS before
        ``now`` to a day after it, in order."""
        zone = self.zone or ZoneInfo("UTC")
        today = datetime.fromtimestamp(now, zone).date()
        found: list[tuple[float, float]] = []
        for back in range(LOOKBACK_DAYS, -2, -1):
            day = today - timedelta(days=back)
            for span in self.spans:
                if day.weekday() in span.days:
                    found.append(_interval(day, span, zone))
        found.sort()
        merged: list[tuple[float, float]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def open_since(self, now: float) -> float | None:
        """When the window that is open at ``now`` opened (``-inf`` for always); None when the
        window is closed at ``now``."""
        if self.always:
            return -math.inf
        for start, end in self.intervals(now):
            if start <= now < end:
                return start
        return None

    def is_open(self, now: float) -> bool:
        """The window is open at ``now``."""
        return self.open_since(now) is not None


# Open intervals once computed serve this long (they reach a day ahead and a week back).
REUSE_SECONDS = 3600.0


class CallingHours:
    """A calling window read on a clock: open now, and since when; what the exporter's gauge
    and its status page read, each scrape or page view.

    Keeps the open intervals it computed for an hour: a reading is then a scan of a few
    intervals, not a time-zone conversion per day of the week.
    """

    def __init__(self, window: CallingWindow, time: Callable[[], float]) -> None:
        self.window = window
        self._time = time
        self._intervals: list[tuple[float, float]] = []
        self._computed_at = -math.inf

    def open_since(self) -> float | None:
        """When the window open now opened (``-inf``: always open); None while closed."""
        if self.window.always:
            return -math.inf
        now = self._time()
        if not self._computed_at <= now < self._computed_at + REUSE_SECONDS:
            self._intervals, self._computed_at = self.window.intervals(now), now
        for start, end in self._intervals:
            if start <= now < end:
                return start
        return None

    def open_now(self) -> bool:
        """The window is open now."""
        return self.open_since() is not None


def _day_text(days: frozenset[int]) -> str:
    """``Mon-Fri``, ``Mon,Wed``, ``Mon-Sun``: runs of days as ranges."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    names = [DAYS[run[0]].capitalize() for run in runs]
    for i, run in enumerate(runs):
        if len(run) > 1:
            names[i] += "-" + DAYS[run[-1]].capitalize()
    return ",".join(names)


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _local(day: date, minutes: int, zone: ZoneInfo) -> float:
    day += timedelta(days=minutes // 1440)
    minutes %= 1440
    return datetime.combine(day, time(minutes // 60, minutes % 60), zone).timestamp()


def _interval(day: date, span: Span, zone: ZoneInfo) -> tuple[float, float]:
    end = span.end if span.end > span.start else span.end + 1440
    return _local(day, span.start, zone), _local(day, end, zone)


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        start = DAYS.index(first)
        stop = DAYS.index(last) if last else start
        days.update((start + i) % 7 for i in range((stop - start) % 7 + 1))
    return frozenset(days)


def _zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {text[:60]!r}: use an IANA name such as Europe/Berlin"
        ) from None


def _window(text: str, last: bool) -> tuple[list[Span], ZoneInfo | None]:
    tokens = text.split()
    zone = None
    if last and tokens and _ZONE.fullmatch(tokens[-1]) and not _DAY_SET.fullmatch(tokens[-1]):
        zone = _zone(tokens.pop())
    days = frozenset(range(7))
    if tokens and _DAY_SET.fullmatch(tokens[0]):
        days = _days(tokens.pop(0))
    if not tokens:
        raise ValueError(f"{text.strip()[:60]!r} has no HH:MM-HH:MM span")
    spans = []
    for token in tokens:
        match = _SPAN.fullmatch(token)
        if match is None:
            raise ValueError(
                f"{token[:60]!r} is not a span HH:MM-HH:MM or days such as Mon-Fri "
                "(a time zone goes once, at the end)"
            )
        start_h, start_m, end_h, end_m = map(int, match.groups())
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if end > 1440:
            raise ValueError(f"{token!r} ends after 24:00")
        if start == end:
            raise ValueError(f"{token!r} is empty (a whole day is 00:00-24:00)")
        spans.append(Span(days, start, end))
    return spans, zone


def parse_calling_window(text: str) -> CallingWindow:
    """The window a setting's text describes; ValueError with a one-line reason otherwise."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"longer than {MAX_TEXT_CHARS} characters")
    if not text.strip() or text.strip().lower() == ALWAYS:
        return CallingWindow()
    parts = text.split(";")
    spans: list[Span] = []
    zone = None
    for index, part in enumerate(parts):
        found, zone = _window(part, last=index == len(parts) - 1)
        spans.extend(found)
    return CallingWindow(tuple(spans), zone)


def check_calling_window(text: str) -> str:
    """A setting's text made canonical (stripped; ``always`` when empty), once it parses."""
    parse_calling_window(text)
    return text.strip() or ALWAYS
