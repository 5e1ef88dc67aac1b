"""A campaign's working state: successes and failures, and the views made from it."""

from __future__ import annotations

from exporter.api.models import Campaign, CampaignStatus
from exporter.polling.state import CampaignState, Snapshot

RECORD = Campaign("c", status=CampaignStatus.ACTIVE, total_leads=10)


def test_success_then_failures_then_success() -> None:
    """Failures count by reason, keep the data and note when the failing began; a success
    resets the run but keeps the counts."""
    state = CampaignState("c", next_due=0.0)
    state.succeeded(RECORD, 100.0, 1.0)
    assert state.current_view() == ("c", RECORD, True, 100.0, (), 100.0, None, None)
    state.failed("timeout", 110.0, drop_data=False)
    state.failed("server_error", 120.0, drop_data=False)
    state.failed("timeout", 130.0, drop_data=False)
    view = state.current_view()
    assert view.record is RECORD
    assert not view.up
    assert view.errors == (("server_error", 1), ("timeout", 2))
    assert (view.failing_since, view.last_attempt, view.last_error) == (110.0, 130.0, "timeout")
    assert state.failures == 3
    state.succeeded(RECORD, 140.0, 41.0)
    view = state.current_view()
    assert (view.up, view.failing_since, view.last_error, view.errors) == (
        True,
        None,
        None,
        (("server_error", 1), ("timeout", 2)),
    )
    assert state.failures == 0


def test_a_failure_that_drops_data_clears_the_record() -> None:
    """A 404 takes the data away at once."""
    state = CampaignState("c", next_due=0.0)
    state.succeeded(RECORD, 100.0, 1.0)
    state.failed("not_found", 110.0, drop_data=True)
    assert state.current_view().record is None


def test_views_are_made_once_per_change() -> None:
    """current_view reuses the view until the state changes (snapshots share unchanged ones)."""
    state = CampaignState("c", next_due=0.0)
    first = state.current_view()
    assert state.current_view() is first
    state.succeeded(RECORD, 100.0, 1.0)
    assert state.current_view() is not first


def test_a_snapshot_counts_its_campaigns() -> None:
    """campaigns_configured is the number of campaigns in the snapshot."""
    views = tuple(CampaignState(f"c{n}", next_due=0.0).current_view() for n in range(3))
    assert Snapshot(views).campaigns_configured == 3
    assert Snapshot().campaigns_configured == 0
