"""What a fetch's outcome means: the bounded ``reason`` label and when to fetch next (pure)."""

from __future__ import annotations

import enum
from typing import NamedTuple

from exporter.api.client import (
    ConnectionFailedError,
    HTTPStatusError,
    RequestTimeoutError,
)
from exporter.api.models import Campaign, CampaignStatus
from exporter.config import Settings

# Longest wait honoured from a Retry-After header (seconds).
MAX_RETRY_AFTER_SECONDS = 3600.0
# Backoff never waits longer than this many intervals, nor (for short intervals) 10 minutes.
BACKOFF_CAP_INTERVALS = 10
BACKOFF_CAP_SECONDS = 600.0
# A success schedules the next fetch 90-100% of the interval after its round started.
SUCCESS_JITTER = (0.9, 1.0)
# A failure's backoff is stretched by 0-25%, so failing campaigns do not retry in lockstep.
FAILURE_JITTER = (1.0, 1.25)


class Reason(enum.StrEnum):
    """Why a fetch failed: the ``reason`` label of ``dialnexa_exporter_campaign_errors_total``."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    INVALID_RESPONSE = "invalid_response"


# The fixed set of reason labels, in documentation order; error_reason assigns only these.
ERROR_REASONS: tuple[str, ...] = tuple(reason.value for reason in Reason)

_BY_STATUS = {
    401: Reason.UNAUTHORIZED,
    403: Reason.FORBIDDEN,
    404: Reason.NOT_FOUND,
    429: Reason.RATE_LIMITED,
}


def error_reason(error: BaseException) -> Reason:
    """The bounded ``reason`` label for a failed fetch."""
    if isinstance(error, HTTPStatusError):
        status = error.status
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        if status >= 500:
            return Reason.SERVER_ERROR
        if status >= 400:
            return Reason.CLIENT_ERROR
        return Reason.INVALID_RESPONSE  # a 1xx/3xx the client did not follow
    if isinstance(error, RequestTimeoutError):
        return Reason.TIMEOUT
    if isinstance(error, ConnectionFailedError):
        return Reason.CONNECTION
    return Reason.INVALID_RESPONSE


def backoff_delay(failures: int, interval: float, jitter: float) -> float:
    """Exponential backoff: the interval doubled per consecutive failure, times ``jitter``
    (drawn from FAILURE_JITTER), capped at ten intervals or 10 minutes, never below one."""
    cap = max(interval, min(BACKOFF_CAP_INTERVALS * interval, BACKOFF_CAP_SECONDS))
    base = min(cap, interval * 2.0 ** max(0, failures - 1))
    return min(cap, base * jitter)


class Retry(NamedTuple):
    """When to fetch a failed campaign again."""

    delay: float  # seconds from now
    hard: bool  # a Retry-After deadline: never pulled forward by coalescing


def retry_after_failure(
    error: BaseException, failures: int, interval: float, jitter: float
) -> Retry:
    """Honour a positive Retry-After (capped at an hour), else back off exponentially."""
    retry_after = error.retry_after if isinstance(error, HTTPStatusError) else None
    if retry_after is not None and retry_after > 0:
        return Retry(min(retry_after, MAX_RETRY_AFTER_SECONDS), hard=True)
    return Retry(backoff_delay(failures, interval, jitter), hard=False)


def next_due_after_success(round_started: float, interval: float, jitter: float) -> float:
    """When a fetched campaign is due again: ``interval`` times ``jitter`` (SUCCESS_JITTER) after
    its round started, not after its own fetch, so a round's campaigns stay due together."""
    return round_started + interval * jitter


def drops_data(reason: Reason) -> bool:
    """True when a failure means the campaign's data must go at once: it no longer exists."""
    return reason is Reason.NOT_FOUND


def poll_interval(record: Campaign | None, settings: Settings) -> float:
    """Seconds between fetches: the terminal interval once a campaign is completed or cancelled."""
    if record is not None and record.is_terminal:
        return settings.terminal_poll_interval_seconds
    return settings.poll_interval_seconds


def stale_limit(record: Campaign | None, settings: Settings) -> float:
    """Seconds without a success after which a campaign's data is dropped.

    A completed or cancelled campaign is only fetched every terminal interval, so its data is
    kept that much longer: it is not stale merely because nobody asked.
    """
    if record is not None and record.is_terminal:
        return settings.stale_after_seconds + settings.terminal_poll_interval_seconds
    return settings.stale_after_seconds


_TERMINAL = Campaign("", status=CampaignStatus.COMPLETED)


class SuccessTiming(NamedTuple):
    """What the settings make of a successful fetch, indexed by whether its record is terminal
    (``record.status in TERMINAL_STATUSES``): seconds its data stays fresh and seconds to its
    next fetch; and the stall threshold. Worked out once: a success is nearly every fetch."""

    fresh_for: tuple[float, float]
    interval: tuple[float, float]
    max_gap: float

    @classmethod
    def of(cls, settings: Settings) -> SuccessTiming:
        """The timing these settings give."""
        return cls(
            (stale_limit(None, settings), stale_limit(_TERMINAL, settings)),
            (poll_interval(None, settings), poll_interval(_TERMINAL, settings)),
            settings.stall_after_seconds,
        )
