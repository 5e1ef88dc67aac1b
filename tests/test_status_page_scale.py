"""The status page at ten thousand campaigns: bounded in rows and bytes, problems first across
every page, each snapshot ordered once. Timings are reported, never asserted:

    .venv/bin/python -m tests.test_status_page_scale

prints how long ordering and rendering take at 10,000 campaigns, which is how long one request
for the page holds the event loop.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator

import pytest

from exporter.api.models import Campaign, CampaignStatus
from exporter.exposition.status_page import (
    NO_STALLS,
    ROWS_PER_PAGE,
    OrderCache,
    PageFacts,
    PageQuery,
    Problem,
    order_campaigns,
    render_status_page,
    status_page_parts,
)
from exporter.polling.progress import DIALLING, Progress
from exporter.polling.state import CampaignView, Snapshot
from tests.helpers import EPOCH, StatusPageParser

CAMPAIGNS = 10_000
NOW = EPOCH + 50_000.0
FACTS = PageFacts(now=NOW, poll_interval_seconds=30, api_url="https://api.example.test/v1")
# The largest page: ROWS_PER_PAGE failing rows with names at the length limit stay below this.
MAX_PAGE_BYTES = 600 * 1024


def load_snapshot(count: int = CAMPAIGNS, seed: int = 1, fetched_at: float = NOW) -> Snapshot:
    """``count`` campaigns in a realistic mix: 1% failing, the simulator's mix of statuses, and
    3% of the dialling ones without a completed call for over half an hour (stalled)."""
    rng = random.Random(seed)
    statuses = list(CampaignStatus)
    weights = [0.05, 0.6, 0.1, 0.1, 0.12, 0.03, 0.001]  # draft, active, running, paused, ...
    views = []
    for number in range(count):
        total = rng.randrange(100, 20_000)
        done = rng.randrange(0, total)
        campaign_id = f"cmp_load_{number:06d}"
        record = Campaign(
            campaign_id,
            name=f"Load campaign {rng.randrange(count)}",
            agent_id=f"agt_{rng.randrange(16**8):08x}",
            status=rng.choices(statuses, weights)[0],
            total_leads=total,
            completed_calls=done,
            pending_calls=total - done,
        )
        if rng.random() < 0.01:
            view = CampaignView(
                campaign_id, record, False, fetched_at - 600, (("timeout", 3),), fetched_at,
                fetched_at - 300, "timeout",
            )  # fmt: skip
        else:
            quiet = 2000.0 if rng.random() < 0.03 else 10.0
            dialling = fetched_at - 7200 if record.status in DIALLING else None
            progress = Progress.make(done, fetched_at - quiet, dialling, 0.5)
            view = CampaignView(
                campaign_id, record, True, fetched_at, (), fetched_at, progress=progress
            )
        views.append(view)
    return Snapshot(tuple(views), fetched_at, 4.2, True)


@pytest.mark.slow
def test_ten_thousand_campaigns_make_a_bounded_page_problems_first() -> None:
    """At 10,000 campaigns: bounded pages, problems first, each campaign on one page once."""
    snapshot = load_snapshot()
    ordering = order_campaigns(snapshot, FACTS.judge)
    assert ordering.counts[Problem.STALLED] > 100
    problems = ordering.problems
    assert 0 < problems < CAMPAIGNS
    first_html = render_status_page(snapshot, FACTS, PageQuery(), ordering)
    assert len(first_html.encode()) < MAX_PAGE_BYTES
    first = StatusPageParser(first_html)
    assert len(first.rows) == ROWS_PER_PAGE
    shown: list[str] = []
    pages = -(-CAMPAIGNS // ROWS_PER_PAGE)
    for number in range(1, pages + 1):
        parsed = StatusPageParser(render_status_page(snapshot, FACTS, PageQuery(number), ordering))
        shown.extend(row.cells[0].split("\n")[1].split(" ")[0] for row in parsed.rows)
    assert len(shown) == len(set(shown)) == CAMPAIGNS
    assert shown == [view.campaign_id for view in ordering.rows]
    failing = ordering.counts[Problem.FAILING]
    assert [row.css for row in first.rows[:failing]] == ["failing"] * failing
    only = StatusPageParser(render_status_page(snapshot, FACTS, PageQuery(1, True), ordering))
    assert len(only.rows) == min(problems, ROWS_PER_PAGE)
    assert "ok" not in {row.css for row in only.rows}


def test_each_snapshot_is_ordered_once() -> None:
    """The same snapshot reuses its ordering; the next one (same names) orders like a fresh sort."""
    cache = OrderCache()
    first = load_snapshot()
    ordering = cache.of(first, FACTS.judge)
    assert cache.of(first, FACTS.judge) is ordering
    a_second_later = PageFacts(now=NOW + 1, poll_interval_seconds=30)
    assert list(cache.steps(first, a_second_later.judge)) == []  # nobody crossed the threshold
    later = load_snapshot(fetched_at=NOW + 30)
    assert later.campaigns[0] is not first.campaigns[0]
    assert list(cache.of(later, FACTS.judge).rows) == list(order_campaigns(later, FACTS.judge).rows)


def _best_ms(action: Callable[[], object], repeat: int = 7) -> tuple[float, float]:
    """(median, max) milliseconds of ``action`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def _longest_step_ms(steps: Iterator[object]) -> float:
    """The longest time between two yields of ``steps`` (what one step holds the loop), in ms."""
    longest = 0.0
    start = time.perf_counter()
    for _ in steps:
        now = time.perf_counter()
        longest = max(longest, now - start)
        start = now
    return max(longest, time.perf_counter() - start) * 1000


def main() -> None:
    """Print how long each step of a page request takes at CAMPAIGNS campaigns."""
    judge = FACTS.judge
    snapshot = load_snapshot()
    renamed = load_snapshot(seed=2)
    next_round = load_snapshot(fetched_at=NOW + 30)
    ordering = order_campaigns(snapshot, judge)
    cache, unjudged = OrderCache(), OrderCache()
    cache.of(snapshot, judge)
    unjudged.of(snapshot)
    flip = [next_round, snapshot]

    def new_snapshot_same_names(into: OrderCache, judged: bool) -> None:
        flip.reverse()
        into.of(flip[0], judge if judged else NO_STALLS)

    figures = {
        "order a snapshot, names changed (full sort)": _best_ms(
            lambda: order_campaigns(renamed, judge)
        ),
        "order a new snapshot, names unchanged (cached name order)": _best_ms(
            lambda: new_snapshot_same_names(cache, True)
        ),
        "  the same without judging stalls (window closed)": _best_ms(
            lambda: new_snapshot_same_names(unjudged, False)
        ),
        "order the same snapshot again (cache hit)": _best_ms(lambda: cache.of(flip[0], judge)),
        f"render page 1 ({ROWS_PER_PAGE} rows)": _best_ms(
            lambda: render_status_page(snapshot, FACTS, PageQuery(), ordering)
        ),
        "render problems only": _best_ms(
            lambda: render_status_page(snapshot, FACTS, PageQuery(1, True), ordering)
        ),
    }
    size = len(render_status_page(snapshot, FACTS, PageQuery(), ordering).encode())
    sliced = OrderCache()
    longest = {
        "ordering, names changed": _longest_step_ms(sliced.steps(snapshot, judge)),
        "ordering, names unchanged": _longest_step_ms(sliced.steps(next_round, judge)),
        "rendering page 1": _longest_step_ms(
            status_page_parts(snapshot, FACTS, PageQuery(), ordering)
        ),
    }
    stalled = ordering.counts[Problem.STALLED]
    print(
        f"status page at {CAMPAIGNS:,} campaigns ({ordering.problems:,} with a problem, "
        f"{stalled:,} of them stalled)"
    )
    for name, (median, worst) in figures.items():
        print(f"  {name}: median {median:.2f} ms, max {worst:.2f} ms")
    print(f"  page 1 size: {size / 1024:.0f} KiB")
    print("longest step between two yields to the event loop (one request, sliced):")
    for name, milliseconds in longest.items():
        print(f"  {name}: {milliseconds:.2f} ms")


if __name__ == "__main__":
    main()
