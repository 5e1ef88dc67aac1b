"""What a campaign record field is: its declaration (JSON name, kind, bounds, metric, help)
and the check of each kind; the fields themselves are declared on ``models.Campaign``."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from msgspec import Meta


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


class RecordError(ValueError):
    """A response body is not a usable campaign record."""


# The largest number every Prometheus sample value (a float64) carries exactly. A larger one
# would either lose digits or, beyond float range, make the whole scrape unparseable (one such
# record would take every campaign out of Prometheus), so a record holding one is refused.
MAX_EXACT = 2**53

# Text from the API becomes label values (and status page cells, log fields): longer text is
# cut to this many characters (code points), the last one being TRUNCATION_MARK. Names and ids
# seen in practice are well under 100 characters. Measured at 10,000 campaigns whose four texts
# all run past the cap in 4-byte characters, a cap of 256 peaked at 251 MiB of the chart's
# 256 Mi, 128 well under it (docs/performance.md, "Records at their caps").
TEXT_MAX_CHARS = 128
TRUNCATION_MARK = "…"


def truncate_text(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    """``text`` if at most ``limit`` characters, else its first ``limit - 1`` and the mark.

    Characters are code points: a decoded JSON string holds an astral character (an escaped
    surrogate pair in the body) as one, so a cut never splits it; escaping for the exposition
    happens after the cut, so a cut never splits an escape either.
    """
    if len(text) <= limit:
        return text
    return text[: limit - 1] + TRUNCATION_MARK


class FieldKind(enum.Enum):
    """How a field's JSON value is checked and what the exporter makes of it."""

    TEXT = "text"  # a string, cut to max_length; a label of dialnexa_campaign_info
    STATUS = "status"  # a string mapped to CampaignStatus; one 0/1 series per state
    COUNT = "count"  # a whole number, 0 to maximum (1200.0 counts as 1200)
    NUMBER = "number"  # a finite number, 0 to maximum; exported times scale
    TIMESTAMP = "timestamp"  # an ISO 8601 date-time (no offset: UTC); exported as Unix time


@dataclass(frozen=True, slots=True)
class RecordField:
    """One field of a campaign record, declared once: everything else is derived from it.

    ``json`` is its name in the API's record ("retry_config.max_retries" for a field of a
    nested object; empty: the attribute's name). ``metric`` and ``help`` make its family
    (TEXT fields are labels of dialnexa_campaign_info and have none). ``example`` is what the
    simulator sends when nothing scripts the field. ``cached``: the field's rendered lines are
    kept until it changes (for values that rarely move); None: by kind, all but counts.
    """

    kind: FieldKind
    metric: str | None = None
    help: str = ""
    json: str = ""
    example: Any = None
    scale: int = 1
    maximum: int | None = None  # COUNT, NUMBER: the largest accepted (default MAX_EXACT // scale)
    max_length: int = TEXT_MAX_CHARS  # TEXT: longer text is cut (truncate_text)
    cached: bool | None = None
    attr: str = ""  # the model attribute; set when the declarations are collected

    @property
    def path(self) -> tuple[str, ...]:
        """The JSON name split at dots: one name, or the object's and the field's."""
        return tuple((self.json or self.attr).split("."))

    @property
    def keeps_lines(self) -> bool:
        """Whether rendered lines are kept between renders until the field changes."""
        return self.kind is not FieldKind.COUNT if self.cached is None else self.cached

    @property
    def limit(self) -> int:
        """The largest value accepted (COUNT, NUMBER), so that value times scale stays exact."""
        return MAX_EXACT // self.scale if self.maximum is None else self.maximum

    def compiled(self) -> tuple[Any, Callable[[Any], object] | None]:
        """The field for the compiled body decoder (``exporter.api.models.fast_campaign``):
        the type msgspec checks the JSON value against, None allowed, holding exactly the
        values ``check`` accepts unchanged; and what then turns the value into the model's
        (None: nothing). A value outside it (text past the cap, 1200.0 for a count, a bool)
        is left to ``check``, which cuts, converts or refuses it."""
        kind = self.kind
        if kind is FieldKind.TEXT:
            # msgspec refuses lone surrogates and counts characters as Python does.
            return Annotated[str, Meta(max_length=self.max_length)] | None, None
        if kind is FieldKind.STATUS:
            # A state's exact text; any other (" Active", "ACTIVE", a new state) is check's.
            return CampaignStatus | None, None
        if kind is FieldKind.COUNT:
            return Annotated[int, Meta(ge=0, le=self.limit)] | None, None
        if kind is FieldKind.NUMBER:
            # msgspec takes a whole number for a float as float() does (exact up to the limit).
            return Annotated[float, Meta(ge=0, le=self.limit)] | None, None
        return str | None, _timestamp

    def check(self) -> Callable[[object], object]:
        """The function checking this field's JSON value (not None): the value for the model,
        or ValueError saying what is wrong."""
        if self.kind is FieldKind.TEXT:
            return _text if self.max_length == TEXT_MAX_CHARS else _text_within(self.max_length)
        if self.kind is FieldKind.STATUS:
            return _status
        if self.kind is FieldKind.COUNT:
            return _count if self.limit == MAX_EXACT else _count_within(self.limit)
        if self.kind is FieldKind.NUMBER:
            return _number_within(self.limit)
        return _timestamp


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if len(value) > TEXT_MAX_CHARS:  # before the check below: that one reads every character
        value = value[: TEXT_MAX_CHARS - 1] + TRUNCATION_MARK
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may carry lone surrogates ("\ud800") that no UTF-8 exposition can hold:
        # show U+FFFD in their place rather than refuse an otherwise good record.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _text_within(limit: int) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return _text(truncate_text(value, limit))

    return check


def _status(value: object) -> CampaignStatus:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return CampaignStatus.parse(value)


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


def _count_within(limit: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        number = _count(value)
        if number > limit:
            raise ValueError(f"is larger than {limit}")
        return number

    return check


def _number_within(limit: int) -> Callable[[object], float]:
    def check(value: object) -> float:
        if type(value) is not int and type(value) is not float:
            raise ValueError("expected a number")
        if type(value) is int and value > limit:  # before float(): may overflow
            raise ValueError("is too large")
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError("must be a finite number, not negative")
        if number > limit:
            raise ValueError("is too large")
        return number

    return check


# Timestamps read, by their text: a campaign's creation and schedule times come again in every
# record, and reading one costs several times looking it up. Emptied when full.
_TIMES: dict[str, datetime] = {}
_TIMES_KEPT = 25_000


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date-time string")
    parsed = _TIMES.get(value)
    if parsed is None:
        parsed = _read_timestamp(value)
        if len(_TIMES) >= _TIMES_KEPT:
            _TIMES.clear()
        _TIMES[value] = parsed
    return parsed


def _read_timestamp(value: str) -> datetime:
    text = value.strip()
    if text.endswith("z"):  # Python reads "Z" itself (3.11), not its lower case
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        # The API documents UTC ("...Z"); a bare local time is read as UTC too.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
