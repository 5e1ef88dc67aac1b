"""The status page's stalls and ETAs: the stall alert's condition judged by the exporter (the
threshold, dialling, calls pending, not scheduled for later, inside the calling window), the
last progress, the ETA or why there is none, and the ordering that follows the clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from exporter.api.models import Campaign, CampaignStatus
from exporter.exposition.status_page import (
    OrderCache,
    PageFacts,
    Problem,
    order_campaigns,
    render_status_page,
)
from exporter.polling.progress import Progress
from exporter.polling.state import CampaignView, Snapshot
from tests.helpers import EPOCH, StatusPageParser

NOW = EPOCH + 100_000.0
FACTS = PageFacts(now=NOW, poll_interval_seconds=30, api_url="https://api.example.test/v1")
PROBLEM, LAST_PROGRESS, ETA = 5, 6, 7  # cells of a row


def view(
    campaign_id: str,
    *,
    quiet: float,
    dialling: float | None = 5000.0,
    status: CampaignStatus = CampaignStatus.ACTIVE,
    completed: int = 438,
    pending: int | None = 762,
    rate: float | None = 0.5,
    scheduled: float | None = None,
) -> CampaignView:
    """A campaign whose completed calls last moved ``quiet`` seconds ago, dialling for
    ``dialling`` seconds (None: not dialling), fetched 4 seconds ago."""
    record = Campaign(
        campaign_id,
        name=f"Campaign {campaign_id}",
        status=status,
        total_leads=None if pending is None else completed + pending,
        completed_calls=completed,
        pending_calls=pending,
        scheduled_at=None if scheduled is None else datetime.fromtimestamp(scheduled, UTC),
    )
    since = None if dialling is None else NOW - dialling
    progress = Progress.make(completed, NOW - quiet, since, rate)
    return CampaignView(campaign_id, record, True, NOW - 4, (), NOW - 4, progress=progress)


def page(views: list[CampaignView], facts: PageFacts = FACTS) -> StatusPageParser:
    """The page of a snapshot of ``views``, parsed."""
    return StatusPageParser(render_status_page(Snapshot(tuple(views), NOW - 3, 1.0, True), facts))


def test_a_campaign_quiet_for_the_threshold_is_stalled_and_listed_with_the_problems() -> None:
    """Quiet 16 minutes while dialling with calls pending: stalled, after failing, before paused,
    with how long it has been quiet, its last progress, and no ETA."""
    failing = CampaignView(
        "a_fail", None, False, None, (("timeout", 1),), NOW - 3, NOW - 60, "timeout"
    )
    views = [
        view("z_moving", quiet=20),
        view("p_paused", quiet=5000, dialling=None, status=CampaignStatus.PAUSED),
        view("s_stuck", quiet=960),
        failing,
    ]
    parsed = page(views)
    assert [row.css for row in parsed.rows] == ["failing", "stalled", "paused", "ok"]
    stuck = parsed.rows[1]
    assert stuck.cells[PROBLEM] == (
        "stalled: dialling with calls pending, no completed call for 16 min"
    )
    assert stuck.cells[LAST_PROGRESS] == "16 min ago"
    assert stuck.cells[ETA] == "— stalled"
    assert "Stalled1" in parsed.text.replace("\n", "")
    assert parsed.title.startswith("1 failing")


def test_the_threshold_is_the_alerts_window_inclusive() -> None:
    """At 899 s of quiet a campaign is still fine; at 900 s (the default threshold) stalled."""
    ordering = order_campaigns(Snapshot((view("a", quiet=899), view("b", quiet=900))), FACTS.judge)
    assert ordering.counts[Problem.STALLED] == 1
    assert ordering.rows[0].campaign_id == "b"
    shorter = PageFacts(now=NOW, poll_interval_seconds=30, stall_after_seconds=60)
    assert order_campaigns(Snapshot((view("a", quiet=61),)), shorter.judge).problems == 1


def test_only_what_the_alert_judges_is_stalled() -> None:
    """Not stalled: dialling for less than the threshold (just resumed), no calls pending, no
    pending count, scheduled for later, not dialling; as the alert's other conditions."""
    views = [
        view("resumed", quiet=5000, dialling=600),
        view("done", quiet=5000, pending=0),
        view("no_pending_count", quiet=5000, pending=None),
        view("later", quiet=5000, scheduled=NOW + 3600),
        view("draft", quiet=5000, dialling=None, status=CampaignStatus.DRAFT),
    ]
    ordering = order_campaigns(Snapshot(tuple(views)), FACTS.judge)
    assert ordering.counts[Problem.STALLED] == 0
    started = view("started", quiet=5000, scheduled=NOW - 60)
    assert order_campaigns(Snapshot((started,)), FACTS.judge).counts[Problem.STALLED] == 1


