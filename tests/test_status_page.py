"""The status page at /: the pure renderer (order, bounds, escaping, every kind of row, health
on top, query parameters) and the page served by a real exporter against the simulator
(headers, hostile queries, basic auth, no poll triggered, the key never shown)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import string
from collections import Counter
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import __version__
from exporter.api.models import Campaign, CampaignStatus
from exporter.config import load_settings
from exporter.demo.simulator import Fault, FaultKind, RateLimitPolicy
from exporter.exposition.cache import ExpositionCache
from exporter.exposition.status_page import (
    CONTENT_SECURITY_POLICY,
    MAX_ERROR_CHARS,
    MAX_TEXT_CHARS,
    ORDER_SLICE,
    REASON_HINTS,
    ROW_SLICE,
    ROWS_PER_PAGE,
    BudgetFacts,
    OrderCache,
    PageFacts,
    PageQuery,
    Problem,
    QueryError,
    ReloadFacts,
    StatusPages,
    duration,
    order_campaigns,
    parse_query,
    problem_of,
    refresh_seconds,
    render_status_page,
    status_page_parts,
    utc,
)
from exporter.polling.outcome import ERROR_REASONS
from exporter.polling.state import CampaignView, Snapshot
from exporter.web.server import EXPOSITION, RELOADER, create_app
from tests.helpers import (
    API_KEY,
    EPOCH,
    StartExporter,
    StartSim,
    StatusPageParser,
    campaign,
    config_file_flags,
    exporter_settings,
    serve,
    wait_for,
)

NOW = EPOCH + 10_000.0
FACTS = PageFacts(now=NOW, poll_interval_seconds=30, api_url="https://api.example.test/v1")
HOSTILE_NAME = "<script>alert(1)</script> \"quoted\" 'single' & </td></tr></table><b>bold"


def record(
    campaign_id: str,
    name: str | None = None,
    status: CampaignStatus | None = CampaignStatus.ACTIVE,
    total: int | None = 1200,
    completed: int | None = 438,
    agent_id: str | None = "agt_k7m2nq9xw4p8",
) -> Campaign:
    """A campaign record with the given fields (pending = total - completed when both given)."""
    pending = total - completed if total is not None and completed is not None else None
    return Campaign(
        campaign_id,
        name=name if name is not None else f"Campaign {campaign_id}",
        agent_id=agent_id,
        status=status,
        total_leads=total,
        completed_calls=completed,
        pending_calls=pending,
    )


def fine(
    campaign_id: str,
    name: str | None = None,
    *,
    status: CampaignStatus | None = CampaignStatus.ACTIVE,
    total: int | None = 1200,
    completed: int | None = 438,
    agent_id: str | None = "agt_k7m2nq9xw4p8",
) -> CampaignView:
    """A campaign fetched a few seconds ago."""
    fetched = record(campaign_id, name, status, total, completed, agent_id)
    return CampaignView(campaign_id, fetched, True, NOW - 4)


def failing(
    campaign_id: str, name: str | None = None, reason: str = "timeout", keep_data: bool = True
) -> CampaignView:
    """A campaign failing for 5 minutes, last tried 3 s ago, last fetched 6 minutes ago."""
    return CampaignView(
        campaign_id,
        record(campaign_id, name) if keep_data else None,
        False,
        NOW - 360,
        ((reason, 7),),
        NOW - 3,
        NOW - 300,
        reason,
    )


def unfetched(campaign_id: str) -> CampaignView:
    """A campaign not fetched yet."""
    return CampaignView(campaign_id, None, False, None)


def page(
    views: list[CampaignView], facts: PageFacts = FACTS, query: PageQuery | None = None
) -> StatusPageParser:
    """The page of a snapshot of ``views`` (its round ended 3 s ago), parsed."""
    snapshot = Snapshot(tuple(views), NOW - 3, 1.25, True)
    return StatusPageParser(render_status_page(snapshot, facts, query))


def names(parsed: StatusPageParser) -> list[str]:
    """The first line of each row's first cell: the campaign's name (or a dash)."""
    return [row.cells[0].split("\n")[0] for row in parsed.rows]


# -- order


def test_problems_come_first_each_group_by_name_then_id() -> None:
    """Failing, paused, unknown, no data, then the rest; each by name, unnamed last, then id."""
    views = [
        fine("c1", "beta"),
        fine("c2", "Alpha"),
        failing("c3", "zulu"),
        fine("c4", "mike", status=CampaignStatus.PAUSED),
        unfetched("c5"),
        fine("c6", "kilo", status=CampaignStatus.UNKNOWN),
        failing("c7", "Echo"),
        fine("c9", "alpha"),
        fine("c8", "alpha"),
        CampaignView("c0", Campaign("c0", name=None, status=CampaignStatus.ACTIVE), True, NOW),
        fine("c10", "lima", status=None),
    ]
    random.Random(4).shuffle(views)
    ordering = order_campaigns(Snapshot(tuple(views)))
    assert [view.campaign_id for view in ordering.rows] == [
        "c7",
        "c3",
        "c4",
        "c6",
        "c10",
        "c5",
        "c2",
        "c8",
        "c9",
        "c1",
        "c0",
    ]
    assert ordering.counts == {
        Problem.FAILING: 2,
        Problem.STALLED: 0,
        Problem.PAUSED: 1,
        Problem.UNKNOWN_STATUS: 2,
        Problem.NO_DATA: 1,
        Problem.NONE: 5,
    }
    assert ordering.problems == 6
    classes = [row.css for row in page(views).rows]
    assert classes == ["failing"] * 2 + ["paused"] + ["unknown"] * 2 + ["nodata"] + ["ok"] * 5


_ids = st.sampled_from([f"cmp_{n}" for n in range(12)])
_names = st.one_of(st.none(), st.sampled_from(["a", "A", "b", "Émile", "émile", "z", ""]))


@st.composite
def views(draw: st.DrawFn) -> CampaignView:
    """Any combination of the fields the order depends on."""
    campaign_id = draw(_ids)
    data = draw(st.booleans())
    status = draw(st.one_of(st.none(), st.sampled_from(CampaignStatus)))
    rec = Campaign(campaign_id, name=draw(_names), status=status) if data else None
    attempted = draw(st.booleans())
    return CampaignView(
        campaign_id, rec, draw(st.booleans()), None, (), NOW if attempted else None, None, None
    )


def reference_order(snapshot: Snapshot) -> list[CampaignView]:
    """The order the page promises, spelled out the slow way."""

    def key(view: CampaignView) -> tuple[int, bool, str, str]:
        name = view.record.name if view.record is not None else None
        return (problem_of(view), name is None, (name or "").casefold(), view.campaign_id)

    return sorted(snapshot.campaigns, key=key)


@pytest.mark.no_cover  # drawn examples of covered code: see tests/test_properties.py
@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(views(), max_size=15), min_size=1, max_size=5))
def test_order_and_its_cache_match_the_reference(snapshots: list[list[CampaignView]]) -> None:
    """Any snapshots, cached or not, are ordered as sorting by (problem, name, id) orders them."""
    cache = OrderCache()
    for listed in snapshots:
        snapshot = Snapshot(tuple(listed))
        expected = reference_order(snapshot)
        ordering = cache.of(snapshot)
        assert list(ordering.rows) == expected
        assert list(order_campaigns(snapshot).rows) == expected
        expected_counts = Counter(map(problem_of, listed))
        assert ordering.counts == {problem: expected_counts[problem] for problem in Problem}
        assert cache.of(snapshot) is ordering  # the same snapshot is not ordered twice


def test_interleaved_orderings_stay_right() -> None:
    """Two snapshots ordered step by step at the same time each get their own order."""
    cache = OrderCache()
    first = Snapshot(tuple(fine(f"c{n}", f"n{n % 7}") for n in range(5000)))
    second = Snapshot(tuple(fine(f"d{n}", f"m{n % 5}") for n in range(3000)))
    for snapshot in (first, second):
        slow = cache.steps(snapshot)
        next(slow)
        next(slow)
        assert list(cache.of(second).rows) == reference_order(second)
        for _ in slow:
            pass
        assert list(cache.of(snapshot).rows) == reference_order(snapshot)
    # The name order of ``first`` is cached; a new snapshot with the same names reuses it,
    # even when another list is ordered while it is being grouped.
    cache.of(first)
    again = Snapshot(first.campaigns)
    slow = cache.steps(again)
    for _ in range(-(-len(first.campaigns) // ORDER_SLICE) + 1):
        next(slow)  # past the name comparison, into the grouping
    assert list(cache.of(second).rows) == reference_order(second)
    for _ in slow:
        pass
    assert list(cache.of(again).rows) == reference_order(again)


def test_a_renamed_campaign_moves_in_the_cached_order() -> None:
    """The cached name order is made anew when a name changes, not only the campaign list."""
    cache = OrderCache()
    first = Snapshot((fine("c1", "a"), fine("c2", "b")))
    assert [v.campaign_id for v in cache.of(first).rows] == ["c1", "c2"]
    renamed = Snapshot((fine("c1", "c"), fine("c2", "b")))
    assert [v.campaign_id for v in cache.of(renamed).rows] == ["c2", "c1"]


async def test_pages_are_made_once_per_snapshot_second_and_query() -> None:
    """A flood makes a page once; a new query, second or snapshot makes it anew."""
    pages = StatusPages()
    snapshot = Snapshot(tuple(fine(f"c{n}") for n in range(1200)), NOW, 1.0, True)
    made = await asyncio.gather(*[pages.page(snapshot, FACTS, PageQuery()) for _ in range(50)])
    assert all(page is made[0] for page in made)
    assert made[0] == render_status_page(snapshot, FACTS)
    other_query = await pages.page(snapshot, FACTS, PageQuery(page=2))
    assert other_query != made[0]
    assert await pages.page(snapshot, FACTS, PageQuery()) is made[0]
    later = PageFacts(now=NOW + 1, poll_interval_seconds=30, api_url=FACTS.api_url)
    next_second = await pages.page(snapshot, later, PageQuery())
    assert next_second is not made[0]
    assert "Generated 2023-11-15 01:00:01 UTC" in next_second
    republished = Snapshot(snapshot.campaigns, NOW, 1.0, True)
    assert await pages.page(republished, later, PageQuery()) is not next_second


async def test_a_page_made_this_second_is_not_served_once_its_facts_change() -> None:
    """Within one second and one snapshot, a rejected reload (or any other fact the page
    states) makes the page anew: the cached page never hides what just happened."""
    pages = StatusPages()
    snapshot = Snapshot((fine("c1"),), NOW, 1.0, True)
    accepted = PageFacts(now=NOW, poll_interval_seconds=30, reload=ReloadFacts(NOW - 10))
    before = await pages.page(snapshot, accepted, PageQuery())
    rejected = PageFacts(
        now=NOW + 0.5,
        poll_interval_seconds=30,
        reload=ReloadFacts(NOW - 10, rejected_since=NOW + 0.5, error="bad id"),
    )
    after = await pages.page(snapshot, rejected, PageQuery())
    assert "Configuration reload rejected" not in before
    assert "Configuration reload rejected" in after
    assert await pages.page(snapshot, rejected, PageQuery()) is after


def test_work_is_cut_into_steps() -> None:
    """Ordering and rendering yield every slice, and the parts make the whole page."""
    snapshot = Snapshot(tuple(fine(f"c{n:05d}", f"n{n % 97}") for n in range(5 * ORDER_SLICE)))
    cache = OrderCache()
    assert sum(1 for _ in cache.steps(snapshot)) >= 3 * 5
    assert sum(1 for _ in cache.steps(snapshot)) == 0  # ordered already
    ordering = cache.of(snapshot)
    parts = list(status_page_parts(snapshot, FACTS, PageQuery(), ordering))
    assert len(parts) >= ROWS_PER_PAGE // ROW_SLICE
    assert "".join(parts) == render_status_page(snapshot, FACTS)


# -- bounds and query


def test_rows_are_paged_with_a_count_of_the_rest() -> None:
    """ROWS_PER_PAGE rows a page, the rest counted; too far shows the last; problems filter."""
    views = [fine(f"c{n:05d}") for n in range(2 * ROWS_PER_PAGE + 234)]
    views[700:710] = [failing(f"f{n}") for n in range(10)]
    first = page(views)
    assert len(first.rows) == ROWS_PER_PAGE
    assert [row.css for row in first.rows[:10]] == ["failing"] * 10
    assert f"{ROWS_PER_PAGE + 234:,} more on the next pages" in first.text
    assert f"rows 1\u2013{ROWS_PER_PAGE} of {len(views):,}" in first.text
    assert "?page=2" in first.links
    last = page(views, query=PageQuery(page=3))
    assert len(last.rows) == 234
    assert "more on the next pages" not in last.text
    assert "?page=2" in last.links
    beyond = page(views, query=PageQuery(page=10**9))
    assert [row.cells for row in beyond.rows] == [row.cells for row in last.rows]
    problems = page(views, query=PageQuery(problems_only=True))
    assert [row.css for row in problems.rows] == ["failing"] * 10
    assert "Problems only (10)" in problems.text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, PageQuery(1, False)),
        ({"page": "3"}, PageQuery(3, False)),
        ({"page": "0"}, PageQuery(1, False)),
        ({"page": "007", "problems": "1"}, PageQuery(7, True)),
        ({"page": "1" + "0" * 100}, PageQuery(10**9, False)),
        ({"page": "9" * 5000}, PageQuery(10**9, False)),  # beyond int()'s digit limit
        ({"problems": "yes"}, PageQuery(1, True)),
        ({"problems": "0", "other": "<x>"}, PageQuery(1, False)),
    ],
)
def test_query_parameters(query: dict[str, str], expected: PageQuery) -> None:
    """Page numbers are clamped (huge ones unread), flags take yes and no, others are ignored."""
    assert parse_query(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        {"page": "-1"},
        {"page": "abc"},
        {"page": "1.5"},
        {"page": "1e9"},
        {"page": ""},
        {"page": "٣"},  # a digit, but not an ASCII one
        {"page": "1\x00"},
        {"problems": "maybe"},
        {"problems": "<script>"},
    ],
)
def test_bad_query_parameters_are_refused_without_echo(query: dict[str, str]) -> None:
    """Unusable page or problems values: a QueryError naming the parameter, not the value."""
    with pytest.raises(QueryError) as raised:
        parse_query(query)
    assert str(raised.value) in (
        "page: expected a whole number from 1",
        "problems: expected 1 or 0",
    )
    assert str(raised.value).startswith(next(iter(query)))


# -- escaping


def test_hostile_texts_are_inert() -> None:
    """Hostile names, agent ids and reasons add no element and read back exactly."""
    hostile = fine("cmp_x", HOSTILE_NAME, agent_id='agt"><img src=x onerror=alert(1)>')
    reason = failing("cmp_y", "ok", reason="<i>boom</i>")
    parsed = page([hostile, reason, fine("cmp_z")])
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert "i" not in parsed.tags
    assert parsed.tags.get("b", 0) == 0
    assert parsed.tags["tr"] == 4  # the header row and three campaigns
    hostile_row = next(row for row in parsed.rows if "cmp_x" in row.cells[0])
    assert hostile_row.cells[0].split("\n")[0] == HOSTILE_NAME
    assert 'agent agt"><img src=x onerror=alert(1)>' in hostile_row.cells[0]
    assert "<i>boom</i>" in parsed.rows[0].cells[5]
    assert all(len(row.cells) == 8 for row in parsed.rows)


def test_controls_and_bidi_overrides_are_neutralised_and_long_names_cut() -> None:
    """Controls show as U+FFFD, overrides stay in <bdi>, long names are cut."""
    parsed = page(
        [
            fine("c1", "a\x00b\x1bc\x7fd\x85e\nf"),
            fine("c2", "\u202egnp.exe"),
            fine("c3", "x" * 10_000),
        ]
    )
    shown = dict(
        zip(
            [row.cells[0].split("\n")[1].split(" ")[0] for row in parsed.rows],
            names(parsed),
            strict=True,
        )
    )
    assert shown["c1"] == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffdf"
    assert parsed.tags["bdi"] == 3
    assert shown["c2"] == "\u202egnp.exe"
    assert shown["c3"] == "x" * (MAX_TEXT_CHARS - 1) + "…"


@pytest.mark.no_cover  # drawn examples of covered code: see tests/test_properties.py
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_name_reads_back_and_adds_no_element(name: str) -> None:
    """Any name reads back (controls as U+FFFD, cut) and adds no element."""
    plain = page([fine("c1", "plain")])
    parsed = page([fine("c1", name)])
    if name:  # an empty name shows as a dash
        assert parsed.tags == plain.tags
    shown = "".join("\ufffd" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in name)
    if len(name) > MAX_TEXT_CHARS:
        shown = shown[: MAX_TEXT_CHARS - 1] + "…"
    assert names(parsed) == [shown or "—"]


# -- rows


def test_progress_figures() -> None:
    """Share as text rounded down; over-complete as sent, bar full; no bar without counters."""
    parsed = page(
        [
            fine("c1", "a", total=1200, completed=438),
            fine("c2", "b", total=2000, completed=1999),
            fine("c3", "c", total=1200, completed=1300),
            fine("c4", "d", total=0, completed=0),
            fine("c5", "e", total=None, completed=None),
            fine("c6", "f", total=5000, completed=None),
        ]
    )
    progress = [row.cells[2].strip() for row in parsed.rows]
    assert progress[0] == "36.5% 438 of 1,200"
    assert progress[1] == "99.9% 1,999 of 2,000"
    assert progress[2] == "108.3% 1,300 of 1,200"
    assert progress[3] == "0 of 0 leads (no leads)"
    assert progress[4] == progress[5] == "—"
    assert parsed.tags["progress"] == 3
    html = render_status_page(Snapshot((fine("c3", "c", total=1200, completed=1300),)), FACTS)
    assert '<progress value="1200" max="1200">' in html
    assert [row.cells[3] for row in parsed.rows][:2] == ["762", "1"]


def test_legacy_record_without_counters() -> None:
    """The API page's older shape ("running", no counters): status shown, dashes, no bar."""
    parsed = page([fine("cmp_legacy", "Legacy", status=CampaignStatus.RUNNING, total=None)])
    row = parsed.rows[0]
    assert row.css == "ok"
    assert row.cells[1:4] == ["running", "—", "—"]
    assert "progress" not in parsed.tags


