"""Benchmark: where the exporter's CPU per fetch goes, beside a bare aiohttp client's.

Run from the repository root (about two minutes at 10,000 campaigns on a 2-core machine):

    .venv/bin/python -m tests.benchmarks.bench_breakdown --campaigns 10000 --rounds 5

Against one simulator process (N load campaigns, speed 1), in this process and on one event
loop, it runs rounds of N fetches at the exporter's concurrency, in turn, of:

- floor: a plain aiohttp session, GET + read and nothing else (bench_exporter's floor);
- client: the exporter's API client (``fetch_changed``: deadline, request counters, budget
  headers, digest and record check of a changed body), its records dropped;
- poller: the poller on that client (worker pool, due queue, state, progress, staleness),
  publishing into a sink that does nothing;
- poller + publication: the same, publishing each round into the exposition cache (render and
  gzip of every campaign), as the exporter does once a round.

The poller runs on a FakeClock moved on by a poll interval between its rounds, so that each of
its rounds fetches every campaign once. The round of median CPU of each is shown; the steps
between the rows are what each layer adds per fetch. Nothing is asserted: docs/performance.md
keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from exporter import loops as event_loops
from exporter.api.budget import ApiBudget
from exporter.api.client import DialNexaClient, RequestStats, client_for
from exporter.config import Settings, load_settings
from exporter.exposition.cache import ExpositionCache
from exporter.polling.poller import Poller
from exporter.polling.state import Snapshot
from tests.benchmarks.bench_exporter import (
    API_KEY,
    CONCURRENCY,
    _fetch_all,
    campaign_ids,
    start_simulator,
)
from tests.helpers import FakeClock

POLL_SECONDS = 30.0


def settings_for(api_url: str) -> Settings:
    """The exporter's settings for the benchmark: the simulator, concurrency 20, 30 s intervals."""
    env = {
        "DIALNEXA_API_URL": api_url,
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_MAX_CONCURRENCY": str(CONCURRENCY),
        "DIALNEXA_POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
        "DIALNEXA_TERMINAL_POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
        "DIALNEXA_STALE_AFTER_SECONDS": "3600",
    }
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return load_settings({}, require_campaigns=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def new_client(settings: Settings, clock: FakeClock) -> DialNexaClient:
    """The API client as the exporter makes it (request counters, API budget)."""
    budget = ApiBudget(
        clock,
        planned_rate=lambda: 0.0,
        pacing=settings.api_budget_pacing,
        share=settings.api_budget_share,
        reserve=settings.api_budget_reserve,
    )
    return client_for(settings, clock, observer=RequestStats(), budget=budget)


async def measure(
    api_url: str, sim_pid: int, ids: list[str], rounds: int
) -> dict[str, list[float]]:
    """CPU seconds of each round of each variant, the variants taking turns."""
    settings = settings_for(api_url)
    clock = FakeClock()
    client = new_client(settings, clock)
    digests: dict[str, int] = {}

    async def client_round() -> None:
        queue = iter(ids)

        async def worker() -> None:
            for cid in queue:
                _, digests[cid] = await client.fetch_changed(cid, digests.get(cid))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def no_sink(_snapshot: Snapshot) -> None:
        pass

    cache = ExpositionCache()
    bare = Poller(settings, client, no_sink, campaign_ids=ids, clock=clock)
    publishing = Poller(settings, client, cache.update, campaign_ids=ids, clock=clock)

    def poller_round(poller: Poller) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            clock.advance(POLL_SECONDS)  # every campaign due again
            if not await poller.poll_once():
                raise RuntimeError("no campaign was due")

        return run

    async def floor_round() -> None:
        await _fetch_all(api_url, ids, lambda _c, _b: None, 1, sim_pid)

    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "floor (aiohttp GET + read)": floor_round,
        "client (fetch_changed)": client_round,
        "poller, no publication": poller_round(bare),
        "poller + publication": poller_round(publishing),
    }
    figures: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for run in variants.values():
            await run()  # warm up: connections, URLs, first records, the renderer's cache
        for _ in range(rounds):
            for name, run in variants.items():
                cpu0 = time.process_time()
                await run()
                figures[name].append(time.process_time() - cpu0)
    finally:
        await bare.stop_workers()
        await publishing.stop_workers()
        await client.close()
    return figures


def table(n: int, figures: dict[str, list[float]]) -> str:
    """One markdown table: CPU per round (median), per fetch, ratio to the floor, step."""
    lines = [
        f"N = {n:,}, rounds of {n:,} fetches, median of {len(next(iter(figures.values())))}",
        "",
        "| variant | CPU per round | per fetch | ratio to floor | step per fetch |",
        "|---|---|---|---|---|",
    ]
    floor = statistics.median(next(iter(figures.values())))
    previous: float | None = None
    for name, values in figures.items():
        cpu = statistics.median(values)
        step = "" if previous is None else f"{(cpu - previous) / n * 1e6:+.0f} µs"
        lines.append(
            f"| {name} | {cpu:.3f} s | {cpu / n * 1e6:.0f} µs | {cpu / floor:.2f} | {step} |"
        )
        previous = cpu
    return "\n".join(lines)


def main() -> None:
    """Print one table per N."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--campaigns", type=int, nargs="+", default=[10000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.campaigns:
            with contextlib.ExitStack() as stack:
                sim = start_simulator(stack, n, Path(tmp))
                figures = event_loops.run(
                    measure(sim.api_url, sim.child.pid, campaign_ids(n), args.rounds), args.loop
                )
            print(table(n, figures) + "\n", flush=True)


if __name__ == "__main__":
    main()
