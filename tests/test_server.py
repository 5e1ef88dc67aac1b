"""The web application: gzip negotiation, the telemetry path, exporter-wide families measured
at scrape time, and configuration reloads end to end (file watcher and SIGHUP)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from exporter.config import load_settings
from exporter.polling import reloader as reloader_module
from exporter.web.server import accepts_gzip
from tests.helpers import (
    API_KEY,
    StartExporter,
    StartSim,
    campaign,
    config_file_flags,
    exporter_settings,
    parse_samples,
    spawn_exporter,
    value,
    wait_for,
)


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZIP", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=abc", True),  # an unreadable weight is no refusal
        ("x" * 10_000, False),
    ],
)
def test_gzip_negotiation(header: str | None, gzipped: bool) -> None:
    """gzip when Accept-Encoding allows it (directly or by *), never when weighted 0."""
    assert accepts_gzip(header) is gzipped


async def test_gzip_and_plain_bodies_say_the_same(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """The gzipped body (one gzip member, finished per scrape) and the plain one hold the same
    families; HEAD gives the plain length and no body."""
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_b")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a", "cmp_b"]))
    await exporter.wait_ready()
    _, headers, packed = await exporter.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert packed[:2] == b"\x1f\x8b"
    unpacked = gzip.decompress(packed)
    _, headers, plain = await exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert int(headers["Content-Length"]) == len(plain)
    names = {name for name, _ in parse_samples(plain.decode())}
    assert names == {name for name, _ in parse_samples(unpacked.decode())}
    assert "process_cpu_seconds_total" in names
    assert "dialnexa_exporter_campaign_up" in names
    async with exporter.session.head(
        exporter.server.make_url("/metrics"), headers={"Accept-Encoding": "identity"}
    ) as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_the_telemetry_path_moves_the_metrics(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """--web.telemetry-path serves the metrics elsewhere; /metrics is then not found."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(
        exporter_settings(sim, ["cmp_a"], telemetry_path="/internal/prometheus")
    )
    status, _, body = await exporter.get(
        "/internal/prometheus", headers={"Accept-Encoding": "identity"}
    )
    assert status == 200
    assert b"dialnexa_exporter_build_info" in body
    status, _, _ = await exporter.get("/metrics")
    assert status == 404


@pytest.mark.parametrize("path", ["metrics", "/", "/healthz", "/x y", "/" + "a" * 200, "/é"])
def test_unusable_telemetry_paths_are_configuration_errors(path: str) -> None:
    """A path that is relative, the root, a probe's, too long or not plain ASCII is refused."""
    from exporter.config import ConfigError

    with pytest.raises(ConfigError, match="DIALNEXA_TELEMETRY_PATH"):
        load_settings({"api_key": API_KEY, "campaign_ids": ["a"], "telemetry_path": path})


async def test_process_and_request_figures_are_read_at_each_scrape(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """With nothing due for an hour (no publication), scrapes still see the process' CPU time
    move and every request counted: they are measured when scraped, not when published."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(
        exporter_settings(
            sim, ["cmp_a"], poll_interval_seconds=3600, terminal_poll_interval_seconds=3600
        )
    )
    await exporter.wait_ready()
    first = value(await exporter.samples(), "process_cpu_seconds_total")
    assert first is not None

    async def cpu_moved() -> bool:
        sum(range(200_000))  # spend a little CPU between scrapes
        return (value(await exporter.samples(), "process_cpu_seconds_total") or 0) > first

    await wait_for(cpu_moved, what="process_cpu_seconds_total to move between scrapes")
    exporter.poller.set_campaigns(["cmp_a", "cmp_gone"])  # one more request: a 404
    await wait_for(lambda: sim.sim.stats.requests == 2, what="the second campaign's request")

    async def counted() -> bool:
        samples = await exporter.samples()
        return value(samples, "dialnexa_exporter_api_requests_total", code="404") == 1

    await wait_for(counted, what="the 404 counted")
    samples = await exporter.samples()
    assert value(samples, "dialnexa_exporter_api_requests_total", code="200") == 1


async def test_the_file_watcher_applies_a_changed_list(
    start_simulator: StartSim,
    start_exporter: StartExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Editing the configuration file swaps campaigns without a signal or a restart."""
    monkeypatch.setattr(reloader_module, "CONFIG_CHECK_SECONDS", 0.05)
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_b")])
    config = tmp_path / "config.yaml"
    config.write_text("campaigns: [cmp_a]\n")
    flags = config_file_flags(sim, config)
    exporter = await start_exporter(load_settings(flags), flags)
    await exporter.wait_ready()
    config.write_text("campaigns: [cmp_b]\n")
    samples = await exporter.wait_published(
        lambda s: value(s, "dialnexa_exporter_campaign_up", campaign_id="cmp_b") == 1,
        "the edited list to be polled",
    )
    assert value(samples, "dialnexa_exporter_campaign_up", campaign_id="cmp_a") is None


@pytest.mark.slow
async def test_a_sighup_storm_reloads_a_few_times_and_keeps_serving(
    start_simulator: StartSim, tmp_path: Path
) -> None:
    """A hundred SIGHUPs to the real process: the new list is applied, reloads are merged
    (a handful, not a hundred), and /healthz answers throughout."""
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_b")])
    config = tmp_path / "config.yaml"
    many = [f"cmp_x{n}" for n in range(20_000)]
    config.write_text("campaigns: [cmp_a]\n")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": sim.api_url,
        "DIALNEXA_CONFIG_FILE": str(config),
        "DIALNEXA_POLL_INTERVAL_SECONDS": "3600",
    }
    process = await spawn_exporter(env, "--web.listen-address", "127.0.0.1:0")
    assert process.stderr is not None
    stderr = b""

    async def logged(text: bytes) -> bool:
        nonlocal stderr
        assert process.stderr is not None
        with contextlib.suppress(TimeoutError):
            stderr += await asyncio.wait_for(process.stderr.read(4096), 0.2)
        return text in stderr

    try:
        await wait_for(lambda: logged(b"serving metrics on"), what="the exporter to listen")
        url = stderr.split(b"serving metrics on ", 1)[1].split(b"/metrics")[0].decode()
        config.write_text("campaigns: [" + ", ".join(["cmp_b", *many]) + "]\n")
        for _ in range(100):
            process.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as session:

            async def healthy_and_switched() -> bool:
                async with session.get(f"{url}/healthz") as response:
                    assert response.status == 200
                async with session.get(f"{url}/metrics") as response:
                    samples = parse_samples(await response.text())
                return value(samples, "dialnexa_exporter_campaigns_configured") == 20_001

            await wait_for(healthy_and_switched, within=30, what="the reload under a storm")
        await wait_for(lambda: logged(b"configuration reloaded"), what="the reload's log line")
        assert 1 <= stderr.count(b"configuration reloaded") <= 3
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0