def test_failing_rows_say_why_and_since_when() -> None:
    """Failing rows: reason, meaning, for how long, since when (UTC), last try, dropped data."""
    parsed = page([failing("c1", "kept"), failing("c2", reason="not_found", keep_data=False)])
    kept, dropped = parsed.rows
    assert kept.cells[5] == (
        "timeout: the API did not answer in time\n"
        f"for 5 min, since {utc(NOW - 300)}\n"
        "last try 3 s ago"
    )
    assert utc(NOW - 300) == "2023-11-15 00:55:00 UTC"
    assert kept.cells[4] == "6 min ago"
    assert kept.cells[1] == "active"  # the last data is still shown until STALE_AFTER
    assert dropped.cells[0] == "—\nc2"
    assert "not_found: the API does not know this campaign (404)" in dropped.cells[5]
    assert dropped.cells[5].endswith("; no data shown")


def test_every_failure_reason_has_a_hint() -> None:
    """Each reason the poller can give is explained on the page, and only those."""
    assert set(REASON_HINTS) == set(ERROR_REASONS)


def test_not_yet_fetched_rows() -> None:
    """Before its first fetch a campaign is listed with dashes, never fetched, and waiting."""
    parsed = page([unfetched("cmp_new")])
    assert parsed.rows[0].css == "nodata"
    assert parsed.rows[0].cells == [
        "—\ncmp_new",
        *["—"] * 3,
        "never",
        "waiting for the first fetch",
        "—",
        "—",
    ]


