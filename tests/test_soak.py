"""Soak: 1,000 campaigns, fast polling, faults switched on and off at random, scraped non-stop.

CI runs the short version (20 s). The few-minutes version:

    DIALNEXA_SOAK_SECONDS=300 .venv/bin/python -m pytest -m soak tests/test_soak.py
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import socket
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from exporter.demo.simulator import Fault, FaultKind, SimCampaign, load_campaigns
from tests.helpers import (
    RunningExporter,
    RunningSimulator,
    StartExporter,
    StartSim,
    exporter_settings,
    parse_samples,
    value,
    wait_for,
)

CAMPAIGN_COUNT = 1000
DURATION = float(os.environ.get("DIALNEXA_SOAK_SECONDS", "20"))
WARM_UP = max(5.0, DURATION / 4)  # rounds, caches and connection pools fill up first
WINDOW = 2.0  # seconds of samples taken right after warm-up and at the very end
SAMPLE_EVERY = 0.25
SEED = 20261128

# Allowed growth from the window after warm-up to the window at the end.
MAX_TASK_GROWTH = 20
MAX_FD_GROWTH = 50
MAX_RSS_GROWTH = 50 * 1024 * 1024
# Never exceeded at any moment: everything stays bounded, not just flat.
MAX_TASKS = 250
MAX_FDS = 500


def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fault_menu() -> list[Fault]:
    """Faults from the matrix, sized for a thousand campaigns on one machine."""
    elsewhere = f"http://127.0.0.1:{closed_port()}/v1/campaigns/x"
    return [
        Fault(FaultKind.STATUS, status=500),
        Fault(FaultKind.STATUS, status=503),
        Fault(FaultKind.STATUS, status=401),
        Fault(FaultKind.STATUS, status=403),
        Fault(FaultKind.STATUS, status=404),
        Fault(FaultKind.STATUS, status=400),
        Fault(FaultKind.RATE_LIMIT, retry_after="1"),
        Fault(FaultKind.RATE_LIMIT),
        Fault(FaultKind.SLOW, delay=2.0),
        Fault(FaultKind.DRIP, delay=0.05),
        Fault(FaultKind.BAD_JSON),
        Fault(FaultKind.EMPTY),
        Fault(FaultKind.HTML),
        Fault(FaultKind.ARRAY),
        Fault(FaultKind.WRONG_ID),
        Fault(FaultKind.REDIRECT, status=307, location=elsewhere),
        Fault(FaultKind.REDIRECT, status=302, location="/v1/campaigns/loop"),
        Fault(FaultKind.HUGE, size=2 * 1024 * 1024),
        Fault(FaultKind.HUGE, size=2 * 1024 * 1024, chunked=True),
        Fault(FaultKind.DISCONNECT),
        Fault(FaultKind.BODY, body=b'{"id": "x", "total_leads": "lots"}'),
    ]


# Tasks that come and go with the work in flight: the workers of a poll round (at most
# max_concurrency), a request being handled, and one per open server connection (bounded by the
# client's pool of max_concurrency plus the scraper's; a connection leak shows in the fds).
# Left out of the growth measure so that a round or a pool refill spanning the end window does
# not read as a leak; they still count towards MAX_TASKS.
TRANSIENT_TASKS = frozenset(
    {"RoundRunner._worker", "RequestHandler._handle_request", "RequestHandler.start"}
)


def task_name(task: asyncio.Task[object]) -> str:
    """The qualified name of the coroutine a task runs."""
    coroutine = task.get_coro()
    return str(getattr(coroutine, "__qualname__", type(coroutine).__name__))


@dataclass(frozen=True)
class Usage:
    """Resource usage of this process (simulator and exporter both live in it)."""

    tasks: int  # every task
    lasting_tasks: int  # tasks but the TRANSIENT_TASKS
    fds: int
    rss: int  # bytes

    @classmethod
    def now(cls) -> Usage:
        """Measure right now."""
        rss = 0
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        tasks = asyncio.all_tasks()
        lasting = sum(task_name(task) not in TRANSIENT_TASKS for task in tasks)
        return cls(len(tasks), lasting, len(os.listdir("/proc/self/fd")), rss)


@dataclass
class Soak:
    """What the soak saw."""

    samples: list[tuple[float, Usage]] = field(default_factory=list)
    scrapes: int = 0
    gzipped_scrapes: int = 0
    fault_switches: int = 0
    slowest_scrape: float = 0.0

    def window(self, start: float, end: float) -> list[Usage]:
        """Samples taken between ``start`` and ``end`` (monotonic)."""
        return [usage for moment, usage in self.samples if start <= moment <= end]


async def churn_faults(sim: RunningSimulator, ids: list[str], until: float, soak: Soak) -> None:
    """Switch faults on and off at random (seeded): per campaign, whole API, deletions."""
    rng = random.Random(SEED)
    menu = fault_menu()
    removed: dict[str, SimCampaign] = {}
    for _ in range(int(DURATION / 0.1) + 1):  # bounded in count as well as in time
        if time.monotonic() >= until:
            break
        for cid in rng.sample(ids, 20):
            roll = rng.random()
            if roll < 0.45:
                sim.sim.set_fault(rng.choice(menu), cid)
            elif roll < 0.9:
                sim.sim.set_fault(None, cid)
            elif cid in removed:
                sim.sim.campaigns[cid] = removed.pop(cid)  # back from the dead
            else:
                removed[cid] = sim.sim.campaigns.pop(cid)  # deleted: 404 from now on
            soak.fault_switches += 1
        if rng.random() < 0.05:
            sim.sim.set_fault(rng.choice(menu))  # the whole API misbehaves for a moment
        elif rng.random() < 0.3:
            sim.sim.set_fault(None)
        await asyncio.sleep(0.1)
    sim.sim.set_fault(None)


async def scrape_continuously(exporter: RunningExporter, until: float, soak: Soak) -> None:
    """Scrape /metrics back to back (plain and gzip by turns); every answer must parse."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for number in range(100_000):  # bounded in count as well as in time
            if time.monotonic() >= until:
                break
            packed = number % 2 == 1
            headers = {"Accept-Encoding": "gzip" if packed else "identity"}
            started = time.monotonic()
            async with session.get(exporter.server.make_url("/metrics"), headers=headers) as r:
                assert r.status == 200
                body = await r.read()
            soak.slowest_scrape = max(soak.slowest_scrape, time.monotonic() - started)
            if packed:
                assert r.headers["Content-Encoding"] == "gzip"
                body = gzip.decompress(body)
                soak.gzipped_scrapes += 1
            samples = parse_samples(body.decode("utf-8"))  # raises on anything unparseable
            assert value(samples, "dialnexa_exporter_campaigns_configured") == CAMPAIGN_COUNT
            soak.scrapes += 1


