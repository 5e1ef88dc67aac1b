"""Shared fixtures: the simulator and the exporter on real loopback ports, and metric helpers."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter.config import Settings, load_settings
from exporter.poller import Poller
from exporter.server import EXPOSITION, POLLER, create_app
from exporter.simulator import SimCampaign, Simulator

API_KEY = "sk_test_5f1e2d3c4b5a69788796a5b4c3d2e1f0"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    within: float = 10.0,
    what: str = "condition",
) -> None:
    """Wait until ``condition`` holds, checking often; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the series is absent."""
    return samples.get((name, frozenset(labels.items())))


def series_for(samples: Samples, campaign_id: str, prefix: str = "dialnexa_campaign_") -> set[str]:
    """Names of the data series present for one campaign."""
    return {
        name
        for (name, labels) in samples
        if name.startswith(prefix) and ("campaign_id", campaign_id) in labels
    }


def campaign(campaign_id: str, **overrides: Any) -> SimCampaign:
    """A progressing simulator campaign with sensible defaults."""
    values: dict[str, Any] = {
        "name": f"Campaign {campaign_id}",
        "total_leads": 1000,
        "max_concurrent_calls": 5,
    }
    values.update(overrides)
    return SimCampaign(campaign_id, **values)


@dataclass
class RunningSimulator:
    """A simulator served on a loopback port."""

    sim: Simulator
    server: TestServer

    @property
    def api_url(self) -> str:
        """Base URL to configure the exporter with."""
        return str(self.server.make_url("/v1"))


@pytest.fixture
async def start_simulator() -> AsyncIterator[Callable[..., Awaitable[RunningSimulator]]]:
    """Factory: start a simulator with the given campaigns on 127.0.0.1, stopped after the test."""
    servers: list[TestServer] = []

    async def start(
        campaigns: Iterable[SimCampaign] = (), *, api_key: str = API_KEY, speed: float = 1.0
    ) -> RunningSimulator:
        sim = Simulator(campaigns, api_key=api_key, speed=speed)
        server = TestServer(sim.app(), host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return RunningSimulator(sim, server)

    yield start
    for server in servers:
        await server.close()


@dataclass
class RunningExporter:
    """An exporter app served on a loopback port, with an HTTP client for it."""

    app: web.Application
    server: TestServer
    session: aiohttp.ClientSession

    @property
    def poller(self) -> Poller:
        """The app's poller."""
        return self.app[POLLER]

    @property
    def url(self) -> str:
        """Base URL of the exporter."""
        return str(self.server.make_url("/"))

    async def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        """GET ``path``; returns (status, headers, body)."""
        async with self.session.get(self.server.make_url(path), **kwargs) as response:
            return response.status, dict(response.headers), await response.read()

    async def metrics_text(self) -> str:
        """The current /metrics text (asked for without compression)."""
        status, _, body = await self.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert status == 200
        return body.decode("utf-8")

    async def samples(self) -> Samples:
        """The current /metrics, parsed."""
        return parse_samples(await self.metrics_text())

    async def wait_published(self, predicate: Callable[[Samples], bool], what: str) -> Samples:
        """Wait until a scrape satisfies ``predicate``; returns that scrape."""
        latest: Samples = {}

        async def check() -> bool:
            nonlocal latest
            latest = await self.samples()
            return predicate(latest)

        await wait_for(check, what=what)
        return latest

    async def wait_ready(self) -> None:
        """Wait for the first poll round to be published."""
        await wait_for(lambda: self.app[EXPOSITION].current.ready, what="first poll round")


def exporter_settings(
    sim: RunningSimulator, campaign_ids: Iterable[str], **overrides: Any
) -> Settings:
    """Settings pointing at ``sim`` with fast intervals, plus ``overrides``."""
    flags: dict[str, Any] = {
        "api_url": sim.api_url,
        "api_key": SecretStr(API_KEY),
        "campaign_ids": list(campaign_ids),
        "poll_interval_seconds": 0.05,
        "request_timeout_seconds": 2,
        "stale_after_seconds": 60,
        "listen_address": "127.0.0.1:0",
    }
    flags.update(overrides)
    return load_settings(flags)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DIALNEXA_* variable of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("DIALNEXA_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def start_exporter() -> AsyncIterator[Callable[..., Awaitable[RunningExporter]]]:
    """Factory: start an exporter for given settings on 127.0.0.1, stopped after the test."""
    started: list[RunningExporter] = []

    async def start(settings: Settings, flags: dict[str, Any] | None = None) -> RunningExporter:
        app = create_app(settings, flags=flags)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        session = aiohttp.ClientSession(auto_decompress=False)
        running = RunningExporter(app, server, session)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.session.close()
        await running.server.close()


StartSim = Callable[..., Awaitable[RunningSimulator]]
StartExporter = Callable[..., Awaitable[RunningExporter]]


async def spawn_exporter(
    env: dict[str, str], *args: str, stdout: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`python -m exporter *args` with exactly ``env``; stderr (and by default stdout) piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        env=env,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )
