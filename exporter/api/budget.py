"""The API's request budget, as its rate-limit headers tell it, and pacing so that it lasts."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import NamedTuple

from exporter.clock import Clock

log = logging.getLogger("exporter.budget")

# A reset value from this many seconds up is a Unix time, below it a delay from now: no rate
# limit window lasts 30 years, and no Unix time of this century is that small.
EPOCH_THRESHOLD = 1_000_000_000
# From this value up a reset is a Unix time in milliseconds: as seconds it would be past the
# year 5000, as milliseconds it is 1973 or later.
MILLISECONDS_THRESHOLD = 100_000_000_000
# Numbers of more digits than this are not a budget any API sends: the header is ignored.
_MAX_DIGITS = 15
# A reset: up to 15 digits, and a fraction (some APIs send Unix times to the millisecond).
_RESET_NUMBER = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
# The stretch factor never exceeds this (a hundred times slower is the most the figure says;
# with nothing left to spend before the reset, requests wait for the reset instead).
MAX_STRETCH = 100.0
# Pacing is logged when it starts once polling runs this much slower than planned.
_STRETCH_LOGGED = 1.05
# Each kind of budget line (low, spent, sufficient) is logged at most once in this many seconds;
# more often, at debug level.
LOG_EVERY_SECONDS = 60.0
# A wait shorter than this is float rounding of a wait that has ended: none.
_NEGLIGIBLE_SECONDS = 1e-6
# A reset announced further ahead than this is taken as this far: with nothing left to spend,
# requests wait at most this long before the exporter asks again.
MAX_RESET_SECONDS = 86400.0

# A header that any dialect of rate-limit announcement includes.
_ANNOUNCING = ("X-RateLimit-Remaining", "RateLimit-Remaining", "RateLimit")
_PAIR = re.compile(r"\s*([A-Za-z-]+)\s*=\s*\"?([^\";,\s]*)\"?\s*")


class RateLimit(NamedTuple):
    """What one response said of the budget; a field it did not give is None."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # Unix time


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_DIGITS:
        return None
    return int(text)


def _reset_at(text: str | None, now: float) -> float | None:
    """A reset given as seconds from now, a Unix time in seconds or milliseconds, or an HTTP
    date; None if unreadable."""
    if text is None:
        return None
    text = text.strip()
    if _RESET_NUMBER.fullmatch(text):
        value = float(text)
        if value >= MILLISECONDS_THRESHOLD:
            return value / 1000
        return value if value >= EPOCH_THRESHOLD else now + value
    if len(text) > 64 or not text.isascii():
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _structured(value: str) -> dict[str, str]:
    """Parameters of a structured RateLimit field: ``limit=100, remaining=5, reset=30`` (older
    drafts) or ``"default";r=5;t=30`` (newer ones); keys lowercased, first wins."""
    found: dict[str, str] = {}
    for part in re.split(r"[;,]", value[:512]):
        match = _PAIR.fullmatch(part)
        if match is not None:
            found.setdefault(match.group(1).lower(), match.group(2))
    return found


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimit | None:
    """The budget an answer's headers announce, or None when they announce none.

    Understood: ``X-RateLimit-Limit/-Remaining/-Reset``, the IETF draft's
    ``RateLimit-Limit/-Remaining/-Reset``, and its structured ``RateLimit`` field (with
    ``RateLimit-Policy``'s quota ``q`` as the limit). Limits and counts that are not plain
    non-negative integers are ignored, never an error; so is a reset that is neither a
    non-negative number nor an HTTP date.
    """
    for prefix in ("X-RateLimit-", "RateLimit-"):
        limit = _number(headers.get(prefix + "Limit"))
        remaining = _number(headers.get(prefix + "Remaining"))
        if limit is not None or remaining is not None:
            return RateLimit(limit, remaining, _reset_at(headers.get(prefix + "Reset"), now))
    field = headers.get("RateLimit")
    if field is None:
        return None
    params = _structured(field)
    policy = _structured(headers.get("RateLimit-Policy", ""))
    limit = _number(params.get("limit") or policy.get("q") or policy.get("limit"))
    remaining = _number(params.get("remaining") or params.get("r"))
    if limit is None and remaining is None:
        return None
    return RateLimit(limit, remaining, _reset_at(params.get("reset") or params.get("t"), now))


class Pace(Enum):
    """How the budget lets polling run, as last logged."""

    FREE = "free"  # on its schedule
    PACED = "paced"  # requests spaced at the allowed rate
    SPENT = "spent"  # nothing to spend before the reset: requests wait for it


class ApiBudget:
    """The latest budget the API announced, and how far polling is stretched to respect it.

    Pacing: while the API says how many requests remain until its reset, the exporter spends at
    most ``share`` of them before the reset, and none of the last ``reserve`` (a fraction of
    the limit), so that the other clients of the same key (the customer's own integration) are
    never starved by a monitoring tool. When that allows fewer requests per second than the
    schedule plans, ``acquire`` (awaited before every request) spaces requests at the allowed
    rate, or, with not one request to spend, holds them until the reset; ``stretch`` says how
    much slower polling runs (1 when the budget allows the schedule, or no budget is announced,
    or pacing is off) and ``wait_seconds`` how long the next request waits.

    The allowed rate is judged at each answer that announces a budget, and a held request is
    judged again at once: no wait outlasts the budget it was computed from, and none lasts past
    the announced reset (at most MAX_RESET_SECONDS ahead).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        planned_rate: Callable[[], float],
        pacing: bool = True,
        share: float = 0.5,
        reserve: float = 0.1,
    ) -> None:
        self._clock = clock
        self._planned_rate = planned_rate
        self._pacing = pacing
        self._share = share
        self._reserve = reserve
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset_at: float | None = None  # Unix time, at most MAX_RESET_SECONDS ahead
        self._reset_deadline: float | None = None  # the same reset on the monotonic clock
        self._allowed: float | None = None  # requests/s the last announcement allows
        self._last_start: float | None = None  # monotonic time the latest request started
        self._held = 0  # requests waiting in acquire
        self._held_since: float | None = None  # monotonic time they have waited since
        self._changed = asyncio.Event()  # set (and replaced) when a wait must be judged again
        self._logged = Pace.FREE
        self._logged_deadline: float | None = None
        self._last_logged: dict[Pace, float] = {}  # monotonic time of each kind's last line

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the budget from a response's headers (any status); no headers, no change."""
        # Three lookups first: on an API without rate-limit headers (every answer's case) this
        # is all a fetch pays (spelled out: a generator over _ANNOUNCING costs twice as much).
        x_remaining, remaining, combined = _ANNOUNCING
        if x_remaining not in headers and remaining not in headers and combined not in headers:
            return
        wall, now = self._clock.time(), self._clock.monotonic()
        announced = parse_rate_limit(headers, wall)
        if announced is None:
            return
        held_until = self._held_until(now)
        if announced.limit is not None:
            self.limit = announced.limit
        if announced.remaining is not None:
            self.remaining = announced.remaining
        if announced.reset_at is not None:
            ahead = min(announced.reset_at - wall, MAX_RESET_SECONDS)
            self.reset_at = wall + ahead
            self._reset_deadline = now + ahead
        self._allowed = self._allowed_from(now)
        if self._held_until(now) != held_until:
            self._changed.set()  # every held request judges its wait again
            self._changed = asyncio.Event()
        self._log_change(now)

    def _allowed_from(self, now: float) -> float | None:
        """Requests per second the budget allows from ``now`` until the reset; 0 when not one
        request may be spent before it; None when it does not limit."""
        if self.remaining is None or self._reset_deadline is None:
            return None
        left = self._reset_deadline - now
        if left <= 0:
            return None
        spendable = self._share * (self.remaining - self._reserve * (self.limit or 0))
        return spendable / left if spendable >= 1 else 0.0

    def seconds_to_reset(self) -> float | None:
        """Seconds until the announced reset (negative once past), None when none is known."""
        if self._reset_deadline is None:
            return None
        return self._reset_deadline - self._clock.monotonic()

    def allowed_rate(self) -> float | None:
        """Requests per second the latest announcement allows until its reset (0: none before
        it); None when it does not limit (no budget announced, no reset known, the reset
        passed, or pacing is off)."""
        left = self.seconds_to_reset()
        if not self._pacing or self._allowed is None or left is None or left <= 0:
            return None
        return self._allowed

    @property
    def stretch(self) -> float:
        """How many times slower than its schedule polling runs to respect the budget (>= 1)."""
        allowed, planned = self.allowed_rate(), self._planned_rate()
        if allowed is None or planned <= 0 or allowed >= planned:
            return 1.0
        return MAX_STRETCH if allowed == 0 else min(MAX_STRETCH, planned / allowed)

    def _held_until(self, now: float) -> float | None:
        """Monotonic time before which no request may start; None when none is held."""
        allowed, deadline = self.allowed_rate(), self._reset_deadline
        if allowed is None or deadline is None or self.stretch == 1.0:
            return None
        if allowed == 0:
            return deadline
        if self._last_start is None:
            return None
        until = min(self._last_start + 1.0 / allowed, deadline)
        return until if until > now else None

    @property
    def wait_seconds(self) -> float:
        """Seconds the next request waits for the budget now (0 when it may start at once)."""
        now = self._clock.monotonic()
        until = self._held_until(now)
        if until is None or until - now < _NEGLIGIBLE_SECONDS:
            return 0.0
        return min(until - now, MAX_RESET_SECONDS)  # exactly the cap, whatever float sums do

    @property
    def paused_until(self) -> float | None:
        """Unix time before which no request starts for the budget's sake; None when the next
        request may start at once."""
        wait = self.wait_seconds
        return self._clock.time() + wait if wait > 0 else None

    @property
    def paused_since(self) -> float | None:
        """Unix time since which requests have been held for the budget without one starting;
        None while no request is held."""
        if not self._held or self._held_since is None or self.wait_seconds <= 0:
            return None
        return self._clock.time() - (self._clock.monotonic() - self._held_since)

    def _log_change(self, now: float) -> None:
        """Log when pacing starts, when the budget is spent and when polling runs on its
        schedule again (never while a request is still held: stretch 1 holds none). An API
        whose answers flip the budget to and fro gets one line per kind a minute, the rest at
        debug level."""
        stretch, remaining = self.stretch, self.remaining
        limit = self.limit if self.limit is not None else "?"
        reset_in = self.seconds_to_reset() or 0.0
        if stretch > 1.0 and self.allowed_rate() == 0:
            if self._logged is Pace.SPENT and (self._logged_deadline or 0.0) > now:
                return
            self._logged_deadline = self._reset_deadline
            pace, level = Pace.SPENT, logging.WARNING
            message = (
                "API budget spent (%s of %s requests left, the rest kept for the key's other "
                "clients): no request until the reset in %.0fs"
            )
            args: tuple[object, ...] = (remaining, limit, reset_in)
        elif stretch >= _STRETCH_LOGGED and self._logged is not Pace.PACED:
            pace, level = Pace.PACED, logging.WARNING
            message = (
                "API budget low (%s of %s requests left, reset in %.0fs): polling %.1fx slower"
            )
            args = (remaining, limit, reset_in, stretch)
        elif stretch == 1.0 and self._logged is not Pace.FREE:
            pace, level = Pace.FREE, logging.INFO
            message, args = "API budget sufficient again: polling on its schedule", ()
        else:
            return
        self._logged = pace
        if now - self._last_logged.get(pace, -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
            level = logging.DEBUG
        else:
            self._last_logged[pace] = now
        log.log(level, message, *args)

    async def acquire(self) -> None:
        """Wait until the budget allows the next request (at once when it does not limit).

        No lock is held while waiting: an answer that changes the budget wakes every waiting
        request, which judges its wait again.
        """
        if self.remaining is None or not self._pacing:
            return  # nothing announced, or pacing off: no wait (the common case)
        self._held += 1
        try:
            while (wait := self.wait_seconds) > 0:
                if self._held_since is None:
                    self._held_since = self._clock.monotonic()
                await self._clock.wait(self._changed, wait)
        finally:
            self._held -= 1
            if not self._held:
                self._held_since = None
        now = self._clock.monotonic()
        self._last_start = now
        if self._held:
            self._held_since = now  # the ones still waiting are held from this start on
