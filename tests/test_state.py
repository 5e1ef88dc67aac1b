"""A campaign's working state: successes and failures, and the views made from it."""

from __future__ import annotations

from exporter.api.models import Campaign, CampaignStatus
from exporter.polling.progress import Progress
from exporter.polling.state import CampaignState, CampaignView, PollingLag, Snapshot

RECORD = Campaign("c", status=CampaignStatus.ACTIVE, total_leads=10)


def test_success_then_failures_then_success() -> None:
    """Failures count by reason, keep the data and note when the failing began; a success
    resets the run but keeps the counts."""
    state = CampaignState("c", next_due=0.0)
    state.succeeded(RECORD, 100.0, 1.0, fresh_for=300.0)
    first = Progress.make(None, 100.0, 100.0, None)  # no counters in RECORD; dialling since 100
    assert state.current_view() == ("c", RECORD, True, 100.0, (), 100.0, None, None, 301.0, first)
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


def test_stale_data_goes_with_its_up() -> None:
    """Data past its deadline is dropped and the campaign is no longer up, though its last
    fetch succeeded; a 404 clears the deadline with the data."""
    state = CampaignState("c", next_due=0.0)
    state.succeeded(RECORD, 100.0, 1.0, fresh_for=300.0)
    state.went_stale()
    view = state.current_view()
    assert (view.record, view.up, view.fresh_until, view.last_success) == (None, False, None, 100.0)
    state.succeeded(RECORD, 200.0, 101.0, fresh_for=300.0)
    state.failed("not_found", 210.0, drop_data=True)
    assert state.current_view().fresh_until is None


def fetched(cid: str, wall: float, mono: float) -> CampaignView:
    """The view of a campaign fetched at ``wall`` / ``mono``, fresh for 100 s."""
    state = CampaignState(cid, next_due=0.0)
    state.succeeded(Campaign(cid), wall, mono, fresh_for=100.0)
    return state.current_view()


def test_a_snapshot_drops_its_stale_data_as_the_poller_would() -> None:
    """without_stale_data drops exactly the data past its deadline, turns those campaigns
    down, and moves the oldest data and the next deadline on; the lag is read at any time."""
    views = (fetched("a", 1000.0, 10.0), fetched("b", 1050.0, 60.0))
    snapshot = Snapshot(views, oldest_due=1100.0, oldest_data=1000.0, fresh_until=110.0, ready=True)
    assert snapshot.without_stale_data(109.9).campaigns == views
    later = snapshot.without_stale_data(110.0)
    a, b = later.campaigns
    assert (a.record, a.up) == (None, False)
    assert b is views[1]
    assert (later.oldest_data, later.fresh_until, later.oldest_due) == (1050.0, 160.0, 1100.0)
    assert later.ready
    assert later.lag(1130.0) == PollingLag(30.0, 80.0)
    assert later.lag(1000.0) == PollingLag(0.0, 0.0)
    assert Snapshot().lag(1000.0) == PollingLag(None, None)