def test_empty_states() -> None:
    """No campaigns, or no problems when only problems are asked for: a sentence, no table."""
    nothing = page([])
    assert "No campaigns configured." in nothing.text
    assert "table" not in nothing.tags
    starting = StatusPageParser(render_status_page(Snapshot(), FACTS))
    assert "The exporter is starting: no campaign list published yet." in starting.text
    healthy = page([fine("c1")], query=PageQuery(problems_only=True))
    assert "No problems: every campaign was fetched and none is stalled or paused." in healthy.text
    assert "table" not in healthy.tags


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0 s"),
        (0.9, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (3660, "1 h 1 min"),
        (86400, "1 d"),
        (90000, "1 d 1 h"),
    ],
)
def test_durations(seconds: float, text: str) -> None:
    """Spans of time read the way an operator says them."""
    assert duration(seconds) == text


def test_absurd_times_do_not_break_the_page() -> None:
    """A time beyond what a date can hold shows as a dash."""
    assert utc(1e20) == "—"
    assert utc(float("nan")) == "—"


# -- health and page frame


def test_health_on_top() -> None:
    """Version, campaigns and shard, problem counts, budget, last round and readiness on top."""
    facts = PageFacts(
        now=NOW,
        poll_interval_seconds=12,
        budget=BudgetFacts(limit=1000, remaining=80, reset_at=NOW + 240, stretch=2.5),
        shard_index=1,
        shard_count=3,
    )
    parsed = page([failing("c1"), fine("c2", status=CampaignStatus.PAUSED), fine("c3")], facts)
    text = parsed.text
    assert f"Version{__version__}" in text
    assert "Campaigns configured3 (shard 1 of 3)" in text
    assert "Failing1" in text
    assert "Paused1" in text
    assert "API budget80 of 1,000 requests left, resets in 4 min; polling 2.5x slower" in text
    assert "Last poll roundfinished 3 s ago, took 1.2 s" in text
    quick = Snapshot((fine("c1"),), NOW - 3, 0.0425, True)
    assert "took 42 ms" in StatusPageParser(render_status_page(quick, FACTS)).text
    assert "Readyyes" in text
    assert parsed.title == "1 failing · DialNexa exporter"
    assert parsed.refresh == "12"