async def sample_usage(until: float, soak: Soak) -> None:
    """Record task count, open fds and RSS every SAMPLE_EVERY seconds."""
    for _ in range(int(DURATION / SAMPLE_EVERY) + 10):
        moment = time.monotonic()
        if moment >= until:
            break
        soak.samples.append((moment, Usage.now()))
        await asyncio.sleep(SAMPLE_EVERY)


@pytest.mark.soak
@pytest.mark.timeout(DURATION + 180)  # the suite-wide 300 s would cut the long version short
async def test_soak_keeps_tasks_fds_and_memory_flat(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """1,000 campaigns, 0.2 s polls, random faults: tasks +20, fds +50, RSS +50 MB at most.

    Growth is measured from the WINDOW after warm-up to the WINDOW at the end: tasks (but the
    per-round workers and in-flight request handlers) and fds by the window's minimum (a leak
    lifts the floor; work in flight only adds spikes), RSS by its maximum. At no sample may
    there be more than MAX_TASKS tasks or MAX_FDS open fds, and every one of the continuous
    /metrics answers must parse.
    """
    campaigns = load_campaigns(CAMPAIGN_COUNT, seed=SEED)
    ids = [c.id for c in campaigns]
    sim = await start_simulator(campaigns, speed=60.0)
    settings = exporter_settings(
        sim,
        ids,
        poll_interval_seconds=0.2,
        max_concurrency=20,
        request_timeout_seconds=1.0,
        stale_after_seconds=5.0,
        terminal_poll_interval_seconds=1.0,
    )
    exporter = await start_exporter(settings)
    await exporter.wait_ready()
    soak = Soak()
    started = time.monotonic()
    until = started + DURATION
    async with asyncio.timeout(DURATION + 60):
        await asyncio.gather(
            churn_faults(sim, ids, until, soak),
            scrape_continuously(exporter, until, soak),
            sample_usage(until, soak),
        )
    after_warm_up = soak.window(started + WARM_UP, started + WARM_UP + WINDOW)
    at_end = soak.window(until - WINDOW, until)
    assert after_warm_up, "no sample after warm-up"
    assert at_end, "no sample at the end"

    task_growth = min(u.lasting_tasks for u in at_end) - min(u.lasting_tasks for u in after_warm_up)
    fd_growth = min(u.fds for u in at_end) - min(u.fds for u in after_warm_up)
    rss_growth = max(u.rss for u in at_end) - max(u.rss for u in after_warm_up)
    report = (
        f"{DURATION:g}s: {soak.scrapes} scrapes ({soak.gzipped_scrapes} gzip, slowest "
        f"{soak.slowest_scrape:.2f}s), {soak.fault_switches} fault switches, "
        f"{sim.sim.stats.requests} API requests; growth: tasks {task_growth:+d}, "
        f"fds {fd_growth:+d}, RSS {rss_growth / 2**20:+.1f} MiB; peaks: "
        f"tasks {max(u.tasks for _, u in soak.samples)}, fds {max(u.fds for _, u in soak.samples)}"
    )
    print(report)
    assert task_growth <= MAX_TASK_GROWTH, report
    assert fd_growth <= MAX_FD_GROWTH, report
    assert rss_growth <= MAX_RSS_GROWTH, report
    assert max(u.tasks for _, u in soak.samples) <= MAX_TASKS, report
    assert max(u.fds for _, u in soak.samples) <= MAX_FDS, report
    # It really was under load the whole time, and kept going.
    assert soak.scrapes >= DURATION / 2, report
    assert soak.gzipped_scrapes >= 1, report
    assert soak.fault_switches >= 100, report
    assert statistics.mean(u.tasks - u.lasting_tasks for _, u in soak.samples) > 1, report
    requests = sim.sim.stats.requests
    samples = await exporter.wait_published(
        lambda s: value(s, "dialnexa_exporter_last_poll_timestamp_seconds") is not None,
        "a poll round after the soak",
    )
    assert value(samples, "dialnexa_exporter_campaigns_configured") == CAMPAIGN_COUNT
    # The simulator's own count: scraping the 1,000 campaigns every 10 ms to wait on it would
    # take the event loop from the very polling awaited (it did, on a loaded machine).
    await wait_for(
        lambda: sim.sim.stats.requests >= requests + CAMPAIGN_COUNT // 10,
        what="polling to go on after the soak",
    )
    status, _, _ = await exporter.get("/healthz")
    assert status == 200
