"""The API budget: rate-limit headers in every dialect, pacing on an injected clock, and the
exporter keeping the budget alive against the simulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from exporter.api.budget import MAX_STRETCH, ApiBudget, RateLimit, parse_rate_limit
from exporter.demo.simulator import RateLimitPolicy
from tests.helpers import (
    EPOCH,
    FakeClock,
    StartExporter,
    StartSim,
    campaign,
    exporter_settings,
    value,
    wait_for,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Content-Type": "application/json"}, None),
        (
            {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "42", "X-RateLimit-Reset": "30"},
            RateLimit(600, 42, NOW + 30),
        ),
        (  # lower case, as HTTP/2 and many proxies send them
            {"x-ratelimit-limit": "600", "x-ratelimit-remaining": "0"},
            RateLimit(600, 0, None),
        ),
        (  # reset as a Unix time
            {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW) + 90)},
            RateLimit(None, 5, NOW + 90),
        ),
        (
            {"RateLimit-Limit": "100", "RateLimit-Remaining": "7", "RateLimit-Reset": "12"},
            RateLimit(100, 7, NOW + 12),
        ),
        (  # the structured field of the current draft, with its policy
            {"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'},
            RateLimit(100, 50, NOW + 30),
        ),
        (  # the older drafts' structured field
            {"RateLimit": "limit=100, remaining=5, reset=20"},
            RateLimit(100, 5, NOW + 20),
        ),
        (  # reset as an HTTP date
            {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "Tue, 14 Nov 2023 22:14:20 GMT"},
            RateLimit(None, 1, 1_700_000_060.0),
        ),
        ({"X-RateLimit-Limit": "-5", "X-RateLimit-Remaining": "1e3"}, None),
        ({"X-RateLimit-Remaining": "9" * 400}, None),
        ({"X-RateLimit-Remaining": "²"}, None),
        ({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "soon"}, RateLimit(None, 3, None)),
        ({"RateLimit": "x" * 100_000}, None),
        ({"RateLimit": '"default";r=;t=30'}, None),
    ],
)
def test_rate_limit_headers_in_every_dialect(
    headers: dict[str, Any], expected: RateLimit | None
) -> None:
    """X-RateLimit-*, RateLimit-* and the structured RateLimit field are read; a reset is a
    delay or a Unix time; anything but a plain non-negative integer is ignored."""
    from multidict import CIMultiDict

    assert parse_rate_limit(CIMultiDict(headers), NOW) == expected


def budget_on(clock: FakeClock, planned: float, **options: Any) -> ApiBudget:
    """A budget on ``clock`` whose schedule plans ``planned`` requests per second."""
    return ApiBudget(clock, planned_rate=lambda: planned, **options)


def announce(budget: ApiBudget, limit: int, remaining: int, reset_in: float) -> None:
    """Feed the budget the headers of one answer."""
    budget.observe(
        {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset_in)),
        }
    )


@pytest.mark.parametrize(
    ("remaining", "reset_in", "planned", "stretch"),
    [
        (1000, 60, 1.0, 1.0),  # 0.5 x (1000 - 100) / 60 = 7.5/s allowed >= 1/s planned
        (220, 60, 1.0, 1.0),  # (220 - 100) / 2 / 60 = 1/s: exactly enough
        (160, 60, 1.0, 2.0),  # 0.5/s allowed: twice slower
        (100, 60, 1.0, MAX_STRETCH),  # only the reserve left: nothing to spend
        (0, 60, 1.0, MAX_STRETCH),
        (160, 60, 0.0, 1.0),  # nothing planned: nothing to stretch
    ],
)
def test_stretch_leaves_the_reserve_and_half_the_rest(
    remaining: int, reset_in: float, planned: float, stretch: float
) -> None:
    """Polling may spend half of what is left above a 10% reserve of the limit before the
    reset; the stretch factor is how much slower than planned that makes it."""
    budget = budget_on(FakeClock(), planned)
    announce(budget, 1000, remaining, reset_in)
    assert budget.stretch == pytest.approx(stretch)


def test_no_pacing_without_a_budget_after_the_reset_or_when_switched_off() -> None:
    """Stretch 1 before any header, once the announced reset has passed, and with pacing off."""
    clock = FakeClock()
    budget = budget_on(clock, 10.0)
    assert (budget.limit, budget.remaining, budget.reset_at, budget.stretch) == (
        None,
        None,
        None,
        1.0,
    )
    announce(budget, 1000, 0, 30)
    assert budget.stretch == MAX_STRETCH
    clock.advance(30)
    assert budget.stretch == 1.0
    off = budget_on(clock, 10.0, pacing=False)
    announce(off, 1000, 0, 30)
    assert off.stretch == 1.0
    assert off.remaining == 0  # still reported


async def test_paced_requests_are_spaced_at_the_allowed_rate() -> None:
    """With the budget short, each request waits 1/allowed seconds after the previous one."""
    clock = FakeClock()
    budget = budget_on(clock, 10.0)
    announce(budget, 1000, 340, 60)  # 0.5 x 240 / 60 = 2 requests/s allowed, 10 planned
    await budget.acquire()
    second = asyncio.create_task(budget.acquire())
    await wait_for(lambda: clock.waiting == 1, what="the second request waiting")
    clock.advance(0.49)
    await asyncio.sleep(0)
    assert not second.done()
    clock.advance(0.01)
    await asyncio.wait_for(second, 2.0)


async def test_with_nothing_to_spend_requests_wait_for_the_reset() -> None:
    """Only the reserve left: the next request waits until the window resets, then goes."""
    clock = FakeClock()
    budget = budget_on(clock, 1.0)
    announce(budget, 1000, 50, 40)
    waiting = asyncio.create_task(budget.acquire())
    await wait_for(lambda: clock.waiting == 1, what="the request waiting")
    clock.advance(39)
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(1)
    await asyncio.wait_for(waiting, 2.0)


def test_an_absurd_reset_is_read_as_a_day(caplog: pytest.LogCaptureFixture) -> None:
    """A reset announced centuries away is taken as a day away: polling resumes after it."""
    clock = FakeClock()
    budget = budget_on(clock, 1.0)
    budget.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "99999999999999"})
    assert budget.reset_at == pytest.approx(EPOCH + clock.now + 86400)


def test_stretching_is_logged_when_it_starts_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    """One warning when pacing starts, one info line when the budget suffices again."""
    caplog.set_level(logging.INFO, logger="exporter.budget")
    clock = FakeClock()
    budget = budget_on(clock, 1.0)
    announce(budget, 1000, 160, 60)
    announce(budget, 1000, 150, 59)
    announce(budget, 1000, 1000, 60)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "polling 2.0x slower" in messages[0]
    assert "sufficient again" in messages[1]


@pytest.mark.parametrize(
    ("style", "reset"), [("x", "delta"), ("ietf", "epoch"), ("structured", "delta")]
)
async def test_the_exporter_exports_the_budget_the_api_announces(
    start_simulator: StartSim, start_exporter: StartExporter, style: str, reset: str
) -> None:
    """Limit, remaining and reset timestamp appear as the API announces them, whatever the
    dialect; before any announcement they are absent."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"], poll_interval_seconds=3600))
    await exporter.wait_ready()
    samples = await exporter.samples()
    assert value(samples, "dialnexa_exporter_api_requests_limit") is None
    assert value(samples, "dialnexa_exporter_api_requests_remaining") is None
    assert value(samples, "dialnexa_exporter_poll_stretch_factor") == 1
    sim.sim.set_rate_limit(RateLimitPolicy(limit=500, window=600, style=style, reset=reset))
    sim.sim.spend(100)  # another client of the key
    exporter.poller.set_campaigns(["cmp_a", "cmp_b"])  # a new campaign: fetched at once
    samples = await exporter.wait_published(
        lambda s: value(s, "dialnexa_exporter_api_requests_remaining") is not None,
        "the budget to show",
    )
    assert value(samples, "dialnexa_exporter_api_requests_limit") == 500
    assert value(samples, "dialnexa_exporter_api_requests_remaining") == 399
    reset_at = value(samples, "dialnexa_exporter_api_rate_limit_reset_timestamp_seconds")
    assert reset_at is not None
    assert 590 <= reset_at - sim.sim._wall_time() <= 601


