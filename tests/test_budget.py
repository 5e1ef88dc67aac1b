"""The API budget: rate-limit headers in every dialect, pacing on an injected clock, and the
exporter keeping the budget alive against the simulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from exporter.api.budget import MAX_STRETCH, ApiBudget, RateLimit, parse_rate_limit
from exporter.demo.simulator import RateLimitPolicy
from exporter.web.server import BUDGET, POLLER, create_app
from tests.benchmarks.bench_budget_glitch import CAMPAIGNS, glitch_settings, glitching_simulator
from tests.helpers import (
    EPOCH,
    FakeClock,
    StartExporter,
    StartSim,
    campaign,
    exporter_settings,
    parse_samples,
    serve,
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


@pytest.mark.slow
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


async def test_one_absurd_answer_does_not_freeze_polling() -> None:
    """Issue 19's scenario on the exporter's injected clock: 20 campaigns every 5 s, 2 workers,
    one answer saying 0 of 1000 left until a reset ten years away, every later one 990 left
    until a reset in 60 s. The later answer releases the held request at once: every campaign
    is fetched in every interval of 45 s, and the budget figures say nothing is held."""
    clock = FakeClock()
    budget_seen: list[ApiBudget] = []
    sim, sim_app = glitching_simulator(lambda: budget_seen[0].limit is not None)
    sim_server = await serve(sim_app)
    app = create_app(glitch_settings(str(sim_server.make_url("/v1"))), clock=clock)
    budget_seen.append(app[BUDGET])
    server = await serve(app)
    poller = app[POLLER]

    def settled() -> bool:
        return all(poller.next_fetch_in(cid) > 0 for cid in poller.campaign_ids)

    try:
        await wait_for(settled, what="the first round despite the absurd answer")
        first_round = sim.stats.requests
        started = clock.now
        while clock.now < started + 45:
            clock.advance(0.5)
            await wait_for(settled, what=f"every due campaign fetched at {clock.now - started}s")
        over_45s = sim.stats.requests - first_round
        print(f"API requests in 45 s of the exporter's clock: {over_45s}")
        assert first_round == len(CAMPAIGNS)
        assert over_45s >= 9 * len(CAMPAIGNS)
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/metrics")) as response,
        ):
            samples = parse_samples(await response.text())
        assert value(samples, "dialnexa_exporter_api_requests_remaining") == 990
        assert value(samples, "dialnexa_exporter_poll_stretch_factor") == 1
        assert value(samples, "dialnexa_exporter_api_budget_wait_seconds") == 0
    finally:
        await server.close()
        await sim_server.close()


def x_headers(limit: str, remaining: str, reset: str) -> dict[str, str]:
    """One answer's X-RateLimit-* headers, as given."""
    return {
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": remaining,
        "X-RateLimit-Reset": reset,
    }


@pytest.mark.parametrize(("limit", "remaining"), [(1000, 101), (9, 1)])
async def test_no_request_waits_past_the_reset(limit: int, remaining: int) -> None:
    """With less than one request to spend before a reset a day away (1000/101 once waited two
    days, 9/1 twenty), requests wait exactly until the reset and no longer."""
    clock = FakeClock()
    budget = budget_on(clock, 4.0)
    announce(budget, limit, remaining, 86400)
    assert budget.wait_seconds == 86400
    assert budget.paused_until == clock.time() + 86400

    async def two_requests() -> None:
        await budget.acquire()
        await budget.acquire()

    requests = asyncio.create_task(two_requests())
    await wait_for(lambda: clock.waiting == 1, what="the first request held")
    clock.advance(86399.9)
    await asyncio.sleep(0)
    assert not requests.done()
    clock.advance(0.1)
    await asyncio.wait_for(requests, 2.0)
    assert budget.wait_seconds == 0


@pytest.mark.parametrize(
    ("reset", "seconds_ahead"),
    [
        ("30", 30),  # seconds from now
        (str(int(EPOCH + 1000 + 30)), 30),  # Unix time (the fake clock's wall time is EPOCH + 1000)
        (str(int((EPOCH + 1000 + 30) * 1000)), 30),  # Unix time in milliseconds
        (f"{EPOCH + 1000 + 30.25:.3f}", 30.25),  # Unix time with a fraction
        (str(int((EPOCH + 1000 + 30.5) * 1000)), 30.5),
        ("315360000", 86400),  # ten years from now: the cap
        (str(int((EPOCH + 1000 + 86400 * 400) * 1000)), 86400),  # milliseconds, 400 days on
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86400),
    ],
)
async def test_reset_dialects_and_the_cap(reset: str, seconds_ahead: float) -> None:
    """A reset is read as seconds from now, a Unix time in seconds or milliseconds (fractions
    too) or an HTTP date, and never taken as further ahead than a day; with nothing left the
    next request waits exactly that long."""
    clock = FakeClock()
    budget = budget_on(clock, 1.0)
    budget.observe(x_headers("1000", "0", reset))
    assert budget.reset_at == pytest.approx(clock.time() + seconds_ahead)
    assert budget.wait_seconds == pytest.approx(seconds_ahead)
    held = asyncio.create_task(budget.acquire())
    await wait_for(lambda: clock.waiting == 1, what="the request held")
    clock.advance(seconds_ahead - 0.01)
    await asyncio.sleep(0)
    assert not held.done()
    clock.advance(0.01)
    await asyncio.wait_for(held, 2.0)


