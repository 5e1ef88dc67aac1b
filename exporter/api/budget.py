"""The API's request budget, as its rate-limit headers tell it, and pacing so that it lasts."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from exporter.clock import Clock

log = logging.getLogger("exporter.budget")

# A reset value from this many seconds up is a Unix time, below it a delay from now: no rate
# limit window lasts 30 years, and no Unix time of this century is that small.
EPOCH_THRESHOLD = 1_000_000_000
# Numbers of more digits than this are not a budget any API sends: the header is ignored.
_MAX_DIGITS = 15
# The stretch factor never exceeds this (ten times slower is the most pacing ever stretches
# polling; with no budget left at all, requests wait for the reset instead).
MAX_STRETCH = 100.0
# Stretching starts and stops are logged; this much above 1 counts as stretching.
_STRETCH_LOGGED = 1.05
# A reset announced further ahead than this is taken as this far: with nothing left to spend,
# the exporter then asks again after a day rather than never.
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
    """A reset given as seconds from now, a Unix time, or an HTTP date; None if unreadable."""
    if text is None:
        return None
    seconds = _number(text)
    if seconds is not None:
        return float(seconds) if seconds >= EPOCH_THRESHOLD else now + seconds
    if len(text) > 64 or not text.isascii():
        return None
    try:
        return parsedate_to_datetime(text.strip()).timestamp()
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
    ``RateLimit-Policy``'s quota ``q`` as the limit). Values that are not plain non-negative
    integers are ignored, never an error.
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


class ApiBudget:
    """The latest budget the API announced, and how far polling is stretched to respect it.

    Pacing: while the API says how many requests remain until its reset, the exporter spends at
    most ``share`` of them before the reset, and none of the last ``reserve`` (a fraction of
    the limit), so that the other clients of the same key (the customer's own integration) are
    never starved by a monitoring tool. When that allows fewer requests per second than the
    schedule plans, ``acquire`` (awaited before every request) spaces requests at the allowed
    rate, and ``stretch`` says how much slower polling runs (1 when the budget allows the
    schedule, or no budget is announced, or pacing is off).
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
        self.reset_at: float | None = None
        self._stretching = False
        self._next_slot = 0.0  # monotonic time before which no paced request starts
        self._never = asyncio.Event()
        self._lock = asyncio.Lock()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the budget from a response's headers (any status); no headers, no change."""
        # Three lookups first: on an API without rate-limit headers (every answer's case) this
        # is all a fetch pays, about a microsecond.
        if not any(name in headers for name in _ANNOUNCING):
            return
        announced = parse_rate_limit(headers, self._clock.time())
        if announced is None:
            return
        if announced.limit is not None:
            self.limit = announced.limit
        if announced.remaining is not None:
            self.remaining = announced.remaining
        if announced.reset_at is not None:
            self.reset_at = min(announced.reset_at, self._clock.time() + MAX_RESET_SECONDS)
        self._log_change()

    def seconds_to_reset(self) -> float | None:
        """Seconds until the announced reset (negative once past), None when none is known."""
        return None if self.reset_at is None else self.reset_at - self._clock.time()

    def allowed_rate(self) -> float | None:
        """Requests per second the budget allows until its reset; None when it does not limit
        (no budget announced, no reset known, the reset passed, or pacing is off)."""
        left = self.seconds_to_reset()
        if not self._pacing or self.remaining is None or left is None or left <= 0:
            return None
        spare = self.remaining - (self._reserve * self.limit if self.limit else 0.0)
        return max(0.0, self._share * spare / left)

    @property
    def stretch(self) -> float:
        """How many times slower than its schedule polling runs to respect the budget (>= 1)."""
        allowed, planned = self.allowed_rate(), self._planned_rate()
        if allowed is None or planned <= 0 or allowed >= planned:
            return 1.0
        return MAX_STRETCH if allowed == 0 else min(MAX_STRETCH, planned / allowed)

    def _log_change(self) -> None:
        stretch = self.stretch
        if not self._stretching and stretch >= _STRETCH_LOGGED:
            self._stretching = True
            log.warning(
                "API budget low (%s of %s requests left, reset in %.0fs): polling %.1fx slower",
                self.remaining,
                self.limit if self.limit is not None else "?",
                self.seconds_to_reset() or 0.0,
                stretch,
            )
        elif self._stretching and stretch < _STRETCH_LOGGED:
            self._stretching = False
            log.info("API budget sufficient again: polling on its schedule")

    def _wait(self) -> float:
        """Seconds before the next request may start; 0 reserves the slot it starts in."""
        now = self._clock.monotonic()
        allowed = self.allowed_rate()
        if allowed is None or self.stretch == 1.0:
            return 0.0
        if allowed == 0:  # nothing may be spent before the reset: wait for it
            return max(0.0, self.seconds_to_reset() or 0.0)
        if self._next_slot > now:
            return self._next_slot - now
        self._next_slot = now + 1.0 / allowed
        return 0.0

    async def acquire(self) -> None:
        """Wait until the budget allows the next request (at once when it does not limit)."""
        if self.remaining is None or not self._pacing:
            return  # nothing announced, or pacing off: no lock, no wait (the common case)
        async with self._lock:  # first come, first served
            while (wait := self._wait()) > 0:
                await self._clock.wait(self._never, wait)
