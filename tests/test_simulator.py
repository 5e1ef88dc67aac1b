"""The simulator's campaigns move as scripted, on an injected clock: no waiting for real time."""

from __future__ import annotations

from exporter.demo.simulator import (
    CALL_SECONDS,
    SimCampaign,
    Simulator,
    demo_campaigns,
    load_campaigns,
)


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        """Current time."""
        return self.now


def demo_simulator(speed: float = 1.0) -> tuple[Simulator, ManualClock]:
    """The demo campaigns on a manual clock."""
    clock = ManualClock()
    return Simulator(demo_campaigns(), speed=speed, monotonic=clock), clock


def test_progress_follows_concurrency() -> None:
    """Completed calls grow at max_concurrent_calls / CALL_SECONDS; pending is the rest."""
    sim, clock = demo_simulator()
    clock.now = 600.0
    record = sim.current_record("cmp_demo_progress")
    expected = int(600.0 * 10 / CALL_SECONDS)
    assert record["completed_calls"] == expected
    assert record["pending_calls"] == 3000 - expected
    assert record["status"] == "active"


def test_pausing_campaign_pauses_then_resumes() -> None:
    """cmp_demo_pause stops at 25% for 90 simulated minutes, then carries on."""
    sim, clock = demo_simulator()
    pause_at = 0.25 * 1200 / (5 / CALL_SECONDS)  # simulated seconds to reach 25%
    clock.now = pause_at + 60
    paused = sim.current_record("cmp_demo_pause")
    assert paused["status"] == "paused"
    assert paused["completed_calls"] == 300
    clock.now = pause_at + 5300
    assert sim.current_record("cmp_demo_pause")["completed_calls"] == 300
    clock.now = pause_at + 5400 + 120
    resumed = sim.current_record("cmp_demo_pause")
    assert resumed["status"] == "active"
    assert resumed["completed_calls"] == 310


def test_stalling_campaign_stays_active_without_progress() -> None:
    """cmp_demo_stall freezes at 40% while still active with pending calls."""
    sim, clock = demo_simulator()
    clock.now = 10_000.0
    first = sim.current_record("cmp_demo_stall")
    clock.now = 20_000.0
    second = sim.current_record("cmp_demo_stall")
    assert first["status"] == second["status"] == "active"
    assert first["completed_calls"] == second["completed_calls"] == 320
    assert second["pending_calls"] == 480


def test_small_campaign_completes() -> None:
    """cmp_demo_complete reaches completed with nothing pending."""
    sim, clock = demo_simulator()
    clock.now = 200 / (5 / CALL_SECONDS) + 1
    record = sim.current_record("cmp_demo_complete")
    assert record["status"] == "completed"
    assert (record["completed_calls"], record["pending_calls"]) == (200, 0)


def test_scheduled_draft_starts_on_time() -> None:
    """cmp_demo_scheduled is a draft with scheduled_at until its start, then active."""
    sim, clock = demo_simulator()
    clock.now = 1199.0
    draft = sim.current_record("cmp_demo_scheduled")
    assert draft["status"] == "draft"
    assert draft["completed_calls"] == 0
    assert draft["scheduled_at"].endswith("Z")
    clock.now = 1260.0
    started = sim.current_record("cmp_demo_scheduled")
    assert started["status"] == "active"
    assert started["completed_calls"] == 3


def test_legacy_shape_has_no_counters() -> None:
    """cmp_demo_legacy answers in the API page's first shape: running, no counters."""
    sim, _ = demo_simulator()
    record = sim.current_record("cmp_demo_legacy")
    assert record["status"] == "running"
    assert "total_leads" not in record
    assert "pending_calls" not in record
    assert record["retry_config"] == {"max_retries": 3, "retry_interval_minutes": 120}


def test_speed_factor_scales_simulated_time() -> None:
    """At 60x, one real second is one simulated minute."""
    sim, clock = demo_simulator(speed=60.0)
    clock.now = 10.0
    assert sim.sim_now() == 600.0
    assert sim.current_record("cmp_demo_progress")["completed_calls"] == 100


def test_load_campaigns_are_repeatable_for_a_seed() -> None:
    """The same seed gives the same campaigns; a different seed gives different ones."""
    first = [(c.id, c.status, c.total_leads) for c in load_campaigns(300, seed=3)]
    again = [(c.id, c.status, c.total_leads) for c in load_campaigns(300, seed=3)]
    other = [(c.id, c.status, c.total_leads) for c in load_campaigns(300, seed=4)]
    assert first == again
    assert first != other
    statuses = {status for _, status, _ in first}
    assert {"active", "paused", "completed"} <= statuses


def test_removed_campaign_is_gone() -> None:
    """remove() makes a campaign unknown; set_raw() serves any document instead."""
    sim, _ = demo_simulator()
    sim.remove("cmp_demo_progress")
    assert sim.current_record("cmp_demo_progress") is None
    sim.set_raw("cmp_x", [1, 2])
    assert sim.current_record("cmp_x") == [1, 2]


def test_paused_campaign_without_resume_stays_paused() -> None:
    """A campaign created paused never moves by itself."""
    campaign = SimCampaign("c", "n", 100, 5, status="paused", completed=10)
    campaign.advance(10_000.0)
    assert campaign.status == "paused"
    assert int(campaign.completed) == 10
