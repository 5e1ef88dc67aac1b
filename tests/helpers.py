"""Shared test helpers: clocks, loopback servers, exposition parsing, promtool, API examples,
the rule file, the Alertmanager configuration, the dashboard and the end-to-end runs' setup.

Fixtures live in conftest.py; everything a test module imports lives here (the long fault tables
in fault_tables.py), so that no test module imports another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter.config import Settings, load_settings
from exporter.demo.alertmanager import ALERTMANAGER_FILE_NAME
from exporter.demo.prometheus import scale_rule_durations
from exporter.demo.simulator import SimCampaign, Simulator, demo_campaigns
from exporter.polling.poller import Poller
from exporter.web.connections import start_guarded_sites
from exporter.web.server import EXPOSITION, POLLER

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

    @property
    def deadlines(self) -> list[float]:
        """When each wait not yet woken ends (monotonic), earliest first."""
        return sorted(when for when, fut in self._sleepers if not fut.done())

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


T = TypeVar("T")


class _Deadline:
    """The one deadline behind wait_for and wait_for_blocking: when to give up, and the message."""

    def __init__(self, within: float, what: str) -> None:
        self.within, self.what = within, what
        self.at = time.monotonic() + within

    def check(self, last: object) -> None:
        """Fail, naming what was awaited (and the last result unless a plain bool), when due."""
        if time.monotonic() > self.at:
            seen = "" if isinstance(last, bool) or last is None else f"; last: {last!r:.300}"
            raise AssertionError(f"timed out after {self.within}s waiting for {self.what}{seen}")


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    within: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.01,
    in_thread: bool = False,
) -> T:
    """Wait until ``condition()`` returns something truthy and return it; check every
    ``interval`` seconds and fail after ``within`` seconds, naming ``what`` was awaited.

    ``condition`` may be a coroutine function; a blocking one (a Prometheus query, a subprocess)
    runs in a thread with ``in_thread=True`` so that the loop keeps serving meanwhile.
    """
    deadline = _Deadline(within, what)
    while True:
        if in_thread:
            result = await asyncio.to_thread(condition)
        else:
            result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        deadline.check(result)
        await asyncio.sleep(interval)


def wait_for_blocking(
    condition: Callable[[], T],
    within: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.1,
) -> T:
    """wait_for for code outside an event loop (a process's readiness, the container's scrape)."""
    deadline = _Deadline(within, what)
    while True:
        result = condition()
        if result:
            return result
        deadline.check(result)
        time.sleep(interval)


async def serve(app: web.Application, **kwargs: Any) -> TestServer:
    """``app`` served on a free port of 127.0.0.1 (close it with ``await server.close()``)."""
    server = TestServer(app, host="127.0.0.1", port=0, **kwargs)
    await server.start_server()
    return server


async def serve_guarded(
    app: web.Application, tls: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """``app`` served as the CLI serves it (its connection guard, TLS per connection) on a free
    port of 127.0.0.1: (runner, port); stop it with ``await runner.cleanup()``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await start_guarded_sites(runner, [sock], tls)
    return runner, int(sock.getsockname()[1])


# --- scripted upstreams: raw bytes on loopback, for what the simulator cannot send ---------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Upstream"], Awaitable[None]]
RECORD_BODY = b'{"id": "cmp_1", "status": "active"}'


@dataclass
class Upstream:
    """A scripted server: every connection runs its script; what it saw is kept."""

    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    request_seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def api_url(self) -> str:
        """The API URL of this server."""
        return f"http://127.0.0.1:{self.port}/v1"


