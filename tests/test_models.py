"""Parsing campaign records: both shapes of the API page, tolerance, and what is refused."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, get_args, get_type_hints

import pytest

from exporter.api import fields
from exporter.api.fields import FieldKind
from exporter.api.models import (
    RECORD_FIELDS,
    TEXT_MAX_CHARS,
    TRUNCATION_MARK,
    Campaign,
    CampaignStatus,
    RecordError,
    RecordField,
    parse_campaign,
    record_document,
)
from tests.helpers import FIRST_EXAMPLE, SECOND_EXAMPLE

COUNT_FIELDS = [field for field in RECORD_FIELDS if field.kind is FieldKind.COUNT]
TEXT_FIELDS = [field for field in RECORD_FIELDS if field.kind is FieldKind.TEXT]


def test_first_example_parses_without_counters() -> None:
    """The 'running' example has no counters: they stay None, metadata is kept."""
    record = parse_campaign(FIRST_EXAMPLE, "cmp_xyz789")
    assert record.status is CampaignStatus.RUNNING
    assert record.total_leads is None
    assert record.completed_calls is None
    assert record.pending_calls is None
    assert record.organization_id == "org_xyz"
    assert record.max_retries == 3
    assert record.retry_interval_minutes == 120
    assert record.scheduled_at is None
    assert record.created_at == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def test_second_example_parses_with_counters() -> None:
    """The 'active' example has counters and no organization or retry settings."""
    record = parse_campaign(SECOND_EXAMPLE, "cmp_5tw8vz2rnx1q")
    assert record.status is CampaignStatus.ACTIVE
    assert (record.total_leads, record.completed_calls, record.pending_calls) == (1200, 438, 762)
    assert record.organization_id is None
    assert (record.max_retries, record.retry_interval_minutes) == (None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("draft", CampaignStatus.DRAFT),
        ("PAUSED", CampaignStatus.PAUSED),
        (" completed ", CampaignStatus.COMPLETED),
        ("cancelled", CampaignStatus.CANCELLED),
        ("archived", CampaignStatus.UNKNOWN),
        ("", CampaignStatus.UNKNOWN),
    ],
)
def test_status_outside_the_enum_is_unknown(raw: str, expected: CampaignStatus) -> None:
    """Known statuses map case-insensitively; anything else is `unknown`, not an error."""
    assert parse_campaign({"id": "c", "status": raw}, "c").status is expected


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2024-03-01T09:00:00.000Z", 1709283600.0),
        ("2024-03-01T14:30:00+05:30", 1709283600.0),
        ("2024-03-01T04:00:00-05:00", 1709283600.0),
        ("2024-03-01T09:00:00", 1709283600.0),
        ("2024-03-01T09:00:00.250Z", 1709283600.25),
    ],
)
def test_timestamps_with_any_offset(stamp: str, epoch: float) -> None:
    """ISO 8601 with Z, positive, negative or no offset all land on the right instant."""
    record = parse_campaign({"id": "c", "created_at": stamp, "scheduled_at": stamp}, "c")
    assert record.created_at is not None
    assert record.created_at.timestamp() == epoch
    assert record.scheduled_at is not None


def test_timestamps_read_are_kept_within_a_bound() -> None:
    """A timestamp read again is the same instant, and a flood of distinct ones (an API whose
    times change on every record) never keeps more than the bound, nor a text it refused."""
    fields._TIMES.clear()
    first = parse_campaign({"id": "c", "created_at": "2024-03-01T09:00:00Z"}, "c").created_at
    again = parse_campaign({"id": "c", "created_at": "2024-03-01T09:00:00Z"}, "c").created_at
    assert first is again  # read once, then looked up
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for second in range(fields._TIMES_KEPT * 2 + 7):
        stamp = (base + timedelta(seconds=second)).isoformat()
        record = parse_campaign({"id": "c", "created_at": stamp}, "c")
        assert record.created_at == base + timedelta(seconds=second)
        assert len(fields._TIMES) <= fields._TIMES_KEPT
    with pytest.raises(RecordError):
        parse_campaign({"id": "c", "created_at": "yesterday"}, "c")
    assert "yesterday" not in fields._TIMES


def test_unknown_and_nested_extra_fields_are_ignored() -> None:
    """Fields the API may add later do not break parsing."""
    document = dict(SECOND_EXAMPLE, voice={"model": "x", "params": [1, 2]}, tags=["a"])
    assert parse_campaign(document, SECOND_EXAMPLE["id"]).total_leads == 1200


@pytest.mark.parametrize(
    "document", [{"status": "active"}, {"error": "internal"}, {"data": SECOND_EXAMPLE}]
)
def test_record_without_id_is_refused(document: dict[str, Any]) -> None:
    """An object without an id (an error body, a wrapper) is not mistaken for an empty campaign."""
    with pytest.raises(RecordError, match="id"):
        parse_campaign(document, "c")


def test_null_counters_mean_absent() -> None:
    """JSON null in an optional field is the same as the field missing."""
    record = parse_campaign({"id": "c", "total_leads": None, "retry_config": None}, "c")
    assert record.total_leads is None
    assert record.max_retries is None


@pytest.mark.parametrize("field", COUNT_FIELDS, ids=lambda field: field.json or field.attr)
@pytest.mark.parametrize("bad", ["lots", [1], {"n": 1}, True, -1, "438", 1.5, float("nan")])
def test_wrong_types_in_counts_are_refused(field: RecordField, bad: object) -> None:
    """Strings (numeric ones too), lists, objects, booleans, negatives and fractions are refused
    in every declared count, named in the error."""
    with pytest.raises(RecordError, match=re.escape(field.json or field.attr)):
        parse_campaign({"id": "c", **record_document({field.attr: bad})}, "c")


@pytest.mark.parametrize(
    "document",
    [
        [SECOND_EXAMPLE],
        "cmp",
        42,
        None,
        {"id": 7},
        {"id": "c", "status": 3},
        {"id": "c", "name": ["x"]},
        {"id": "c", "created_at": "yesterday"},
        {"id": "c", "created_at": 1709283600},
        {"id": "c", "retry_config": {"max_retries": "three"}},
        {"id": "c", "retry_config": [3, 120]},
    ],
)
def test_unusable_documents_are_refused(document: object) -> None:
    """Anything but a JSON object with well-typed fields raises RecordError."""
    with pytest.raises(RecordError):
        parse_campaign(document, "c")


def test_record_for_another_campaign_is_refused() -> None:
    """A record whose id differs from the one asked for is not trusted."""
    with pytest.raises(RecordError, match="does not match"):
        parse_campaign(SECOND_EXAMPLE, "cmp_other")


def test_integral_floats_count_as_integers() -> None:
    """1200.0 from a JSON encoder that writes floats is still 1200."""
    assert parse_campaign({"id": "c", "total_leads": 1200.0}, "c").total_leads == 1200


# --- the declarations ----------------------------------------------------------------------

KIND_TYPES = {
    FieldKind.TEXT: str,
    FieldKind.STATUS: CampaignStatus,
    FieldKind.COUNT: int,
    FieldKind.NUMBER: float,
    FieldKind.TIMESTAMP: datetime,
}
# A JSON value of each kind, and what the model holds for it.
KIND_SAMPLES: dict[FieldKind, tuple[object, object]] = {
    FieldKind.TEXT: ('Zoë\'s "list" \\ \n', 'Zoë\'s "list" \\ \n'),
    FieldKind.STATUS: ("Paused", CampaignStatus.PAUSED),
    FieldKind.COUNT: (17.0, 17),
    FieldKind.NUMBER: (2.5, 2.5),
    FieldKind.TIMESTAMP: (
        "2024-03-01T14:30:00+05:30",
        datetime(2024, 3, 1, 14, 30, tzinfo=UTC) - timedelta(hours=5, minutes=30),
    ),
}


def test_every_field_after_the_id_is_declared_with_a_type_of_its_kind() -> None:
    """Each model attribute has one declaration whose kind matches the attribute's type, and no
    two declarations share a JSON name or a metric."""
    hints = get_type_hints(Campaign)
    assert [field.attr for field in RECORD_FIELDS] == list(Campaign._fields[1:])
    for field in RECORD_FIELDS:
        assert set(get_args(hints[field.attr])) == {KIND_TYPES[field.kind], type(None)}, field
        assert (field.metric is None) == (field.kind is FieldKind.TEXT), field
    paths = [field.path for field in RECORD_FIELDS]
    metrics = [field.metric for field in RECORD_FIELDS if field.metric]
    assert len(paths) == len(set(paths))
    assert len(metrics) == len(set(metrics))


@pytest.mark.parametrize("field", RECORD_FIELDS, ids=lambda field: field.attr)
def test_every_declared_field_is_read_from_its_json_name(field: RecordField) -> None:
    """A value at the field's JSON name (nested where declared) lands in its attribute, and in
    no other."""
    sent, held = KIND_SAMPLES[field.kind]
    document = {"id": "c", **record_document({field.attr: sent})}
    record = parse_campaign(document, "c")
    assert getattr(record, field.attr) == held
    others = {attr: getattr(record, attr) for attr in Campaign._fields[1:] if attr != field.attr}
    assert set(others.values()) == {None}


# --- text from the API is bounded ----------------------------------------------------------


@pytest.mark.parametrize("field", TEXT_FIELDS, ids=lambda field: field.attr)
@pytest.mark.parametrize("length", [TEXT_MAX_CHARS + 1, 10_000, 1_000_000])
def test_long_text_is_cut_to_the_cap_with_the_mark(field: RecordField, length: int) -> None:
    """Text longer than the cap keeps its first cap-1 characters and ends in the mark."""
    text = "".join(chr(0x41 + n % 26) for n in range(length))
    record = parse_campaign({"id": "c", field.attr: text}, "c")
    held = getattr(record, field.attr)
    assert len(held) == TEXT_MAX_CHARS
    assert held == text[: TEXT_MAX_CHARS - 1] + TRUNCATION_MARK


def test_text_at_the_cap_is_kept_whole() -> None:
    """Exactly the cap (and below) is not cut and carries no mark."""
    text = "n" * TEXT_MAX_CHARS
    assert parse_campaign({"id": "c", "name": text}, "c").name == text
    assert parse_campaign({"id": "c", "name": "…"}, "c").name == "…"


def test_the_cut_counts_characters_and_never_splits_a_surrogate_pair() -> None:
    """An astral character (a surrogate pair in the JSON body) counts as one and is kept or
    dropped whole; a lone surrogate becomes U+FFFD, also after the cut."""
    body = '{"id": "c", "name": "' + "\\ud83d\\ude00" * 300 + '", "agent_id": "a\\ud800b"}'
    record = parse_campaign(json.loads(body), "c")
    assert record.name == "😀" * (TEXT_MAX_CHARS - 1) + TRUNCATION_MARK
    assert record.agent_id == "a\ufffdb"
    lone = json.loads('"' + "x" * (TEXT_MAX_CHARS - 2) + '\\udc00yz"')
    cut = parse_campaign({"id": "c", "name": lone}, "c").name
    assert cut == "x" * (TEXT_MAX_CHARS - 2) + "\ufffd" + TRUNCATION_MARK


def test_a_field_declared_with_its_own_bounds_is_checked_against_them() -> None:
    """A declaration's own max_length cuts its text there, and its own maximum refuses a
    larger count; the defaults are the text cap and 2^53."""
    short = RecordField(FieldKind.TEXT, max_length=10).check()
    assert short("0123456789") == "0123456789"
    assert short("0123456789x") == "012345678" + TRUNCATION_MARK
    small = RecordField(FieldKind.COUNT, maximum=100).check()
    assert small(100) == 100
    with pytest.raises(ValueError, match="larger than 100"):
        small(101)
    minutes = RecordField(FieldKind.NUMBER, scale=60).check()
    with pytest.raises(ValueError, match="too large"):
        minutes(2**53 // 60 + 1)
    cut = RecordField(FieldKind.TEXT).check()("y" * 500)
    assert cut == "y" * (TEXT_MAX_CHARS - 1) + TRUNCATION_MARK
