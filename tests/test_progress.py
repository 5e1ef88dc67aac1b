"""Campaign progress: when completed calls last moved, since when a campaign dials, its recent
pace, and what each fetch costs. The cost is printed, never asserted:

    .venv/bin/python -m tests.test_progress
"""

from __future__ import annotations

import math
import time

import pytest

from exporter.api.models import Campaign, CampaignStatus
from exporter.polling.progress import (
    RATE_TAU_SECONDS,
    Progress,
    first_progress,
    next_progress,
    remaining_calls,
)
from exporter.polling.state import CampaignState

GAP = 900.0
ACTIVE = CampaignStatus.ACTIVE


def rec(completed: int | None, status: CampaignStatus = ACTIVE, total: int = 1000) -> Campaign:
    """A record with ``completed`` calls done of ``total``."""
    pending = None if completed is None else total - completed
    return Campaign(
        "c", status=status, total_leads=total, completed_calls=completed, pending_calls=pending
    )


def test_first_sighting_starts_the_clocks() -> None:
    """The first record sets the last move and the dialling start to its fetch; no pace yet."""
    assert first_progress(rec(5), 100.0) == Progress.make(5, 100.0, 100.0, None)
    assert first_progress(rec(5, CampaignStatus.PAUSED), 100.0) == Progress.make(
        5, 100.0, None, None
    )


def test_unchanged_counts_keep_the_same_progress_object() -> None:
    """No move and no status change: the same object back, nothing made (O(1), no garbage)."""
    first = first_progress(rec(5), 100.0)
    assert next_progress(first, rec(5), 130.0, GAP) is first


def test_a_steady_pace_is_measured_exactly() -> None:
    """Moving 10 calls every 30 s reads as a third of a call per second, whatever the weights."""
    progress = first_progress(rec(0), 0.0)
    for step in range(1, 40):
        progress = next_progress(progress, rec(10 * step), 30.0 * step, GAP)
    assert progress.rate == pytest.approx(1 / 3)
    assert progress.moved_at == 30.0 * 39


def test_the_pace_follows_a_change_within_a_few_time_constants() -> None:
    """After the pace halves, the average is mostly the new pace after one time constant and
    nearly all of it after three."""
    progress = first_progress(rec(0), 0.0)
    done, now = 0, 0.0
    for _ in range(20):  # 2 calls/s
        done, now = done + 60, now + 30
        progress = next_progress(progress, rec(done), now, GAP)
    marks = {}
    for step in range(1, int(3 * RATE_TAU_SECONDS / 30) + 1):  # then 1 call/s
        done, now = done + 30, now + 30
        progress = next_progress(progress, rec(done), now, GAP)
        marks[step * 30] = progress.rate
    assert marks[int(RATE_TAU_SECONDS)] == pytest.approx(1 + math.exp(-1), rel=1e-6)
    assert marks[int(3 * RATE_TAU_SECONDS)] == pytest.approx(1 + math.exp(-3), rel=1e-6)


def test_a_long_gap_measures_no_pace_and_keeps_the_last_one() -> None:
    """A move after longer than the threshold (a stop, a night) leaves the pace as it was."""
    progress = next_progress(first_progress(rec(0), 0.0), rec(30), 30.0, GAP)
    assert progress.rate == pytest.approx(1.0)
    after_night = next_progress(progress, rec(31), 30.0 + 11 * 3600, GAP)
    assert after_night.rate == pytest.approx(1.0)
    assert after_night.moved_at == 30.0 + 11 * 3600


def test_slow_moves_within_the_threshold_are_a_slow_pace() -> None:
    """One call every 10 minutes is a pace (1/600 per second), not a stop."""
    progress = first_progress(rec(0), 0.0)
    for step in range(1, 6):
        progress = next_progress(progress, rec(step), 600.0 * step, GAP)
    assert progress.rate == pytest.approx(1 / 600)


def test_a_pause_stops_the_dialling_clock_and_resuming_restarts_it() -> None:
    """Paused: not dialling; resumed: dialling from then, and the pause measures no pace."""
    progress = next_progress(first_progress(rec(0), 0.0), rec(30), 30.0, GAP)
    paused = next_progress(progress, rec(30, CampaignStatus.PAUSED), 60.0, GAP)
    assert paused.dialling_since is None
    assert paused.moved_at == 30.0
    resumed = next_progress(paused, rec(30), 500.0, GAP)
    assert resumed.dialling_since == 500.0
    moved = next_progress(resumed, rec(60), 530.0, GAP)
    assert moved.rate == pytest.approx(1.0)  # 30 calls in the 30 s since resuming
    also = next_progress(paused, rec(40), 500.0, GAP)  # moved in the same fetch as resuming
    assert also.rate == pytest.approx(1.0)
    assert also.dialling_since == 500.0


