"""Campaign records as the DialNexa API returns them, parsed and checked; no I/O."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple


class CampaignStatus(enum.StrEnum):
    """Lifecycle states from the API's enum, plus ``unknown`` for anything else it may send."""

    DRAFT = "draft"
    ACTIVE = "active"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: str) -> CampaignStatus:
        """Map an API status string to a state; unrecognised values become ``unknown``."""
        return _STATUS_BY_TEXT.get(value.strip().lower(), cls.UNKNOWN)


_STATUS_BY_TEXT: dict[str, CampaignStatus] = {state.value: state for state in CampaignStatus}
TERMINAL_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED})


class RecordError(ValueError):
    """A response body is not a usable campaign record."""


# The largest number every Prometheus sample value (a float64) carries exactly. A larger one
# would either lose digits or, beyond float range, make the whole scrape unparseable (one such
# record would take every campaign out of Prometheus), so a record holding one is refused.
MAX_EXACT = 2**53
# retry_interval_minutes is exported in seconds (x 60): that too must stay exact.
MAX_RETRY_INTERVAL_MINUTES = MAX_EXACT // 60


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may carry lone surrogates ("\ud800") that no UTF-8 exposition can hold:
        # show U+FFFD in their place rather than refuse an otherwise good record.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _count(value: object) -> int:
    # JSON true/false must not pass as 1/0, nor "438" as 438; 1200.0 is 1200.
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise ValueError("expected a whole number")
    if value < 0:
        raise ValueError("must not be negative")
    if value > MAX_EXACT:
        raise ValueError("is larger than 2^53")
    return value


def _minutes(value: object) -> float:
    if type(value) is not int and type(value) is not float:
        raise ValueError("expected a number")
    if type(value) is int and value > MAX_RETRY_INTERVAL_MINUTES:  # before float(): may overflow
        raise ValueError("is too large")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be a finite number, not negative")
    if number > MAX_RETRY_INTERVAL_MINUTES:
        raise ValueError("is too large")
    return number


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date-time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        # The API documents UTC ("...Z"); a bare local time is read as UTC too.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _status(value: object) -> CampaignStatus:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return CampaignStatus.parse(value)


# Records are checked by hand-written code rather than a validation library: the check costs
# a few microseconds, which matters at ten thousand campaigns polled every few seconds.


class RetryConfig(NamedTuple):
    """``retry_config``: how often a lead is retried and how far apart."""

    max_retries: int | None = None
    retry_interval_minutes: float | None = None


class Campaign(NamedTuple):
    """One campaign as returned by ``GET /v1/campaigns/{id}``; absent fields stay ``None``.

    A named tuple: immutable, and the cheapest such object to make, which matters when
    thousands of records are replaced every round.
    """

    id: str
    name: str | None = None
    organization_id: str | None = None
    agent_id: str | None = None
    from_phone_number: str | None = None
    status: CampaignStatus | None = None
    max_concurrent_calls: int | None = None
    total_leads: int | None = None
    completed_calls: int | None = None
    pending_calls: int | None = None
    retry_config: RetryConfig | None = None
    scheduled_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Completed and cancelled campaigns no longer change."""
        return self.status in TERMINAL_STATUSES


# Distinct retry settings are few: equal ones share one object, which keeps a record's worth of
# objects out of the garbage collector's work every time a campaign's record is replaced.
_RETRY_CONFIGS: dict[tuple[int | None, float | None], RetryConfig] = {}
_RETRY_CONFIGS_MAX = 1024


def _retry_config(value: object) -> RetryConfig:
    if not isinstance(value, dict):
        raise RecordError("field retry_config: expected an object")
    max_retries = value.get("max_retries")
    interval = value.get("retry_interval_minutes")
    try:
        if max_retries is not None:
            max_retries = _count(max_retries)
    except ValueError as exc:
        raise RecordError(f"field retry_config.max_retries: {exc}") from None
    try:
        if interval is not None:
            interval = _minutes(interval)
    except ValueError as exc:
        raise RecordError(f"field retry_config.retry_interval_minutes: {exc}") from None
    key = (max_retries, interval)
    config = _RETRY_CONFIGS.get(key)
    if config is None:
        config = RetryConfig(max_retries, interval)
        if len(_RETRY_CONFIGS) < _RETRY_CONFIGS_MAX:
            _RETRY_CONFIGS[key] = config
    return config


# How each field after the id is checked, in the record's field order; a JSON null is the same
# as the field missing.
_CHECKS: tuple[tuple[str, Callable[[object], object]], ...] = (
    ("name", _text),
    ("organization_id", _text),
    ("agent_id", _text),
    ("from_phone_number", _text),
    ("status", _status),
    ("max_concurrent_calls", _count),
    ("total_leads", _count),
    ("completed_calls", _count),
    ("pending_calls", _count),
    ("retry_config", _retry_config),
    ("scheduled_at", _timestamp),
    ("created_at", _timestamp),
)
assert tuple(name for name, _ in _CHECKS) == Campaign._fields[1:]


def parse_campaign(document: Any, expected_id: str) -> Campaign:
    """Validate a decoded JSON document as the record for ``expected_id`` or raise RecordError."""
    if not isinstance(document, dict):
        raise RecordError(f"expected a JSON object, got {type(document).__name__}")
    campaign_id = document.get("id")
    if campaign_id is None:
        raise RecordError("field id: required")
    if not isinstance(campaign_id, str):
        raise RecordError("field id: expected a string")
    if campaign_id != expected_id:
        raise RecordError("record id does not match the requested campaign")
    get = document.get
    try:
        values = [None if (value := get(name)) is None else check(value) for name, check in _CHECKS]
    except ValueError:
        raise _field_error(document) from None
    return Campaign._make((campaign_id, *values))


def _field_error(document: dict[str, Any]) -> RecordError:
    """The error for the first field that fails its check (the slow path, for bad records)."""
    for name, check in _CHECKS:
        value = document.get(name)
        if value is None:
            continue
        try:
            check(value)
        except RecordError as exc:
            return exc
        except ValueError as exc:
            return RecordError(f"field {name}: {exc}")
    return RecordError("invalid record")
