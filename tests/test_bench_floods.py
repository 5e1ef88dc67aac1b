"""Smoke run of tests/benchmarks/bench_floods.py: it measures what it claims to, and what it
measures stays within bounds: the exporter (open-file limit 1024) under 1,100 idle or half-open
connections, plain and TLS, on each event loop.

Asserted: every scrape during a flood is answered, the exporter holds at most its connection
cap and never runs out of descriptors, its memory stays under the chart's limit and comes back
near where it started, and a flood costs at most a line or two of log. Not asserted: how fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.connections import ConnectionLimits
from tests.benchmarks import bench_floods as bench

pytestmark = pytest.mark.slow

COUNT = 1100  # past the 1024 descriptors the exporter is given
CHART_MEMORY_LIMIT = 256 * 1024 * 1024
# How far RSS may stay above where a flood found it, once the flood is gone.
SETTLED_SLACK = 24 * 1024 * 1024


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[bench.FloodResult]:
    """The four floods against the exporter on one event loop (about 15 s)."""
    workdir: Path = tmp_path_factory.mktemp(f"floods-{request.param}")
    return bench.run(count=COUNT, hold=1.0, scrapes=3, event_loop=request.param, workdir=workdir)


def test_every_flood_ran_and_the_report_shows_it(results: list[bench.FloodResult]) -> None:
    """All four kinds of flood ran with most of their connections opened, and the report
    has a row for each."""
    assert [r.kind for r in results] == list(bench.KINDS)
    for result in results:
        assert result.attempted == COUNT
        assert result.opened >= COUNT * 0.9, result
    report = bench.build_report(results, "smoke")
    assert report.count("\n| ") == 1 + len(bench.KINDS)


def test_scrapes_are_answered_during_every_flood(results: list[bench.FloodResult]) -> None:
    """Each scrape made while a flood was held got a complete 200 /metrics."""
    for result in results:
        assert len(result.answered) == len(result.scrapes) == 3, result.kind


def test_the_exporter_holds_at_most_its_cap_and_keeps_descriptors(
    results: list[bench.FloodResult],
) -> None:
    """At the end of each flood the exporter held no more connections than its cap, and its
    descriptors stayed well below the 1024 it was given."""
    cap = ConnectionLimits().max_connections
    for result in results:
        assert result.held_at_end <= cap, result.kind
        assert result.fds_peak < bench.EXPORTER_NOFILE - 100, result.kind


def test_memory_stays_within_the_chart_limit_and_comes_back(
    results: list[bench.FloodResult],
) -> None:
    """RSS never reached the chart's 256 MiB limit, and after the flood it came back near
    where the flood found it."""
    for result in results:
        assert 0 < result.rss_before <= result.rss_peak < CHART_MEMORY_LIMIT, result.kind
        assert result.rss_after <= result.rss_before + SETTLED_SLACK, result.kind


def test_a_flood_costs_at_most_a_line_or_two_of_log(results: list[bench.FloodResult]) -> None:
    """The exporter's log grew by at most two lines' worth during each flood."""
    for result in results:
        assert result.log_bytes <= 600, result.kind
