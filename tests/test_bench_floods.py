"""Smoke run of tests/benchmarks/bench_floods.py: it measures what it claims to, and what it
measures stays within bounds: the exporter (open-file limit 1024) under 1,100 idle or half-open
connections, plain and TLS, on each event loop.

Asserted: every scrape during a flood is answered, the exporter holds at most its connection
cap and never runs out of descriptors, its memory stays under the chart's limit and comes back
near where it started, and a flood costs at most a line or two of log. Not asserted: how fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.web.connections import ConnectionLimits
from tests.benchmarks import bench_floods as bench

pytestmark = pytest.mark.slow


CHART_MEMORY_LIMIT = 256 * 1024 * 1024
# How far RSS may stay above where a flood found it, once the flood is gone.
SETTLED_SLACK = 24 * 1024 * 1024


@dataclass
class Floods:
    """One run of the four floods, and the sizes it ran with."""

    nofile: int
    count: int
    results: list[bench.FloodResult]


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def floods(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Floods:
    """The four floods against the exporter on one event loop (about 15 s): 1,100 connections
    against an open-file limit of 1024, both lowered together when this process itself may
    open fewer files."""
    own = bench.raise_own_file_limit(bench.EXPORTER_NOFILE + 300)
    nofile = min(bench.EXPORTER_NOFILE, own - 300)
    count = nofile + 76
    workdir: Path = tmp_path_factory.mktemp(f"floods-{request.param}")
    results = bench.run(
        count=count,
        hold=1.0,
        scrapes=3,
        event_loop=request.param,
        workdir=workdir,
        nofile=nofile,
    )
    return Floods(nofile, count, results)


def test_every_flood_ran_and_the_report_shows_it(floods: Floods) -> None:
    """All four kinds of flood ran with most of their connections opened, and the report
    has a row for each."""
    assert [r.kind for r in floods.results] == list(bench.KINDS)
    for result in floods.results:
        assert result.attempted == floods.count
        assert result.opened >= floods.count * 0.9, result
    report = bench.build_report(floods.results, "smoke")
    assert report.count("\n| ") == 1 + len(bench.KINDS)


def test_scrapes_are_answered_during_every_flood(floods: Floods) -> None:
    """Each scrape made while a flood was held got a complete 200 /metrics."""
    for result in floods.results:
        assert len(result.answered) == len(result.scrapes) == 3, result.kind


def test_the_exporter_holds_at_most_its_cap_and_keeps_descriptors(
    floods: Floods,
) -> None:
    """At the end of each flood the exporter held no more connections than its cap, and its
    descriptors stayed well below the limit it was given."""
    cap = ConnectionLimits().max_connections
    for result in floods.results:
        assert result.held_at_end <= cap, result.kind
        assert result.fds_peak < floods.nofile - 100, result.kind


def test_memory_stays_within_the_chart_limit_and_comes_back(
    floods: Floods,
) -> None:
    """RSS never reached the chart's 256 MiB limit, and after the flood it came back near
    where the flood found it."""
    for result in floods.results:
        assert 0 < result.rss_before <= result.rss_peak < CHART_MEMORY_LIMIT, result.kind
        assert result.rss_after <= result.rss_before + SETTLED_SLACK, result.kind


def test_a_flood_costs_at_most_a_line_or_two_of_log(floods: Floods) -> None:
    """The exporter's log grew by at most two lines' worth during each flood."""
    for result in floods.results:
        assert result.log_bytes <= 600, result.kind
