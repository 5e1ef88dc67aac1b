"""Parsing campaign records: both shapes of the API page, tolerance, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.api.models import CampaignStatus, RecordError, parse_campaign
from tests.helpers import FIRST_EXAMPLE, SECOND_EXAMPLE


def test_first_example_parses_without_counters() -> None:
    """The 'running' example has no counters: they stay None, metadata is kept."""
    record = parse_campaign(FIRST_EXAMPLE, "cmp_xyz789")
    assert record.status is CampaignStatus.RUNNING
    assert record.total_leads is None
    assert record.completed_calls is None
    assert record.pending_calls is None
    assert record.organization_id == "org_xyz"
    assert record.retry_config is not None
    assert record.retry_config.max_retries == 3
    assert record.retry_config.retry_interval_minutes == 120
    assert record.scheduled_at is None
    assert record.created_at == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def test_second_example_parses_with_counters() -> None:
    """The 'active' example has counters and no organization or retry settings."""
    record = parse_campaign(SECOND_EXAMPLE, "cmp_5tw8vz2rnx1q")
    assert record.status is CampaignStatus.ACTIVE
    assert (record.total_leads, record.completed_calls, record.pending_calls) == (1200, 438, 762)
    assert record.organization_id is None
    assert record.retry_config is None


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
    assert record.retry_config is None


@pytest.mark.parametrize(
    "field", ["total_leads", "completed_calls", "pending_calls", "max_concurrent_calls"]
)
@pytest.mark.parametrize("bad", ["lots", [1], {"n": 1}, True, -1, "438", 1.5, float("nan")])
def test_wrong_types_in_counts_are_refused(field: str, bad: object) -> None:
    """Strings (numeric ones too), lists, objects, booleans, negatives and fractions are refused."""
    with pytest.raises(RecordError, match=field):
        parse_campaign({"id": "c", field: bad}, "c")


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