@pytest.mark.parametrize(
    "budget",
    [None, BudgetFacts(limit=None, remaining=None, reset_at=None)],
)
def test_budget_not_reported(budget: BudgetFacts | None) -> None:
    """Without rate-limit headers from the API the budget says so."""
    facts = PageFacts(now=NOW, poll_interval_seconds=30, budget=budget)
    assert "API budgetnot reported by the API" in page([fine("c1")], facts).text


def test_first_round_in_progress() -> None:
    """Before the first round ends the page says so instead of a time."""
    snapshot = Snapshot((unfetched("c1"),))
    parsed = StatusPageParser(render_status_page(snapshot, FACTS))
    assert "Last poll roundfirst round in progress" in parsed.text
    assert "Readyno, first round not done" in parsed.text


@pytest.mark.parametrize(("interval", "seconds"), [(0.05, 5), (12.4, 12), (30, 30), (3600, 30)])
def test_refresh_follows_the_poll_interval_within_bounds(interval: float, seconds: int) -> None:
    """The page reloads at the poll interval, never more often than 5 s nor less than 30 s."""
    assert refresh_seconds(interval) == seconds


def test_links_stay_relative() -> None:
    """Endpoint links are relative; the metrics link follows the telemetry path."""
    plain = page([fine("c1")])
    assert plain.links[:3] == ["metrics", "healthz", "readyz"]
    moved = page([fine("c1")], PageFacts(now=NOW, poll_interval_seconds=30, metrics_path="/x/m"))
    assert moved.links[0] == "x/m"
    odd = page([fine("c1")], PageFacts(now=NOW, poll_interval_seconds=30, metrics_path="/a:b"))
    assert odd.links[0] == "./a:b"