def test_outside_the_calling_window_nothing_is_stalled_and_etas_say_why() -> None:
    """Window closed: no stall, ETAs '— outside calling window'; opened 10 min ago: still no
    stall; opened 15 min ago: the quiet campaign is stalled."""

    def facts(since: float | None) -> PageFacts:
        return PageFacts(
            now=NOW,
            poll_interval_seconds=30,
            window_open_since=since,
            calling_window="Mon-Fri 09:00-20:00 Europe/Berlin",
        )

    views = [view("quiet", quiet=40_000), view("moving", quiet=10)]
    closed = page(views, facts(None))
    assert [row.css for row in closed.rows] == ["ok", "ok"]
    assert [row.cells[ETA] for row in closed.rows] == ["— outside calling window"] * 2
    assert "(closed now: no stalls judged)" in closed.text
    assert [row.css for row in page(views, facts(NOW - 600)).rows] == ["ok", "ok"]
    assert [row.css for row in page(views, facts(NOW - 900)).rows] == ["stalled", "ok"]


def test_eta_is_the_calls_left_at_the_recent_pace_or_a_dash_with_why() -> None:
    """762 calls at 0.5 a second is 25 minutes; without a pace, paused, finished, cancelled or
    without counters there is a dash and its reason."""
    views = [
        view("a_pace", quiet=10),
        view("b_none", quiet=10, rate=None),
        view("c_paused", quiet=10, dialling=None, status=CampaignStatus.PAUSED),
        view("d_finished", quiet=10, dialling=None, status=CampaignStatus.COMPLETED, pending=0),
        view("e_cancelled", quiet=10, dialling=None, status=CampaignStatus.CANCELLED),
        view("f_empty", quiet=10, pending=0),
    ]
    legacy = CampaignView(
        "g_legacy", Campaign("g_legacy", status=CampaignStatus.RUNNING), True, NOW
    )
    rows = {row.cells[0].split("\n")[1]: row for row in page([*views, legacy]).rows}
    assert rows["a_pace"].cells[ETA] == "25 min\nat 30.0 calls/min"
    assert rows["a_pace"].cells[LAST_PROGRESS] == "10 s ago"
    assert rows["b_none"].cells[ETA] == "— no rate yet"
    assert rows["c_paused"].cells[ETA] == "— paused"
    assert rows["d_finished"].cells[ETA] == "— finished"
    assert rows["e_cancelled"].cells[ETA] == "— cancelled"
    assert rows["f_empty"].cells[ETA] == "— nothing pending"
    assert rows["g_legacy"].cells[ETA] == "— no counters"
    assert rows["g_legacy"].cells[LAST_PROGRESS] == "—"


def test_the_ordering_follows_the_clock_for_the_same_snapshot() -> None:
    """A snapshot ordered once is reordered when a campaign crosses the threshold or the window
    closes, and reused (no step) while nobody does."""
    snapshot = Snapshot((view("a", quiet=800), view("b", quiet=10)))
    cache = OrderCache()

    def at(seconds: float, since: float | None = -math.inf) -> PageFacts:
        return PageFacts(now=NOW + seconds, poll_interval_seconds=30, window_open_since=since)

    assert cache.of(snapshot, at(0).judge).counts[Problem.STALLED] == 0
    assert list(cache.steps(snapshot, at(99).judge)) == []  # "a" crosses at +100: still holds
    assert cache.of(snapshot, at(100).judge).counts[Problem.STALLED] == 1
    assert list(cache.steps(snapshot, at(500).judge)) == []
    assert cache.of(snapshot, at(500, None).judge).counts[Problem.STALLED] == 0
    assert cache.of(snapshot, at(891).judge).counts[Problem.STALLED] == 2
