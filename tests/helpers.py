"""Shared test helpers: clocks, loopback servers, exposition parsing, promtool, API examples.

Fixtures live in conftest.py; everything a test module imports lives here, so that no test
module imports another.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter.config import Settings, load_settings
from exporter.poller import Poller
from exporter.server import EXPOSITION, POLLER
from exporter.simulator import SimCampaign, Simulator

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk_test_5f1e2d3c4b5a69788796a5b4c3d2e1f0"
EPOCH = 1_700_000_000.0  # the fake clock's wall time at monotonic 0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# The two examples of the API page (shared/api/get-campaign.txt), as JSON documents.
FIRST_EXAMPLE: dict[str, Any] = {
    "id": "cmp_xyz789",
    "organization_id": "org_xyz",
    "name": "Q2 Lead Re-engagement",
    "agent_id": "agt_abc123",
    "from_phone_number": "+912234567890",
    "status": "running",
    "max_concurrent_calls": 5,
    "scheduled_at": None,
    "retry_config": {"max_retries": 3, "retry_interval_minutes": 120},
    "created_at": "2024-03-01T09:00:00.000Z",
}
SECOND_EXAMPLE: dict[str, Any] = {
    "id": "cmp_5tw8vz2rnx1q",
    "name": "Q2 Lead Re-engagement",
    "status": "active",
    "agent_id": "agt_k7m2nq9xw4p8",
    "from_phone_number": "+912234567890",
    "max_concurrent_calls": 5,
    "total_leads": 1200,
    "completed_calls": 438,
    "pending_calls": 762,
    "created_at": "2024-05-01T09:00:00.000Z",
}


class FakeClock:
    """A clock that moves only when told: ``advance()`` (or setting ``now``) also wakes every
    ``wait`` whose time has come, so a poller or publisher on this clock runs without sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self._now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    @property
    def now(self) -> float:
        """Monotonic time."""
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        self._now = value
        due = [(when, fut) for when, fut in self._sleepers if when <= value]
        self._sleepers = [(when, fut) for when, fut in self._sleepers if when > value]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move time forward, waking every wait that falls due."""
        self.now = self._now + seconds

    def time(self) -> float:
        """Wall time: a fixed epoch plus the monotonic reading."""
        return EPOCH + self._now

    def monotonic(self) -> float:
        """Monotonic time."""
        return self._now

    @property
    def waiting(self) -> int:
        """Waits not yet woken."""
        return sum(1 for _, fut in self._sleepers if not fut.done())

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or this clock has moved ``seconds`` on."""
        if event.is_set():
            return True
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            timer.set_result(None)
        else:
            self._sleepers.append((self._now + seconds, timer))
        setter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({timer, setter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            setter.cancel()
            timer.cancel()
        return event.is_set()


class OffsetClock:
    """Real time plus an offset a test moves forward, e.g. past STALE_AFTER, without sleeping;
    waits take real time (the offset only adds)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        """Jump forward."""
        self.offset += seconds

    def time(self) -> float:
        """Wall time, jumped."""
        return time.time() + self.offset

    def monotonic(self) -> float:
        """Monotonic time, jumped."""
        return time.monotonic() + self.offset

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait (in real time) until ``event`` is set or ``seconds`` pass."""
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        except TimeoutError:
            pass
        return event.is_set()


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


async def serve(app: web.Application, **kwargs: Any) -> TestServer:
    """``app`` served on a free port of 127.0.0.1 (close it with ``await server.close()``)."""
    server = TestServer(app, host="127.0.0.1", port=0, **kwargs)
    await server.start_server()
    return server


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


def promtool_binary() -> str:
    """Path of promtool; skips the test when it is not installed (tests/run.sh installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (tests/run.sh installs the prometheus package)")
    return binary


def run_promtool(*args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; text output, never raises on a non-zero status."""
    data = stdin.decode("utf-8") if isinstance(stdin, bytes) else stdin
    return subprocess.run(
        [promtool_binary(), *args],
        input=data,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def promtool_check(text: bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition."""
    return run_promtool("check", "metrics", stdin=text)


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


@dataclass
class PageRow:
    """One campaign row of the status page: its class and the text of each cell."""

    css: str
    cells: list[str] = field(default_factory=list)


class StatusPageParser(HTMLParser):
    """What a test reads of a status page, served or dumped by a browser: the campaign rows,
    every element by tag, the visible text, the title, the stylesheet, the refresh and links."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.rows: list[PageRow] = []
        self.links: list[str] = []
        self.title = ""
        self.style = ""
        self.refresh: str | None = None
        self._texts: list[str] = []
        self._raw: str | None = None  # inside <title> or <style>
        self._in_tbody = False
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    @property
    def text(self) -> str:
        """The page's text (without the title and the stylesheet)."""
        return "".join(self._texts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Count the element and note what the tests read of it."""
        self.tags[tag] = self.tags.get(tag, 0) + 1
        attributes = dict(attrs)
        if tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.rows.append(PageRow(attributes.get("class") or ""))
        elif tag == "td" and self._in_tbody and self.rows:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "a":
            self.links.append(attributes.get("href") or "")
        elif tag == "meta" and attributes.get("http-equiv") == "refresh":
            self.refresh = attributes.get("content")
        elif tag in ("title", "style"):
            self._raw = tag

    def handle_endtag(self, tag: str) -> None:
        """Close a cell, the table body or a raw text element."""
        if tag == "td" and self._cell is not None:
            self.rows[-1].cells.append("".join(self._cell))
            self._cell = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == self._raw:
            self._raw = None

    def handle_data(self, data: str) -> None:
        """Text: to the title, the stylesheet, or the page's text and the current cell."""
        if self._raw == "title":
            self.title += data
        elif self._raw == "style":
            self.style += data
        else:
            self._texts.append(data)
            if self._cell is not None:
                self._cell.append(data)