def test_the_policy_allows_exactly_the_stylesheet() -> None:
    """The policy allows the page's <style> by its hash, and nothing else."""
    html = render_status_page(Snapshot((fine("c1"),)), FACTS)
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'none';")
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert "style=" not in html  # inline style attributes would need 'unsafe-inline'
    assert "<script" not in html


async def test_exposition_cache_keeps_the_snapshot_it_rendered() -> None:
    """The exposition cache keeps the snapshot it rendered: empty first, then each published."""
    cache = ExpositionCache()
    assert cache.snapshot.campaigns == ()
    snapshot = Snapshot((fine("c1"),), NOW, 1.0, True)
    await cache.update(snapshot)
    assert cache.snapshot is snapshot


# -- served


SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def test_served_page_shows_what_metrics_show_and_never_polls(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """Served: problems first, inert names, budget, headers; a flood fetches nothing; no key."""
    sim = await start_simulator(
        [
            campaign("cmp_ok", name="Steady"),
            campaign("cmp_bad", name="Broken"),
            campaign("cmp_evil", name=HOSTILE_NAME),
            campaign("cmp_paused", name="Held", status="paused"),
        ]
    )
    sim.sim.set_rate_limit(RateLimitPolicy(limit=5000, window=3600))
    sim.sim.set_fault(Fault(FaultKind.STATUS, status=500), "cmp_bad")
    ids = ["cmp_ok", "cmp_bad", "cmp_evil", "cmp_paused"]
    exporter = await start_exporter(exporter_settings(sim, ids, poll_interval_seconds=3600))
    await exporter.wait_ready()
    requests = sim.sim.stats.requests

    status, headers, body = await exporter.get("/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    parsed = StatusPageParser(body.decode())
    assert [row.css for row in parsed.rows] == ["failing", "paused", "ok", "ok"]
    assert names(parsed) == ["—", "Held", HOSTILE_NAME, "Steady"]  # cmp_bad never answered
    assert parsed.rows[0].cells[0] == "—\ncmp_bad"
    assert parsed.rows[0].cells[5].startswith("server_error: the API failed (5xx)")
    assert "script" not in parsed.tags
    assert "requests left" in parsed.text
    assert "of 5,000 requests left" in parsed.text
    assert API_KEY.encode() not in body
    assert API_KEY[:8].encode() not in body

    async def one() -> int:
        status, _, _ = await exporter.get("/?problems=1")
        return status

    assert await asyncio.gather(*[one() for _ in range(50)]) == [200] * 50
    assert sim.sim.stats.requests == requests
    assert exporter.app[EXPOSITION].snapshot.campaigns_configured == 4


@pytest.mark.parametrize(
    "path",
    [
        "/?page=-1",
        "/?page=abc",
        "/?page=%00",
        "/?page=1%0d%0aX-Injected:%201",
        "/?problems=%3Cscript%3E",
    ],
)
async def test_bad_queries_get_a_one_line_400(
    start_simulator: StartSim, start_exporter: StartExporter, path: str
) -> None:
    """Unusable parameters: 400 with one line naming the parameter, the page's headers, no echo."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"], poll_interval_seconds=3600))
    status, headers, body = await exporter.get(path)
    assert status == 400
    assert body.count(b"\n") == 1
    assert body.split(b":")[0] in (b"page", b"problems")
    assert b"script" not in body
    assert b"Injected" not in body
    assert "X-Injected" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


async def test_absurd_queries_do_not_stall_or_break_the_server(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """Huge pages clamp, repeated or unknown parameters pass, an overlong query is refused."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"], poll_interval_seconds=3600))
    await exporter.wait_ready()
    status, _, body = await exporter.get("/?page=1" + "0" * 100)
    assert status == 200
    assert len(StatusPageParser(body.decode()).rows) == 1
    repeated = "&".join(["page=1"] * 1000)
    assert (await exporter.get(f"/?{repeated}"))[0] == 200
    rng = random.Random(7)
    junk = "&".join(f"{''.join(rng.choices(string.ascii_letters, k=8))}=1" for _ in range(200))
    assert (await exporter.get(f"/?{junk}"))[0] == 200
    status, _, _ = await exporter.get("/?page=" + "9" * 100_000)
    assert 400 <= status < 500
    assert (await exporter.get("/"))[0] == 200
    async with exporter.session.head(exporter.server.make_url("/")) as response:
        assert response.status == 200