async def test_pacing_keeps_the_budget_for_the_other_clients(
    start_simulator: StartSim, start_exporter: StartExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """With a budget far too small for the schedule, the exporter stretches its polling and
    never spends the reserve kept for the key's other clients: over several windows the API
    never has to answer 429, and at least the reserve is always left."""
    caplog.set_level(logging.INFO, logger="exporter.budget")
    ids = [f"cmp_{n}" for n in range(20)]
    sim = await start_simulator([campaign(cid) for cid in ids])
    sim.sim.set_rate_limit(RateLimitPolicy(limit=60, window=2))
    exporter = await start_exporter(
        exporter_settings(sim, ids, poll_interval_seconds=0.2, max_concurrency=2)
    )
    samples = await exporter.wait_published(
        lambda s: (value(s, "dialnexa_exporter_poll_stretch_factor") or 0) > 1.5,
        "polling to stretch",
    )
    assert value(samples, "dialnexa_exporter_api_requests_limit") == 60
    samples = await exporter.wait_published(
        lambda s: (value(s, "dialnexa_exporter_api_requests_total", code="200") or 0) >= 80,
        "more than one window's budget spent over time",
    )
    assert value(samples, "dialnexa_exporter_api_requests_total", code="429") is None
    policy = sim.sim.rate_limit
    assert policy is not None
    assert policy.lowest_remaining is not None
    reserve = 6  # 10% of the limit
    assert policy.lowest_remaining >= reserve - 2  # two requests in flight on an old reading
    assert any("API budget low" in r.getMessage() for r in caplog.records)
