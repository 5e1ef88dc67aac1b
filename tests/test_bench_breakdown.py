"""Smoke run of tests/benchmarks/bench_breakdown.py at N=50: every variant's round is N fetches.

Only what the figures stand for is asserted (each round fetches every campaign once, every
figure is a positive CPU time, the table has a row per variant); timings are not.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest

from exporter import loops as event_loops
from tests.benchmarks import bench_breakdown as breakdown
from tests.benchmarks.bench_exporter import campaign_ids, start_simulator

pytestmark = pytest.mark.slow

SIZE = 50
ROUNDS = 2


def test_every_variant_round_fetches_each_campaign_once(tmp_path: Path) -> None:
    """Each variant's rounds (warm-up included) cost the simulator exactly N requests each, and
    each figure is a positive CPU time; the table shows every variant against the floor."""
    with contextlib.ExitStack() as stack:
        sim = start_simulator(stack, SIZE, tmp_path)
        before = sim.requests()
        figures = event_loops.run(
            breakdown.measure(sim.api_url, sim.child.pid, campaign_ids(SIZE), ROUNDS), "asyncio"
        )
        fetched = sim.requests() - before
    assert fetched == len(figures) * (ROUNDS + 1) * SIZE
    assert len(figures) == 4
    for values in figures.values():
        assert len(values) == ROUNDS
        assert all(math.isfinite(v) and v > 0 for v in values)
    report = breakdown.table(SIZE, figures)
    assert all(f"| {name} |" in report for name in figures)
    assert "| 1.00 |" in report  # the floor's own row
