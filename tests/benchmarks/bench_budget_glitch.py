"""Benchmark: API requests over 45 s after one absurd rate-limit answer (issue 19, case 1).

Run from the repository root (about 50 seconds):

    .venv/bin/python -m tests.benchmarks.bench_budget_glitch

The simulator serves 20 campaigns on a loopback port; its first API answer says
``X-RateLimit-Limit: 1000``, ``X-RateLimit-Remaining: 0``, ``X-RateLimit-Reset: 315360000`` and
every later one ``1000`` / ``990`` / ``60``. The exporter (the real app, in this process, on the
system clock) polls them every 5 s with 2 workers. After ``--seconds`` (45 by default) it prints
how many requests the API saw and the budget figures of a scrape. Nothing is asserted here: the
same scenario on an injected clock is tests/test_budget.py's end-to-end test.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.clock import Clock
from exporter.config import Settings, load_settings
from exporter.demo.simulator import SimCampaign, Simulator
from exporter.web.server import create_app
from tests.helpers import wait_for

API_KEY = "bench-budget-key"
CAMPAIGNS = tuple(f"cmp_{n:02d}" for n in range(1, 21))
GLITCH = {
    "X-RateLimit-Limit": "1000",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "315360000",  # ten years, as seconds from now
}
NORMAL = {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "990", "X-RateLimit-Reset": "60"}
FIGURES = (
    "dialnexa_exporter_api_requests_remaining",
    "dialnexa_exporter_poll_stretch_factor",
    "dialnexa_exporter_api_budget_wait_seconds",
)


def glitching_simulator(
    hold_later_answers: Callable[[], bool] | None = None,
) -> tuple[Simulator, web.Application]:
    """The simulator with CAMPAIGNS, whose first API answer carries GLITCH and every later one
    NORMAL. ``hold_later_answers``: while it is false, later answers are held back (for at most
    10 s), so that a test can make the glitch the first answer the exporter reads."""
    sim = Simulator(
        [
            SimCampaign(cid, name=f"Campaign {cid}", total_leads=1000, max_concurrent_calls=5)
            for cid in CAMPAIGNS
        ],
        api_key=API_KEY,
        speed=0.0,
    )
    app = sim.app()
    answers = 0

    async def announce(request: web.Request, response: web.StreamResponse) -> None:
        nonlocal answers
        if not request.path.startswith("/v1/"):
            return
        answers += 1
        if answers == 1:
            response.headers.update(GLITCH)
            return
        if hold_later_answers is not None:
            await wait_for(hold_later_answers, what="the exporter to read the first answer")
        response.headers.update(NORMAL)

    app.on_response_prepare.append(announce)
    return sim, app


def glitch_settings(api_url: str) -> Settings:
    """The issue's exporter: 20 campaigns every 5 s, 2 workers."""
    return load_settings(
        {
            "api_url": api_url,
            "api_key": SecretStr(API_KEY),
            "campaign_ids": list(CAMPAIGNS),
            "poll_interval_seconds": 5,
            "max_concurrency": 2,
            "listen_address": "127.0.0.1:0",
        }
    )


async def measure(seconds: float, clock: Clock | None = None) -> tuple[int, dict[str, str]]:
    """Requests the API saw in ``seconds`` of polling, and the budget figures scraped then."""
    sim, sim_app = glitching_simulator()
    sim_server = TestServer(sim_app, host="127.0.0.1", port=0)
    await sim_server.start_server()
    app = create_app(glitch_settings(str(sim_server.make_url("/v1"))), clock=clock)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        await asyncio.sleep(seconds)  # the measured window, not a synchronisation
        requests = sim.stats.requests
        async with ClientSession() as session, session.get(server.make_url("/metrics")) as got:
            text = await got.text()
    finally:
        await server.close()
        await sim_server.close()
    figures = {
        line.split(" ")[0]: line.split(" ")[1]
        for line in text.splitlines()
        if line.split(" ")[0] in FIGURES
    }
    return requests, figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the window")
    args = parser.parse_args(argv)
    started = time.monotonic()
    requests, figures = asyncio.run(measure(args.seconds))
    print(f"| API requests in {args.seconds:g} s | {requests} |")
    for name in FIGURES:
        print(f"| {name} | {figures.get(name, 'absent')} |")
    print(f"(ran {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
