"""Campaign records as the DialNexa API returns them, parsed and checked; no I/O."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass


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
        try:
            return cls(value.strip().lower())
        except ValueError:
            return cls.UNKNOWN


TERMINAL_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED})


class RecordError(ValueError):
    """A response body is not a usable campaign record."""


def _reject_bool(value: object) -> object:
    # JSON true/false must not pass as 1/0 in a count.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _integral_float(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Before-validators run last-declared first: booleans are refused before floats are narrowed.
Count = Annotated[
    StrictInt, Field(ge=0), BeforeValidator(_integral_float), BeforeValidator(_reject_bool)
]
# Strict: a JSON number only (ints welcome), never a numeric string.
NonNegativeNumber = Annotated[
    float, Strict(), Field(ge=0, allow_inf_nan=False), BeforeValidator(_reject_bool)
]


def _valid_unicode(value: object) -> object:
    # JSON may carry lone surrogates ("\ud800") that no UTF-8 exposition can hold:
    # show U+FFFD in their place rather than refuse an otherwise good record.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


Text = Annotated[StrictStr, BeforeValidator(_valid_unicode)]


def _parse_timestamp(value: object) -> datetime | None:
    if value is None:
        return None
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


Timestamp = Annotated[datetime | None, BeforeValidator(_parse_timestamp)]


def _status(value: object) -> object:
    if value is None or isinstance(value, CampaignStatus):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return CampaignStatus.parse(value)


Status = Annotated[CampaignStatus | None, BeforeValidator(_status)]

# Records are plain slotted dataclasses that pydantic validates into: one small object per
# campaign, which keeps memory and garbage-collection work low at ten thousand campaigns.
_RECORD = ConfigDict(extra="ignore", strict=False)


@dataclass(frozen=True, slots=True, config=_RECORD)
class RetryConfig:
    """``retry_config``: how often a lead is retried and how far apart."""

    max_retries: Count | None = None
    retry_interval_minutes: NonNegativeNumber | None = None


# Distinct retry settings are few: equal ones share one object, which keeps a record's worth of
# objects out of the garbage collector's work every time a campaign's record is replaced.
_RETRY_CONFIGS: dict[RetryConfig, RetryConfig] = {}
_RETRY_CONFIGS_MAX = 1024


def _shared_retry_config(value: RetryConfig | None) -> RetryConfig | None:
    if value is None:
        return None
    shared = _RETRY_CONFIGS.get(value)
    if shared is not None:
        return shared
    if len(_RETRY_CONFIGS) < _RETRY_CONFIGS_MAX:
        _RETRY_CONFIGS[value] = value
    return value


SharedRetryConfig = Annotated[RetryConfig | None, AfterValidator(_shared_retry_config)]


@dataclass(frozen=True, slots=True, config=_RECORD)
class Campaign:
    """One campaign as returned by ``GET /v1/campaigns/{id}``; absent fields stay ``None``."""

    id: StrictStr
    name: Text | None = None
    organization_id: Text | None = None
    agent_id: Text | None = None
    from_phone_number: Text | None = None
    status: Status = None
    max_concurrent_calls: Count | None = None
    total_leads: Count | None = None
    completed_calls: Count | None = None
    pending_calls: Count | None = None
    retry_config: SharedRetryConfig = None
    scheduled_at: Timestamp = None
    created_at: Timestamp = None

    @property
    def is_terminal(self) -> bool:
        """Completed and cancelled campaigns no longer change."""
        return self.status in TERMINAL_STATUSES


_CAMPAIGN = TypeAdapter(Campaign)


def parse_campaign(document: Any, expected_id: str) -> Campaign:
    """Validate a decoded JSON document as the record for ``expected_id`` or raise RecordError."""
    if not isinstance(document, dict):
        raise RecordError(f"expected a JSON object, got {type(document).__name__}")
    try:
        campaign = _CAMPAIGN.validate_python(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise RecordError(f"field {where or '?'}: {first.get('msg', 'invalid')}") from None
    if campaign.id != expected_id:
        raise RecordError("record id does not match the requested campaign")
    return campaign