def test_a_clock_set_back_measures_no_pace() -> None:
    """A wall clock stepped back (NTP) makes a negative gap: no pace from it, none negative."""
    progress = next_progress(first_progress(rec(0), 1000.0), rec(30), 1030.0, GAP)
    stepped = next_progress(progress, rec(60), 900.0, GAP)
    assert stepped.rate == pytest.approx(1.0)
    assert stepped.moved_at == 900.0


def test_absurd_counts_make_no_absurd_pace_error() -> None:
    """Counts near the field's bound and tiny gaps give a finite pace, never an exception."""
    progress = first_progress(rec(0, total=10**12), 0.0)
    jumped = next_progress(progress, rec(10**12 - 1, total=10**12), 1e-6, GAP)
    assert jumped.rate is not None
    assert math.isfinite(jumped.rate)


def test_counts_set_back_or_gone_start_the_pace_over() -> None:
    """A decrease, or counters vanishing, forget the pace: it is not a negative one."""
    progress = next_progress(first_progress(rec(0), 0.0), rec(30), 30.0, GAP)
    assert next_progress(progress, rec(10), 60.0, GAP).rate is None
    gone = next_progress(progress, rec(None), 60.0, GAP)
    assert gone.rate is None
    assert gone.completed is None


def test_remaining_calls_prefers_pending_then_total_less_completed() -> None:
    """pending_calls when sent, else total_leads - completed_calls, else unknown."""
    assert remaining_calls(rec(300)) == 700
    assert remaining_calls(Campaign("c", total_leads=10, completed_calls=4)) == 6
    assert remaining_calls(Campaign("c", total_leads=10, completed_calls=14)) == 0
    assert remaining_calls(Campaign("c", total_leads=10)) is None


def test_campaign_state_keeps_progress_across_failures_and_drops_it_with_the_data() -> None:
    """A failure keeps the progress; a 404 drops it with the record; an unchanged body (the
    same record object) keeps the very same progress."""
    state = CampaignState("c", next_due=0.0)
    first = rec(10)
    state.succeeded(first, 100.0, 1.0)
    state.succeeded(first, 130.0, 31.0)
    assert state.current_view().progress == Progress.make(10, 100.0, 100.0, None)
    state.succeeded(rec(40), 160.0, 61.0, max_gap=GAP)
    moved = state.current_view().progress
    assert moved is not None
    assert moved.rate == pytest.approx(0.5)
    state.failed("timeout", 190.0, drop_data=False)
    assert state.current_view().progress is moved
    state.failed("not_found", 220.0, drop_data=True)
    assert state.current_view().progress is None


def _per_fetch_us(states: list[CampaignState], records: list[list[Campaign]]) -> float:
    """Microseconds per CampaignState.succeeded over every round of ``records``."""
    start = time.perf_counter()
    for step, round_records in enumerate(records):
        wall = 1000.0 + 30 * step
        for state, record in zip(states, round_records, strict=True):
            state.succeeded(record, wall, wall, GAP)
    return (time.perf_counter() - start) / (len(states) * len(records)) * 1e6


def main(campaigns: int = 10_000, rounds: int = 20) -> None:
    """Print the cost per fetch of keeping progress, for ``campaigns`` campaigns."""
    moving = [[rec(step * 10 + n % 7) for n in range(campaigns)] for step in range(rounds)]
    still = [moving[0]] * rounds  # the same record objects: bodies unchanged
    moved_us = _per_fetch_us([CampaignState(f"c{n}", 0.0) for n in range(campaigns)], moving)
    still_us = _per_fetch_us([CampaignState(f"c{n}", 0.0) for n in range(campaigns)], still)
    progress, moved = first_progress(moving[0][0], 0.0), moving[1][0]
    start = time.perf_counter()
    for n in range(100_000):
        next_progress(progress, moved, 30.0 + n, GAP)
    alone = (time.perf_counter() - start) / 100_000 * 1e6
    print(f"progress tracking, {campaigns:,} campaigns x {rounds} rounds:")
    print(f"  next_progress alone (counts moved): {alone:.2f} us per fetch")
    print(f"  CampaignState.succeeded, counts moved every fetch: {moved_us:.2f} us per fetch")
    print(f"  CampaignState.succeeded, body unchanged (no progress work): {still_us:.2f} us")
    print(
        f"  a round of {campaigns:,} with every count moving: {moved_us * campaigns / 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