async def test_page_needs_basic_auth_like_metrics(
    tmp_path: Path, start_simulator: StartSim
) -> None:
    """With basic auth users, / answers 401 without the right user and the page with it."""
    password = "page-password-9f2c"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(yaml.safe_dump({"basic_auth_users": {"alice": hashed}}))
    sim = await start_simulator([campaign("cmp_a", name="Guarded")])
    settings_ = exporter_settings(sim, ["cmp_a"], web_config_file=str(config))
    server = await serve(create_app(settings_))
    url = server.make_url("/")
    try:
        async with aiohttp.ClientSession() as session:

            async def get(user: str | None, secret: str = "") -> tuple[int, str]:
                headers = {}
                if user is not None:
                    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
                    headers["Authorization"] = f"Basic {token}"
                async with session.get(url, headers=headers) as response:
                    return response.status, await response.text()

            for user, secret in ((None, ""), ("alice", "wrong"), ("bob", password)):
                status, text = await get(user, secret)
                assert status == 401
                assert "Guarded" not in text
            await wait_for(lambda: server.app[EXPOSITION].snapshot.ready, what="first poll round")
            status, text = await get("alice", password)
            assert status == 200
            assert "Guarded" in text
    finally:
        await server.close()


# -- banners: polling paused or behind, a rejected reload


