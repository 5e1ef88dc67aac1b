"""The outcome policy, as tables: reason labels, backoff, Retry-After, next fetch, intervals."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.api.client import (
    ConnectionFailedError,
    FetchError,
    HTTPStatusError,
    InvalidResponseError,
    RequestTimeoutError,
)
from exporter.api.models import TERMINAL_STATUSES, parse_campaign
from exporter.config import Settings, load_settings
from exporter.polling import outcome
from exporter.polling.outcome import (
    ERROR_REASONS,
    Reason,
    Retry,
    SuccessTiming,
    backoff_delay,
    error_reason,
    next_due_after_success,
    poll_interval,
    retry_after_failure,
    stale_limit,
)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RequestTimeoutError("t"), "timeout"),
        (ConnectionFailedError("c"), "connection"),
        (HTTPStatusError(401), "unauthorized"),
        (HTTPStatusError(403), "forbidden"),
        (HTTPStatusError(404), "not_found"),
        (HTTPStatusError(429), "rate_limited"),
        (HTTPStatusError(500), "server_error"),
        (HTTPStatusError(503), "server_error"),
        (HTTPStatusError(599), "server_error"),
        (HTTPStatusError(400), "client_error"),
        (HTTPStatusError(410), "client_error"),
        (HTTPStatusError(304), "invalid_response"),
        (HTTPStatusError(101), "invalid_response"),
        (InvalidResponseError("x"), "invalid_response"),
        (FetchError("other"), "invalid_response"),
        (ZeroDivisionError(), "invalid_response"),
    ],
)
def test_error_reasons_are_the_fixed_set(error: BaseException, reason: str) -> None:
    """Each typed error maps to its documented reason label."""
    assert error_reason(error) == reason
    assert error_reason(error) in ERROR_REASONS


def test_the_reason_set_is_the_one_the_code_assigns() -> None:
    """ERROR_REASONS is derived from the Reason enum, and error_reason returns nothing else
    (every return statement names a Reason member or the status table)."""
    assert tuple(Reason) == tuple(Reason(r) for r in ERROR_REASONS)
    tree = ast.parse(inspect.getsource(error_reason))
    returned = [node.value for node in ast.walk(tree) if isinstance(node, ast.Return)]
    for node in returned:
        assert isinstance(node, ast.Attribute | ast.Subscript), ast.dump(node)
    assert set(outcome._BY_STATUS.values()) <= set(Reason)


@pytest.mark.parametrize(
    ("failures", "interval", "jitter", "delay"),
    [
        (1, 10.0, 1.0, 10.0),  # the first retry waits one interval
        (2, 10.0, 1.0, 20.0),
        (3, 10.0, 1.0, 40.0),
        (4, 10.0, 1.25, 100.0),  # 80 x 1.25 = 100: the cap of ten intervals
        (9, 10.0, 1.0, 100.0),  # capped
        (50, 30.0, 1.25, 300.0),  # ten intervals of 30 s
        (50, 90.0, 1.25, 600.0),  # ten minutes at most...
        (50, 900.0, 1.25, 900.0),  # ...but never less than one interval
        (0, 10.0, 1.0, 10.0),  # no failure counted yet: one interval
    ],
)
def test_backoff_table(failures: int, interval: float, jitter: float, delay: float) -> None:
    """Doubling per failure, jitter on top, capped at min(10 intervals, 10 min) >= 1 interval."""
    assert backoff_delay(failures, interval, jitter) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("error", "failures", "expected"),
    [
        (HTTPStatusError(429, retry_after=120.0), 1, Retry(120.0, hard=True)),
        (HTTPStatusError(429, retry_after=1e9), 1, Retry(3600.0, hard=True)),  # capped at 1 h
        (HTTPStatusError(503, retry_after=30.0), 3, Retry(30.0, hard=True)),
        (HTTPStatusError(429, retry_after=0.0), 2, Retry(20.0, hard=False)),  # 0: back off
        (HTTPStatusError(429), 2, Retry(20.0, hard=False)),
        (RequestTimeoutError("t"), 3, Retry(40.0, hard=False)),
    ],
)
def test_retry_after_a_failure(error: BaseException, failures: int, expected: Retry) -> None:
    """A positive Retry-After is honoured exactly (at most an hour) and never pulled forward;
    otherwise exponential backoff."""
    assert retry_after_failure(error, failures, 10.0, 1.0) == expected


@pytest.mark.parametrize(
    ("started", "interval", "jitter", "due"),
    [(100.0, 30.0, 0.9, 127.0), (100.0, 30.0, 1.0, 130.0), (0.0, 600.0, 0.95, 570.0)],
)
def test_next_fetch_counts_from_the_round_start(
    started: float, interval: float, jitter: float, due: float
) -> None:
    """After a success the campaign is due interval x jitter after its round started."""
    assert next_due_after_success(started, interval, jitter) == pytest.approx(due)


def settings_for(**overrides: Any) -> Settings:
    """Settings with a 30 s interval, 600 s terminal interval, 300 s STALE_AFTER."""
    flags: dict[str, Any] = {"api_key": SecretStr("k"), "campaign_ids": ["c"]}
    flags.update(overrides)
    return load_settings(flags)


@pytest.mark.parametrize(
    ("status", "interval", "stale"),
    [
        (None, 30.0, 300.0),  # no record yet
        ("active", 30.0, 300.0),
        ("paused", 30.0, 300.0),
        ("unknown-value", 30.0, 300.0),
        ("completed", 600.0, 900.0),
        ("cancelled", 600.0, 900.0),
    ],
)
def test_intervals_and_stale_limits_by_status(
    status: str | None, interval: float, stale: float
) -> None:
    """Finished campaigns are fetched every terminal interval, and their data is kept that much
    longer than STALE_AFTER; every other campaign uses the poll interval."""
    settings = settings_for()
    record = None if status is None else parse_campaign({"id": "c", "status": status}, "c")
    assert poll_interval(record, settings) == interval
    assert stale_limit(record, settings) == stale
    if record is not None:  # the poller's worked-out table says the same
        timing = SuccessTiming.of(settings_for(stall_after_seconds=1200))
        terminal = record.status in TERMINAL_STATUSES
        assert (timing.interval[terminal], timing.fresh_for[terminal]) == (interval, stale)
        assert timing.max_gap == 1200
