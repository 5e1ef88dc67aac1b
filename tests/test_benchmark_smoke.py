"""Smoke run of tests/benchmarks/bench_exporter.py at N=200 (and bench_instructions' sides at
N=50): it measures what it claims to.

Only correctness of the measurements is asserted (every campaign exported, figures are
positive numbers, the table is complete); timings are not, since CI machines vary.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter import loops as event_loops
from exporter.demo.simulator import load_campaigns
from tests.benchmarks import bench_exporter as bench
from tests.benchmarks import bench_instructions as instructions

pytestmark = pytest.mark.slow

SIZE = 200
POLL = 2.0
SCRAPES = 20
# Naive series per campaign: info, 7 status, 7 values (no scheduled_at in the load mix), up,
# last success, and the error counter's _total and _created samples.
NAIVE_SAMPLES_PER_CAMPAIGN = 19


@dataclass
class SmokeRun:
    """One benchmark run and its report."""

    result: bench.Result
    check: bench.StatusAwareFigures
    report: str


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """Run the benchmark once for 200 campaigns with short intervals (about 15 s)."""
    workdir: Path = tmp_path_factory.mktemp("bench")
    results, check = bench.run(
        [SIZE],
        poll=POLL,
        scrapes=SCRAPES,
        naive_budget=0.5,
        check_n=SIZE,
        # Terminal campaigns are not refetched within the short window at all, so the saving
        # (their share of the mix) stands well clear of scheduling noise.
        check_poll=1.0,
        check_terminal=60.0,
        check_window=4.0,
        workdir=workdir,
        loops=("uvloop", "asyncio"),
    )
    return SmokeRun(results[0], check, bench.build_report(results, check))


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_every_campaign_is_exported_and_up(smoke: SmokeRun) -> None:
    """The exporter under test served all 200 campaigns, each with campaign_up 1."""
    assert smoke.result.exporter.exported_campaigns == SIZE
    assert smoke.result.exporter.campaigns_up == SIZE


def test_rounds_are_measured_over_exactly_n_fetches(smoke: SmokeRun) -> None:
    """The first and the steady-state round each cover N fetches and cost positive time."""
    figures = smoke.result.exporter
    assert len(figures.steady_rounds) == bench.STEADY_ROUNDS
    for round_figures in (figures.first_round, *figures.steady_rounds):
        assert round_figures.fetches == SIZE
        assert _positive(round_figures.wall)
        assert _positive(round_figures.cpu)
        assert _positive(round_figures.sim_cpu)
    assert _positive(figures.poll_duration_first)
    assert 0 < figures.spawn_to_listen < figures.spawn_to_ready


def test_scrapes_are_timed_for_both_encodings(smoke: SmokeRun) -> None:
    """Every scrape is timed; gzip bodies are smaller than plain ones; CPU per scrape is > 0."""
    gzipped, plain = smoke.result.exporter.gzip_scrapes, smoke.result.exporter.plain_scrapes
    for scrapes in (gzipped, plain):
        assert len(scrapes.latencies) == SCRAPES
        assert all(_positive(latency) for latency in scrapes.latencies)
        assert scrapes.p50 <= scrapes.p99
        assert _positive(scrapes.cpu_per_scrape)
    assert 0 < gzipped.body_bytes < plain.body_bytes


def test_memory_and_stall_figures_are_read(smoke: SmokeRun) -> None:
    """RSS comes from /proc and the stall probe got answers in both probed rounds."""
    figures = smoke.result.exporter
    assert 0 < figures.rss_at_listen <= figures.rss_peak
    assert _positive(figures.rss_after_round)
    assert _positive(figures.stall_first_round)
    assert _positive(figures.stall_steady_round)
    assert figures.probe_requests > 0


def test_naive_reference_has_the_same_campaigns(smoke: SmokeRun) -> None:
    """The naive registry holds ~20 series for each of the 200 campaigns and every figure."""
    naive = smoke.result.naive
    assert naive.series == NAIVE_SAMPLES_PER_CAMPAIGN * SIZE
    assert len(naive.plain_latencies) >= 3
    assert len(naive.gzip_latencies) == len(naive.plain_latencies)
    assert 0 < naive.gzip_bytes < naive.plain_bytes
    assert _positive(naive.registry_rss)
    for round_figures in (naive.first_round, naive.steady_round, naive.floor_round):
        assert round_figures.fetches == SIZE
        assert _positive(round_figures.cpu)


def test_status_aware_polling_saves_requests(smoke: SmokeRun) -> None:
    """The status-aware check counts requests on both sides and computes fewer with it."""
    check = smoke.check
    terminal = sum(1 for c in load_campaigns(SIZE, bench.SEED) if c.status in bench.TERMINAL)
    assert check.terminal == terminal > 0
    # Over a few seconds the two counts differ by whole rounds either way, so only their
    # presence is checked here; tests/test_exporter.py proves the saving exactly.
    assert check.measured_with > 0
    assert check.measured_without > 0
    assert check.computed_with < check.computed_without


def test_report_has_every_row(smoke: SmokeRun) -> None:
    """The markdown table has one row per figure, each with seven cells and a result."""
    lines = [line for line in smoke.report.splitlines() if line.startswith("| ")]
    body = lines[1:]
    for name in bench.ROW_NAMES:
        matching = [line for line in body if line.startswith(f"| {name} |")]
        assert len(matching) == 1, name
        cells = matching[0].strip("|").split(" | ")
        assert len(cells) == 7
        assert cells[-1].strip()


def test_requests_per_hour_follows_the_intervals() -> None:
    """90 active at 30 s and 10 terminal at 600 s make 10,800 + 60 requests an hour."""
    assert bench.requests_per_hour(100, 10, 30.0, 600.0) == pytest.approx(10_860.0)


def test_percentile_is_nearest_rank() -> None:
    """The median of 1..100 is 50 and its 99th percentile is 99."""
    values = [float(v) for v in range(100, 0, -1)]
    assert bench.percentile(values, 0.5) == 50.0
    assert bench.percentile(values, 0.99) == 99.0


def test_both_event_loops_are_measured_side_by_side(smoke: SmokeRun) -> None:
    """The exporter ran on uvloop and on asyncio's loop, each beside the bare-client floor of
    its own loop and of asyncio's, and the report has one row per loop."""
    result = smoke.result
    assert list(result.by_loop) == ["uvloop", "asyncio"]
    assert result.exporter is result.by_loop["uvloop"]
    for loop, figures in result.by_loop.items():
        assert figures.loop == loop
        assert figures.exported_campaigns == SIZE
        assert _positive(figures.steady_round.cpu)
        assert _positive(result.floors[loop].cpu)
        assert result.floors[loop].fetches == SIZE
    table = smoke.report.split("Event loops side by side", 1)[1]
    assert table.count(f"| {SIZE} | uvloop |") == 1
    assert table.count(f"| {SIZE} | asyncio |") == 1