async def read_request(reader: asyncio.StreamReader, upstream: Upstream) -> bytes:
    """One request head, recorded; b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    upstream.requests.append(head)
    upstream.request_seen.set()
    return head


def raw_answer(body: bytes = RECORD_BODY, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    """A complete answer with Content-Length; ``extra`` header lines end in CRLF."""
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


def answer_once(raw: bytes) -> Script:
    """A server that answers the first request with ``raw``, then waits for the hang-up."""

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
    ) -> None:
        await read_request(reader, upstream)
        writer.write(raw)
        await writer.drain()
        if not await reader.read(1):
            upstream.closed_by_client.set()

    return script


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
) -> None:
    """A well-behaved server: one answer per request, connection kept."""
    while await read_request(reader, upstream):
        writer.write(raw_answer())
        await writer.drain()


@contextlib.asynccontextmanager
async def upstream_running(
    script: Script, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Upstream]:
    """Serve ``script`` on a loopback port until the block ends."""
    upstream = Upstream()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.connections += 1
        upstream.open_now += 1
        upstream.most_open = max(upstream.most_open, upstream.open_now)
        try:
            await script(reader, writer, upstream)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            upstream.open_now -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


# 60 backspaces, ESC c (a terminal reset) and a vertical tab: what an upstream may send to wreck
# the terminal of whoever reads the log or a command's output.
TERMINAL_ATTACK = "\b" * 60 + "\x1bc" + "\v"


async def hostile_upstream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
) -> None:
    """An API whose `cmp_loc` redirects to a Location holding TERMINAL_ATTACK and whose
    `cmp_name` is named with it (kept-alive; every other campaign is a plain record)."""
    while head := await read_request(reader, upstream):
        target = head.split(b" ", 2)[1]
        if target.endswith(b"/cmp_loc"):
            where = f"http://evil{TERMINAL_ATTACK}.example/v1/campaigns/cmp_loc".encode()
            raw = raw_answer(b"", status="302 Found", extra=b"Location: " + where + b"\r\n")
        else:
            cid = target.rsplit(b"/", 1)[1].decode()
            name = TERMINAL_ATTACK if cid == "cmp_name" else "plain"
            raw = raw_answer(json.dumps({"id": cid, "name": name, "status": "active"}).encode())
        writer.write(raw)
        await writer.drain()


def unprintable(text: str) -> set[str]:
    """The characters of ``text`` a terminal could act on (line feeds excepted)."""
    return {ch for ch in text if not ch.isprintable() and ch != "\n"}


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
        # Go's collector runs a quarter as often: a tenth less CPU for `test rules` (about 10 s
        # for the calling-window file), at about 100 MB more memory.
        env={**os.environ, "GOGC": os.environ.get("GOGC", "400")},
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


def config_file_flags(sim: RunningSimulator, config: Path) -> dict[str, Any]:
    """Flags of an exporter reading its campaign list from ``config`` (fast polling of ``sim``),
    as the CLI passes them (the reloader reads the file again with the same flags)."""
    return {
        "api_url": sim.api_url,
        "api_key": API_KEY,
        "config_file": str(config),
        "poll_interval_seconds": 0.05,
        "listen_address": "127.0.0.1:0",
    }


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


_SERVING = re.compile(rb"serving metrics on (https?://[^/\s]+)/")


async def read_serving_url(
    process: asyncio.subprocess.Process, within: float = 30.0
) -> tuple[str, bytes]:
    """The base URL (``scheme://host:port``) a spawned exporter logs that it serves on, and
    that log line; fails if the process exits first."""
    assert process.stderr is not None
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), within)
        assert line, "exporter exited before serving"
        match = _SERVING.search(line)
        if match:
            return match.group(1).decode(), line


def trusting(authority: trustme.CA) -> ssl.SSLContext:
    """A client TLS context that trusts ``authority`` and nothing else: not the system's CAs,
    which would take 70 ms of CPU to load for every context and which no test server uses."""
    return ssl.create_default_context(cadata=authority.cert_pem.bytes().decode("ascii"))


def write_tls_config(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1, its web config file, and a client context trusting it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    (directory / "server.crt").write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    (directory / "server.key").write_bytes(leaf.private_key_pem.bytes())
    config = directory / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    return config, trusting(ca)


@dataclass
class PageRow:
    """One campaign row of the status page: its class and the text of each cell."""

    css: str
    cells: list[str] = field(default_factory=list)


class StatusPageParser(HTMLParser):
    """What a test reads of a status page, served or dumped by a browser: the campaign rows,
    every element by tag, the visible text, the banners, the title, the stylesheet, the refresh
    and links."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.rows: list[PageRow] = []
        self.links: list[str] = []
        self.title = ""
        self.style = ""
        self.refresh: str | None = None
        self.banners: list[str] = []  # the text of each banner above the health boxes
        self._banner: list[str] | None = None
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
        elif tag == "div" and "banner" in (attributes.get("class") or "").split():
            self._banner = []

    def handle_endtag(self, tag: str) -> None:
        """Close a cell, a banner, the table body or a raw text element."""
        if tag == "div" and self._banner is not None:
            self.banners.append("".join(self._banner))
            self._banner = None
        elif tag == "td" and self._cell is not None:
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
            if self._banner is not None:
                self._banner.append(data)


# --- the rule file and the PromQL it holds -------------------------------------------------------

RULE_FILE = ROOT / "helm" / "dialnexa-exporter" / "files" / "dialnexa-exporter.rules.yml"
# The severities an alert of the rule file may carry.
SEVERITIES = frozenset({"critical", "warning", "info"})

# The metric names of the design contract (docs/metrics.md's tables): nothing else may be queried
# by the rules or the dashboard, apart from the recording rules themselves and Prometheus' `up`.
CONTRACT_METRICS = frozenset(
    {
        "dialnexa_campaign_info",
        "dialnexa_campaign_status",
        "dialnexa_campaign_total_leads",
        "dialnexa_campaign_completed_calls",
        "dialnexa_campaign_pending_calls",
        "dialnexa_campaign_max_concurrent_calls",
        "dialnexa_campaign_retry_max_retries",
        "dialnexa_campaign_retry_interval_seconds",
        "dialnexa_campaign_created_timestamp_seconds",
        "dialnexa_campaign_scheduled_timestamp_seconds",
        "dialnexa_exporter_build_info",
        "dialnexa_exporter_campaign_up",
        "dialnexa_exporter_campaign_last_success_timestamp_seconds",
        "dialnexa_exporter_campaign_errors_total",
        "dialnexa_exporter_api_requests_total",
        "dialnexa_exporter_api_request_duration_seconds_bucket",
        "dialnexa_exporter_api_request_duration_seconds_sum",
        "dialnexa_exporter_api_request_duration_seconds_count",
        "dialnexa_exporter_campaigns_configured",
        "dialnexa_exporter_last_poll_timestamp_seconds",
        "dialnexa_exporter_poll_duration_seconds",
        "dialnexa_exporter_shard_index",
        "dialnexa_exporter_shards",
        "dialnexa_exporter_api_requests_limit",
        "dialnexa_exporter_api_requests_remaining",
        "dialnexa_exporter_api_rate_limit_reset_timestamp_seconds",
        "dialnexa_exporter_poll_stretch_factor",
        "dialnexa_exporter_poll_overdue_seconds",
        "dialnexa_exporter_oldest_campaign_data_age_seconds",
        "dialnexa_exporter_calling_window_open",
    }
)

# A small PromQL scanner: enough to list the metric selectors of an expression.
_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<matchers>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|[^{}"'`])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d[\w.]*|\.\d+)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<comment>\#[^\n]*)
  | (?P<space>\s+)
  | (?P<punct>.)
    """,
    re.VERBOSE,
)
_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"})


def metric_selectors(expr: str) -> list[tuple[str, str]]:
    """Every metric selector of a PromQL expression as (metric name, matcher block or "")."""
    tokens = [
        (match.lastgroup, match.group())
        for match in _TOKEN.finditer(expr)
        if match.lastgroup not in ("space", "comment")
    ]
    selectors: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else (None, "")
        index += 1
        if kind != "ident":
            continue
        if text in _LABEL_LISTS and following[1] == "(":
            depth = 0  # skip the parenthesised label list
            while index < len(tokens):
                depth += {"(": 1, ")": -1}.get(tokens[index][1], 0)
                index += 1
                if depth == 0:
                    break
            continue
        if following[1] == "(" or text in _AGGREGATIONS or text.lower() in _KEYWORDS:
            continue
        if following[0] == "matchers":
            selectors.append((text, following[1]))
            index += 1
        else:
            selectors.append((text, ""))
    return selectors


# libyaml's parser where PyYAML has it: the same documents as the pure-Python one, ten times
# faster, and the suite parses the rule file and rendered charts hundreds of times.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load``, with libyaml's parser when PyYAML has it."""
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)


def load_yaml_all(text: str | bytes) -> Iterator[Any]:
    """``yaml.safe_load_all``, with libyaml's parser when PyYAML has it."""
    return yaml.load_all(text, Loader=_YAML_LOADER)


def load_rules() -> list[dict[str, Any]]:
    """Every rule of the canonical file, each with its group name under `group`."""
    document = load_yaml(RULE_FILE.read_text(encoding="utf-8"))
    return [
        {**rule, "group": group["name"]} for group in document["groups"] for rule in group["rules"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of the canonical file."""
    return [rule for rule in load_rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    """The recording rules of the canonical file."""
    return [rule for rule in load_rules() if "record" in rule]


def recording_rule_names() -> set[str]:
    """Names of the recording rules of the canonical file."""
    return {rule["record"] for rule in recording_rules()}


def parse_duration(text: str) -> int:
    """A Prometheus duration (`1h30m`, `90s`, `0m`) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)([smhdwy])", text)
    assert "".join(f"{n}{u}" for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def status_code_mapping() -> dict[str, int]:
    """The status -> code table as the recording rule computes it."""
    (rule,) = [
        r for r in recording_rules() if r["record"] == "campaign:dialnexa_campaign_status:code"
    ]
    pairs = re.findall(r'status="(\w+)"\}\s*==\s*1\)\s*\*\s*(\d+)', rule["expr"])
    return {status: int(code) for status, code in pairs}


# --- Alertmanager configuration ------------------------------------------------------------------

# The canonical configuration (the chart's copy; exporter/rules/ holds an identical one).
AM_FILE = ROOT / "helm" / "dialnexa-exporter" / "files" / ALERTMANAGER_FILE_NAME
# The receiver the alerts of each severity reach.
RECEIVER_BY_SEVERITY = {
    "critical": "dialnexa-pager",
    "warning": "dialnexa-tickets",
    "info": "dialnexa-info",
}
# The matcher of the route that takes every DialNexa alert.
DIALNEXA_MATCHER = 'alertname=~"DialNexa.+"'


def load_config(path: Path = AM_FILE) -> dict[str, Any]:
    """The canonical configuration, parsed."""
    config: dict[str, Any] = load_yaml(path.read_text(encoding="utf-8"))
    return config


def dialnexa_route(config: Mapping[str, Any]) -> dict[str, Any]:
    """The route subtree that takes the DialNexa alerts (the part to merge into one's own)."""
    (route,) = [r for r in config["route"]["routes"] if r.get("matchers") == [DIALNEXA_MATCHER]]
    return dict(route)


def amtool() -> str:
    """Path of amtool, or a test failure saying how to get it."""
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not on PATH: install the Debian package `prometheus-alertmanager`")
    return path


def run_amtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run amtool and capture its output."""
    return subprocess.run(
        [amtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def routed_receivers(config_file: Path, labels: Mapping[str, str]) -> list[str]:
    """The receivers `amtool config routes test` picks for an alert with ``labels``."""
    result = run_amtool(
        "config",
        "routes",
        "test",
        f"--config.file={config_file}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def alert_labels(rule: Mapping[str, Any], severity: str | None = None) -> dict[str, str]:
    """The labels an alert of ``rule`` carries in Alertmanager (its own severity unless given)."""
    labels = {
        "alertname": rule["alert"],
        "severity": severity or rule["labels"]["severity"],
        "job": "dialnexa-exporter",
        "instance": "exporter:10027",
        "namespace": "telemetry",
    }
    if rule["group"] == "dialnexa-campaigns.alerts":
        labels |= {"campaign_id": "cmp_1", "name": "Renewal Reminders"}
    return labels


# --- the dashboard -------------------------------------------------------------------------------

DASHBOARD_FILE = ROOT / "grafana" / "dialnexa-campaigns.json"
# Values for the dashboard's variables when a query is run outside Grafana: every job and campaign,
# and windows that suit a Prometheus scraping every 15-30s. An end-to-end test passes its own.
DEFAULT_VARIABLES: Mapping[str, str] = {
    "datasource": "prometheus",
    "job": ".*",
    "campaign": ".*",
    "top": ".+",
    "changed": ".+",
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
}
# A reference to a Grafana variable: ${x}, ${x:fmt}, [[x]] or $x.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL query of a dashboard panel."""

    panel: str
    ref_id: str
    expr: str
    instant: bool


def load_dashboard() -> dict[str, Any]:
    """The canonical dashboard JSON."""
    document: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return document


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, also those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (everything but rows)."""
    return [panel for panel in iter_panels(dashboard) if panel["type"] != "row"]


def substitute_variables(text: str, variables: Mapping[str, str] | None = None) -> str:
    """Replace Grafana variables ($x, ${x}, ${x:fmt}, [[x]]); an unknown variable is a KeyError."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name.isdigit():  # label_replace's "$1": Grafana leaves what names no variable
            return match.group(0)
        return values[name]

    return _VARIABLE.sub(replace, text)


def dashboard_queries(
    variables: Mapping[str, str] | None = None, *, substitute: bool = True
) -> list[PanelQuery]:
    """Every panel query of the dashboard, its variables substituted (defaults overridable)."""
    queries = []
    for panel in data_panels(load_dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if substitute:
                expr = substitute_variables(expr, variables)
            queries.append(
                PanelQuery(panel["title"], target["refId"], expr, bool(target.get("instant")))
            )
    return queries


def variable(name: str) -> dict[str, Any]:
    """The dashboard's template variable called `name`."""
    (found,) = [v for v in load_dashboard()["templating"]["list"] if v["name"] == name]
    return found


def variable_query(name: str) -> str:
    """The query text of a query variable, whether stored as a string or an object."""
    query = variable(name)["query"]
    return query["query"] if isinstance(query, dict) else str(query)


def query_result_variables() -> list[str]:
    """Names of the dashboard's query_result() variables (the hidden top-N selections)."""
    return [
        v["name"]
        for v in load_dashboard()["templating"]["list"]
        if v["type"] == "query" and variable_query(v["name"]).startswith("query_result(")
    ]


# Characters Grafana escapes in a value it puts into a Prometheus regex.
_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|\[\]{}])")


def resolve_query_result_variables(
    query: Callable[[str], list[dict[str, Any]]], variables: Mapping[str, str]
) -> dict[str, str]:
    """The values Grafana gives the query_result() variables with "All" selected: each one's
    PromQL (its own variables substituted) run as an instant query by ``query``, its regex
    applied to each result row as Grafana prints it (``name{a="b", ...} value``), the captured
    values escaped and joined into a regex alternation ``(a|b)``."""
    resolved: dict[str, str] = {}
    for name in query_result_variables():
        text = substitute_variables(variable_query(name), {**variables, **resolved})
        expr = text.removeprefix("query_result(").removesuffix(")")
        pattern = re.compile(variable(name)["regex"].strip("/"))
        values: dict[str, None] = {}
        for series in query(expr):
            labels = ", ".join(f'{k}="{v}"' for k, v in series["metric"].items() if k != "__name__")
            row = f"{series['metric'].get('__name__', '')}{{{labels}}} {series['value'][1]}"
            if found := pattern.search(row):
                values[found.group(1)] = None
        resolved[name] = "(" + "|".join(_REGEX_SPECIAL.sub(r"\\\1", v) for v in values) + ")"
    return resolved


# --- the end-to-end runs -------------------------------------------------------------------------

# The simulator runs SPEED times faster than real time, and the copy of the rule file that
# Prometheus loads has every duration divided by SPEED, so the alerts judge simulated time.
SPEED = 180.0  # one simulated hour passes in 20 s
SCRAPE_SECONDS = 1
MIN_WINDOW_SECONDS = 4 * SCRAPE_SECONDS  # Grafana's $__rate_interval floor: four scrapes
JOB = "dialnexa-exporter"
PAUSED = "cmp_demo_pause"
STALLED = "cmp_demo_stall"
FAILING = "cmp_e2e_failing"


def e2e_campaigns() -> list[SimCampaign]:
    """The demo's campaigns with the pause and the stall moved into the first seconds."""
    tuned: dict[str, dict[str, Any]] = {
        # 60 calls in (4 s at SPEED), then paused for a simulated day: longer than the test.
        PAUSED: {"pause_at": 0.05, "resume_after": 86400.0},
        # 40 calls in (about 3 s), then no call completes any more.
        STALLED: {"stall_at": 0.05},
    }
    campaigns = demo_campaigns()
    assert set(tuned) <= {c.id for c in campaigns}, "the demo's scenarios were renamed"
    # A fault makes every fetch of this extra campaign fail, so that error counters exist.
    return [dataclasses.replace(c, **tuned.get(c.id, {})) for c in campaigns] + [campaign(FAILING)]


def shortened_rules() -> dict[str, Any]:
    """The canonical rule file with every duration divided by SPEED (never written back)."""
    document = load_yaml(RULE_FILE.read_text(encoding="utf-8"))
    return scale_rule_durations(document, SPEED, MIN_WINDOW_SECONDS)