@pytest.mark.parametrize(
    "reset",
    [
        "-5",
        "-0",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "1e300",
        "1e3",
        "0x10",
        "9" * 16,
        "9" * 400,
        "",
        "  ",
        "soon",
        "३०",
        "30s",
        "3 0",
        "1.2.3",
        "1.",
        ".5",
        "\x00",
        "30\r\nX-Evil: 1",
    ],
)
def test_an_unreadable_reset_keeps_the_one_before(reset: str) -> None:
    """Negative, NaN, infinite, exponent, hexadecimal, huge or garbage resets are ignored:
    the reset last announced stays, never an error."""
    clock = FakeClock()
    budget = budget_on(clock, 1.0)
    announce(budget, 1000, 0, 40)
    budget.observe(x_headers("1000", "0", reset))
    assert budget.reset_at == clock.time() + 40
    assert budget.wait_seconds == 40


async def test_an_answer_that_restores_the_budget_releases_held_requests_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19's sequence on one budget: 0 left until a reset ten years away holds the next
    request for the capped day; the next answer (990 left, reset in 60 s) releases it without
    the clock moving, and 'sufficient again' is logged only when nothing is held any more."""
    caplog.set_level(logging.INFO, logger="exporter.budget")
    clock = FakeClock()
    budget = budget_on(clock, 4.0)
    waits_when_logged: list[float] = []

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            waits_when_logged.append(budget.wait_seconds)

    witness = Witness()
    logging.getLogger("exporter.budget").addHandler(witness)
    try:
        budget.observe(x_headers("1000", "0", "315360000"))
        held = asyncio.create_task(budget.acquire())
        await wait_for(lambda: clock.waiting == 1, what="the request held")
        assert budget.paused_since == clock.time()
        assert (budget.stretch, budget.wait_seconds) == (MAX_STRETCH, 86400)
        clock.advance(5)
        assert budget.paused_since == clock.time() - 5
        budget.observe(x_headers("1000", "990", "60"))
        await asyncio.wait_for(held, 2.0)
    finally:
        logging.getLogger("exporter.budget").removeHandler(witness)
    assert (budget.remaining, budget.stretch, budget.wait_seconds) == (990, 1.0, 0.0)
    assert (budget.paused_until, budget.paused_since) == (None, None)
    messages = [record.getMessage() for record in caplog.records]
    assert "no request until the reset in 86400s" in messages[0]
    assert messages[1] == "API budget sufficient again: polling on its schedule"
    assert waits_when_logged == [86400, 0.0]


async def test_a_shorter_reset_shortens_a_held_wait() -> None:
    """A held request judges its wait again when an answer brings the reset closer."""
    clock = FakeClock()
    budget = budget_on(clock, 1.0)
    announce(budget, 1000, 0, 3600)
    held = asyncio.create_task(budget.acquire())
    await wait_for(lambda: clock.waiting == 1, what="the request held")
    announce(budget, 1000, 0, 60)
    await wait_for(lambda: clock.waiting == 1 and budget.wait_seconds == 60, what="re-judged")
    clock.advance(60)
    await asyncio.wait_for(held, 2.0)


async def test_waiting_requests_hold_no_lock() -> None:
    """Two requests held for the same reset both start when it comes; a third announced
    after a better budget never queues behind them."""
    clock = FakeClock()
    budget = budget_on(clock, 0.5)
    announce(budget, 1000, 0, 600)
    first = asyncio.create_task(budget.acquire())
    second = asyncio.create_task(budget.acquire())
    await wait_for(lambda: clock.waiting == 2, what="two requests held")
    announce(budget, 1000, 1000, 600)  # 0.5 x 900 / 600 = 0.75/s allowed, 0.5 planned
    await asyncio.wait_for(asyncio.gather(first, second), 2.0)
    await asyncio.wait_for(budget.acquire(), 2.0)


def test_an_api_flipping_its_budget_does_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Answers flipping between spent, low and plenty 600 times in a minute log one line of
    each kind; the next minute's first change is logged again."""
    caplog.set_level(logging.DEBUG, logger="exporter.budget")
    clock = FakeClock()
    budget = budget_on(clock, 4.0)
    flips = [("1000", "0", "315360000"), ("1000", "990", "60"), ("1000", "300", "60")]
    for step in range(600):
        budget.observe(x_headers(*flips[step % 3]))
        clock.advance(0.09)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(loud) == 3, loud
    assert [m.split(" (")[0].split(":")[0] for m in loud] == [
        "API budget spent",
        "API budget sufficient again",
        "API budget low",
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 597
    clock.advance(60)
    budget.observe(x_headers(*flips[0]))
    assert caplog.records[-1].levelno == logging.WARNING