def lagging(views: list[CampaignView], due_ago: float, facts: PageFacts) -> StatusPageParser:
    """The page of a snapshot whose most overdue campaign fell due ``due_ago`` seconds ago."""
    snapshot = Snapshot(tuple(views), NOW - 3, 1.25, True, oldest_due=NOW - due_ago)
    return StatusPageParser(render_status_page(snapshot, facts))


def banner_texts(parsed: StatusPageParser) -> list[str]:
    """The text of each banner, in page order."""
    return parsed.banners


def test_no_banner_while_polling_keeps_up() -> None:
    """Campaigns due for less than a poll interval, no budget hold, no rejected reload: no
    banner at all."""
    facts = PageFacts(now=NOW, poll_interval_seconds=30, budget=BudgetFacts(1000, 900, NOW + 60))
    assert banner_texts(lagging([fine("c1"), failing("c2")], 25, facts)) == []


def test_a_budget_hold_says_until_when_and_since_when() -> None:
    """The budget holding every request until its reset: the banner names the budget, the
    reset and how long campaigns have waited."""
    budget = BudgetFacts(1000, 0, NOW + 300, 100.0, held_until=NOW + 300, held_since=NOW - 90)
    facts = PageFacts(now=NOW, poll_interval_seconds=30, budget=budget)
    (text,) = banner_texts(lagging([fine("c1")], 120, facts))
    assert text.startswith("Polling paused by the API budget until its reset at ")
    held = f"at {utc(NOW + 300)} (in 5 min), every request held since {utc(NOW - 90)} (1 min)"
    assert held in text
    assert ": 0 of 1,000 requests left, none to spare before then" in text
    assert f"campaigns waiting since {utc(NOW - 120)} (2 min)" in text


