"""The staleness tracker: data dropped at its deadline, later successes, terminal grace."""

from __future__ import annotations

import pytest

from exporter.api.models import Campaign, CampaignStatus
from exporter.polling.staleness import StalenessTracker
from exporter.polling.state import CampaignState

ACTIVE = Campaign("c", status=CampaignStatus.ACTIVE)
DONE = Campaign("c", status=CampaignStatus.COMPLETED)


def limit(record: Campaign | None) -> float:
    """100 s, or 700 s for a finished campaign (STALE_AFTER plus the terminal interval)."""
    return 700.0 if record is not None and record.is_terminal else 100.0


def shown(record: Campaign = ACTIVE, at: float = 0.0) -> CampaignState:
    """A campaign whose data was fetched at ``at``."""
    state = CampaignState("c", next_due=0.0)
    state.succeeded(record, 1_700_000_000.0 + at, at)
    return state


def test_data_goes_at_its_deadline_and_not_before() -> None:
    """No success for the limit: the record is dropped, the view says so, once."""
    tracker = StalenessTracker(limit)
    state = shown()
    tracker.track(state)
    assert tracker.next_deadline() == 100.0
    assert tracker.expire(99.9) == 0
    assert state.record is ACTIVE
    assert tracker.expire(100.0) == 1
    assert state.record is None
    assert state.current_view().record is None
    assert tracker.expire(1000.0) == 0
    assert tracker.next_deadline() is None


def test_a_later_success_moves_the_deadline() -> None:
    """A success since tracking: the due entry re-enters at the new deadline instead."""
    tracker = StalenessTracker(limit)
    state = shown()
    tracker.track(state)
    state.succeeded(ACTIVE, 1_700_000_050.0, 50.0)
    tracker.track(state)  # a later deadline: no new entry needed
    assert len(tracker) == 1
    assert tracker.expire(100.0) == 0
    assert tracker.next_deadline() == 150.0
    assert tracker.expire(150.0) == 1


@pytest.mark.parametrize(("record", "deadline"), [(ACTIVE, 100.0), (DONE, 700.0)])
def test_the_limit_depends_on_the_record(record: Campaign, deadline: float) -> None:
    """A finished campaign's data is kept its longer limit."""
    tracker = StalenessTracker(limit)
    tracker.track(shown(record))
    assert tracker.next_deadline() == deadline


def test_an_earlier_deadline_supersedes_the_entry() -> None:
    """A campaign that becomes active again (shorter limit) is checked at the earlier time."""
    tracker = StalenessTracker(limit)
    state = shown(DONE)
    tracker.track(state)
    state.succeeded(ACTIVE, 1_700_000_010.0, 10.0)
    tracker.track(state)
    assert tracker.next_deadline() == 110.0
    assert tracker.expire(110.0) == 1


def test_removed_or_already_dropped_campaigns_are_skipped() -> None:
    """A campaign a reload removed, or whose data a 404 dropped, is not counted; compact lets
    go of removed ones at once."""
    tracker = StalenessTracker(limit)
    removed, gone = shown(), shown()
    removed.removed = True
    gone.failed("not_found", 1_700_000_001.0, drop_data=True)
    tracker.track(removed)
    tracker.track(shown())
    assert tracker.expire(1000.0) == 1
    tracker.track(removed)
    tracker.compact()
    assert len(tracker) == 0