def test_the_cpu_ratio_is_the_median_of_the_pairs() -> None:
    """--cpu-ratio's table: each exporter pass over the mean of the floor rounds on either side
    of it, the median of those ratios, and the median pass of each side per fetch, every pass
    shown; a floor round missing on one side is an error, not a ratio."""

    def rounds(*cpus: float) -> list[bench.RoundFigures]:
        return [bench.RoundFigures(wall=1.0, cpu=cpu, sim_cpu=0.1, fetches=1000) for cpu in cpus]

    floors = rounds(0.2, 0.2, 0.1, 0.16)
    figures = bench.RatioFigures(1000, "uvloop", rounds(0.3, 0.195, 0.234), floors)
    assert (figures.exporter_cpu, figures.floor_cpu) == (0.234, 0.18)
    assert figures.pair_ratios == pytest.approx([1.5, 1.3, 1.8])
    assert figures.ratio == pytest.approx(1.5)  # the rounds' own ratios, not the medians'
    row = bench.ratio_table([figures]).splitlines()[-1]
    assert row.startswith("| 1,000 | uvloop | 0.234 s (0.3 s, 0.195 s, 0.234 s) | 234 µs |")
    assert row.endswith("| 180 µs | **1.50** (1.50, 1.30, 1.80) |")
    with pytest.raises(ValueError, match="floor round before"):
        _ = bench.RatioFigures(1000, "uvloop", rounds(0.3), rounds(0.2)).pair_ratios


def test_the_cpu_ratio_is_measured_against_real_processes(tmp_path: Path) -> None:
    """One pass each side at N=200 on asyncio's loop: both sides fetched every campaign."""
    [figures] = bench.run_ratio([SIZE], loop="asyncio", rounds=1, poll=POLL, workdir=tmp_path)
    assert figures.exporter_rounds[0].fetches == SIZE
    assert figures.floor_rounds[0].fetches == SIZE
    assert figures.exporter_cpu > 0
    assert figures.floor_cpu > 0


def test_the_instruction_count_sides_fetch_every_campaign_each_round(tmp_path: Path) -> None:
    """bench_instructions' two sides, run without valgrind at N=50: each fetches every campaign
    once a round; and the total is read from valgrind's summary line."""
    with contextlib.ExitStack() as stack:
        sim = bench.start_simulator(stack, 50, tmp_path)
        for side in instructions.SIDES:
            before = sim.requests()
            event_loops.run(instructions.run_side(side, sim.api_url, 50, rounds=2), "asyncio")
            assert sim.requests() - before == 100, side
    summary = "==4242== I   refs:      2,844,284,736\n"
    match = instructions._TOTAL.search(summary)
    assert match is not None
    assert match.group(1) == "2,844,284,736"
