"""The status page in a real browser: headless Chromium loads / from an exporter polling the
simulator, the test reads the DOM it built, checks the page's policy let its stylesheet apply,
and saves a screenshot under tests/artifacts/ (ignored by git) for a person to look at.

Chromium cannot send basic auth credentials from the command line, so the page behind a web
config is tested in tests/test_status_page.py with aiohttp; here the exporter has no users.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
from pathlib import Path

import pytest
from aiohttp import web

from exporter.demo.simulator import Fault, FaultKind, SimCampaign
from exporter.exposition.status_page import PAGE_HEADERS
from tests.helpers import (
    ROOT,
    RunningExporter,
    StartExporter,
    StartSim,
    StatusPageParser,
    campaign,
    exporter_settings,
    serve,
)

ARTIFACTS = ROOT / "tests" / "artifacts"
WIDTH, HEIGHT = 1280, 900
HOSTILE_NAME = "<script>document.title='pwned'</script><img src=x onerror=alert(1)> \"Q\" & 'A'"
# What Chromium logs (with --enable-logging=stderr) when a policy blocks part of a page.
CSP_COMPLAINT = "Content Security Policy"
CHROMIUM_SECONDS = 60

pytestmark = pytest.mark.slow  # a real Chromium: seconds of CPU per page


def chromium_binary() -> str:
    """Path of Debian's chromium; skips the test when it is not installed."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium not installed (tests/run.sh installs the chromium package)")
    return binary


def make_profile(directory: Path) -> Path:
    """A directory for Chromium's profile and home (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def chromium(profile: Path, url: str, *args: str) -> tuple[str, str]:
    """Run headless Chromium on ``url`` with ``args``; returns (stdout, stderr).

    A subprocess awaited on the event loop, so that the exporter (served by this same loop)
    answers it. Its own profile and home directory are under ``profile``; everything that
    could reach the network beyond loopback is off.
    """
    home = make_profile(profile)
    process = await asyncio.create_subprocess_exec(
        chromium_binary(),
        "--headless",
        "--no-sandbox",  # runs as root in CI containers, where the sandbox cannot start
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={home / 'user-data'}",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
    )
    try:
        async with asyncio.timeout(CHROMIUM_SECONDS):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode(), stderr.decode(errors="replace")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header chunk (fails on anything that is not a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def demo_like_exporter(
    start_simulator: StartSim, start_exporter: StartExporter
) -> RunningExporter:
    """An exporter with one campaign of each kind the page sorts, published."""
    sim = await start_simulator(
        [
            campaign(
                "cmp_progress", name="Q2 Lead Re-engagement", completed=438.0, total_leads=1200
            ),
            campaign("cmp_paused", name="Renewal Reminders", status="paused", completed=300.0),
            campaign("cmp_failing", name="Payment Follow-up"),
            campaign("cmp_evil", name=HOSTILE_NAME),
            campaign("cmp_odd", name="Archived Batch", status="archived"),
            SimCampaign(
                "cmp_legacy",
                "Survey (older record shape)",
                900,
                5,
                status="running",
                legacy_shape=True,
            ),
        ]
    )
    sim.sim.set_fault(Fault(FaultKind.STATUS, status=503), "cmp_failing")
    ids = ["cmp_progress", "cmp_paused", "cmp_failing", "cmp_evil", "cmp_odd", "cmp_legacy"]
    exporter = await start_exporter(exporter_settings(sim, ids, poll_interval_seconds=3600))
    await exporter.wait_ready()
    return exporter


async def test_chromium_renders_the_page_problems_first_and_inert(
    tmp_path: Path,
    start_simulator: StartSim,
    start_exporter: StartExporter,
    record_property: pytest.RecordProperty,
) -> None:
    """Chromium: problems first, hostile name as text, nothing blocked, a 1280x900 screenshot."""
    exporter = await demo_like_exporter(start_simulator, start_exporter)
    dom, log = await chromium(tmp_path / "chromium", exporter.url, "--dump-dom")
    parsed = StatusPageParser(dom)
    assert [row.css for row in parsed.rows] == ["failing", "paused", "unknown", "ok", "ok", "ok"]
    ids = [row.cells[0].split("\n")[1].split(" ")[0] for row in parsed.rows]
    assert ids == ["cmp_failing", "cmp_paused", "cmp_odd", "cmp_evil", "cmp_progress", "cmp_legacy"]
    assert parsed.rows[0].cells[5].startswith("server_error: the API failed (5xx)\nfor ")
    assert parsed.rows[2].cells[1] == "unknown"
    assert parsed.rows[3].cells[0].split("\n")[0] == HOSTILE_NAME
    assert parsed.rows[5].cells[2] == "—"  # the older record shape has no counters
    assert "36.5%" in parsed.rows[4].cells[2]
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert parsed.title == "1 failing · DialNexa exporter"
    assert "Failing1" in parsed.text
    assert CSP_COMPLAINT not in log

    screenshot = tmp_path / "status-page.png"
    await chromium(
        tmp_path / "chromium",
        exporter.url,
        f"--screenshot={screenshot}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--hide-scrollbars",
    )
    data = screenshot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    assert len(data) > 20_000  # a blank or unstyled-empty page compresses to a few KB
    ARTIFACTS.mkdir(exist_ok=True)
    artifact = ARTIFACTS / "status-page.png"
    artifact.write_bytes(data)
    record_property("screenshot", str(artifact))


async def test_chromium_reports_a_blocked_stylesheet(
    tmp_path: Path, start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """The check can fail: Chromium logs a stylesheet blocked by a policy of another hash."""
    exporter = await demo_like_exporter(start_simulator, start_exporter)
    _, _, body = await exporter.get("/")
    wrong = {
        **PAGE_HEADERS,
        "Content-Security-Policy": "default-src 'none'; style-src 'sha256-AAAA'",
    }

    async def tampered(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", headers=wrong)

    app = web.Application()
    app.router.add_get("/", tampered)
    server = await serve(app)
    try:
        _, log = await chromium(tmp_path / "chromium", str(server.make_url("/")), "--dump-dom")
    finally:
        await server.close()
    assert CSP_COMPLAINT in log