def test_pacing_that_puts_polling_behind_says_so() -> None:
    """Polling stretched by the budget and campaigns waiting past a poll interval."""
    budget = BudgetFacts(1000, 150, NOW + 3000, 3.0)
    facts = PageFacts(now=NOW, poll_interval_seconds=30, budget=budget)
    (text,) = banner_texts(lagging([fine("c1")], 90, facts))
    assert text.startswith("Polling is behind: paced by the API budget 3.0x slower")
    assert "since" in text


def test_polling_behind_for_no_known_reason_says_what_it_may_be() -> None:
    """Overdue campaigns without a budget reason: hanging fetches or a stuck poll loop, since
    when the oldest fell due."""
    (text,) = banner_texts(lagging([fine("c1")], 600, FACTS))
    assert text.startswith("Polling is behind a campaign due since ")
    assert f"since {utc(NOW - 600)} (10 min)" in text
    assert "fetches may hang" in text
    assert "poll loop may be stuck" in text


def test_every_campaign_failing_says_since_when_and_why() -> None:
    """All campaigns failing: one banner with the earliest start and the reasons."""
    views = [failing("c1", reason="unauthorized"), failing("c2", reason="<b>odd</b>")]
    (text,) = banner_texts(lagging(views, 0, FACTS))
    assert text.startswith(f"Every campaign is failing since {utc(NOW - 300)} (5 min)")
    assert "<b>odd</b>, unauthorized" in text
    assert "b" not in lagging(views, 0, FACTS).tags


def test_a_rejected_reload_shows_what_and_since_when_escaped_and_cut() -> None:
    """The rejected reload's one-line error, inert and cut to its bound, the time of the first
    rejection, and the configuration still in force."""
    error = "campaigns: invalid campaign id '<script>alert(1)</script>\x1b[2J'" + "x" * 1000
    reload = ReloadFacts(loaded_at=NOW - 7200, rejected_since=NOW - 60, error=error)
    parsed = page([fine("c1")], PageFacts(now=NOW, poll_interval_seconds=30, reload=reload))
    (text,) = banner_texts(parsed)
    assert text.startswith(f"Configuration reload rejected since {utc(NOW - 60)} (1 min): ")
    assert "invalid campaign id '<script>alert(1)</script>\ufffd[2J'" in text
    assert "x" * (MAX_ERROR_CHARS - 80) in text
    assert "x" * MAX_ERROR_CHARS not in text
    assert "Still running the configuration loaded 2 h ago." in text
    assert "script" not in parsed.tags
    accepted = ReloadFacts(loaded_at=NOW - 10)
    assert (
        banner_texts(
            page([fine("c1")], PageFacts(now=NOW, poll_interval_seconds=30, reload=accepted))
        )
        == []
    )


async def test_a_rejected_reload_shows_on_the_served_page(
    start_simulator: StartSim, start_exporter: StartExporter, tmp_path: Path
) -> None:
    """A configuration file that no longer validates: the page says the reload was rejected,
    why and since when, until a good file is loaded again."""
    sim = await start_simulator([campaign("cmp_a")])
    config = tmp_path / "config.yaml"
    config.write_text("campaigns: [cmp_a]\n")
    flags = config_file_flags(sim, config)
    exporter = await start_exporter(load_settings(flags), flags)
    await exporter.wait_ready()
    config.write_text("campaigns: ['../etc']\n")
    assert not await exporter.app[RELOADER].reload()
    _, _, body = await exporter.get("/")
    (text,) = StatusPageParser(body.decode()).banners
    assert text.startswith("Configuration reload rejected since ")
    assert "invalid campaign id" in text
    assert API_KEY not in body.decode()
    config.write_text("campaigns: [cmp_a]\n")
    assert await exporter.app[RELOADER].reload()
    _, _, body = await exporter.get("/")
    assert StatusPageParser(body.decode()).banners == []


def test_data_dropped_as_stale_is_no_data_not_a_failure() -> None:
    """A campaign whose last fetch succeeded but whose data went stale (nothing fetched since)
    is listed without data, saying for how long nothing was fetched, and not as failing."""
    stale = CampaignView("c1", None, False, NOW - 400, (), NOW - 400)
    assert problem_of(stale) is Problem.NO_DATA
    parsed = page([stale, fine("c2")])
    assert [row.css for row in parsed.rows] == ["nodata", "ok"]
    assert parsed.rows[0].cells[5] == "no fetch for 6 min: data dropped as stale"
    assert "Failing0" in parsed.text
