"""The whole exporter against the simulator on loopback: endpoints and every failure behaviour."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.config import Settings, load_settings
from exporter.demo.simulator import Fault, FaultKind, RateLimitPolicy, retry_after_date
from exporter.logformat import formatter_for
from exporter.logs import RedactingFormatter
from exporter.polling.poller import Poller
from exporter.web.server import EXPOSITION, RELOADER, create_app
from tests.fault_tables import FAILURES
from tests.helpers import (
    API_KEY,
    OffsetClock,
    Samples,
    StartExporter,
    StartSim,
    StatusPageParser,
    campaign,
    config_file_flags,
    exporter_settings,
    hostile_upstream,
    parse_samples,
    series_for,
    serve,
    spawn_exporter,
    unprintable,
    upstream_running,
    value,
    wait_for,
)


def up(samples: Samples, cid: str) -> float | None:
    """campaign_up of one campaign."""
    return value(samples, "dialnexa_exporter_campaign_up", campaign_id=cid)


def errors(samples: Samples, cid: str, reason: str) -> float:
    """Error count of one campaign and reason (0 when the series is absent)."""
    found = value(
        samples, "dialnexa_exporter_campaign_errors_total", campaign_id=cid, reason=reason
    )
    return found or 0.0


async def test_metrics_follow_the_simulator(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """Campaign data, the status set and health metrics appear and match the API's records."""
    sim = await start_simulator(
        [
            campaign("cmp_a", total_leads=1200),
            campaign("cmp_legacy", status="running", legacy_shape=True),
        ]
    )
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a", "cmp_legacy"]))
    await exporter.wait_ready()
    samples = await exporter.samples()
    assert value(samples, "dialnexa_campaign_total_leads", campaign_id="cmp_a") == 1200
    completed = value(samples, "dialnexa_campaign_completed_calls", campaign_id="cmp_a")
    pending = value(samples, "dialnexa_campaign_pending_calls", campaign_id="cmp_a")
    assert completed is not None
    assert pending is not None
    assert completed + pending == 1200
    assert value(samples, "dialnexa_campaign_status", campaign_id="cmp_a", status="active") == 1
    assert (
        value(samples, "dialnexa_campaign_status", campaign_id="cmp_legacy", status="running") == 1
    )
    assert "dialnexa_campaign_pending_calls" not in series_for(samples, "cmp_legacy")
    assert value(samples, "dialnexa_campaign_retry_interval_seconds", campaign_id="cmp_a") == 7200
    assert up(samples, "cmp_a") == 1
    assert up(samples, "cmp_legacy") == 1
    assert value(samples, "dialnexa_exporter_campaigns_configured") == 2
    assert (value(samples, "dialnexa_exporter_api_requests_total", code="200") or 0) >= 2
    assert value(samples, "dialnexa_exporter_last_poll_timestamp_seconds") is not None


async def test_progress_moves_between_scrapes(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """Completed calls rise as the simulated campaign progresses."""
    sim = await start_simulator(
        [campaign("cmp_fast", total_leads=10**6, max_concurrent_calls=50)], speed=600
    )
    exporter = await start_exporter(exporter_settings(sim, ["cmp_fast"]))
    first = await exporter.wait_published(
        lambda s: value(s, "dialnexa_campaign_completed_calls", campaign_id="cmp_fast") is not None,
        "first value",
    )
    start = value(first, "dialnexa_campaign_completed_calls", campaign_id="cmp_fast") or 0
    await exporter.wait_published(
        lambda s: (
            (value(s, "dialnexa_campaign_completed_calls", campaign_id="cmp_fast") or 0) > start
        ),
        "completed calls to rise",
    )


async def test_endpoints(start_simulator: StartSim, start_exporter: StartExporter) -> None:
    """/healthz, /readyz, / and gzip on /metrics behave as documented."""
    sim = await start_simulator([campaign("cmp_a")])
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=0.5))
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"], poll_interval_seconds=3600))
    status, _, _ = await exporter.get("/readyz")
    assert status == 503
    status, _, body = await exporter.get("/healthz")
    assert (status, body) == (200, b"ok\n")
    await exporter.wait_ready()
    status, _, _ = await exporter.get("/readyz")
    assert status == 200
    status, headers, page = await exporter.get("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    for link in ("metrics", "healthz", "readyz"):
        assert f'href="{link}"' in page.decode()
    status, headers, plain = await exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in headers
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    status, headers, packed = await exporter.get(
        "/metrics", headers={"Accept-Encoding": "br;q=1.0, gzip;q=0.8"}
    )
    assert headers["Content-Encoding"] == "gzip"

    def steady(body: bytes) -> list[bytes]:  # measured anew at each scrape: process, lag
        measured = (b"process_", b"dialnexa_exporter_oldest_", b"dialnexa_exporter_poll_over")
        return [line for line in body.splitlines() if not line.startswith(measured)]

    assert steady(gzip.decompress(packed)) == steady(plain)
    assert len(packed) < len(plain)
    _, headers, _ = await exporter.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in headers


async def test_concurrency_cap_is_never_exceeded(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """With 40 slow campaigns and a cap of 3, the API never sees more than 3 requests at once."""
    ids = [f"cmp_{n:02d}" for n in range(40)]
    sim = await start_simulator([campaign(cid) for cid in ids])
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=0.02))
    exporter = await start_exporter(exporter_settings(sim, ids, max_concurrency=3))
    await exporter.wait_ready()
    assert sim.sim.stats.max_in_flight == 3
    assert set(sim.sim.stats.by_campaign) == set(ids)


async def test_deleted_campaign_disappears_at_once(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """A 404 after success drops that campaign's data series at once; others are untouched."""
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_b")])
    exporter = await start_exporter(
        exporter_settings(sim, ["cmp_a", "cmp_b"], stale_after_seconds=3600)
    )
    await exporter.wait_ready()
    assert "dialnexa_campaign_pending_calls" in series_for(await exporter.samples(), "cmp_a")
    sim.sim.remove("cmp_a")
    samples = await exporter.wait_published(
        lambda s: errors(s, "cmp_a", "not_found") >= 1, "the 404 to be counted"
    )
    assert series_for(samples, "cmp_a") == set()
    assert up(samples, "cmp_a") == 0
    assert up(samples, "cmp_b") == 1
    assert "dialnexa_campaign_pending_calls" in series_for(samples, "cmp_b")


@pytest.mark.parametrize(
    ("fault", "reason"),
    FAILURES,
    ids=[f"{f.kind.value}-{f.status}-{r}" for f, r in FAILURES],
)
async def test_failure_keeps_last_values_then_drops_them_when_stale(
    start_simulator: StartSim, start_exporter: StartExporter, fault: Fault, reason: str
) -> None:
    """Any non-404 failure: up 0, counted by reason, last values kept, dropped after STALE_AFTER."""
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_ok")])
    clock = OffsetClock()
    # A short timeout only where the fault is one: elsewhere a loaded machine must not turn a
    # quick answer (cmp_ok's, or the fault's) into a timeout.
    timeout = 0.3 if reason == "timeout" else 5.0
    exporter = await start_exporter(
        exporter_settings(
            sim, ["cmp_a", "cmp_ok"], stale_after_seconds=60, request_timeout_seconds=timeout
        ),
        clock=clock,
    )
    await exporter.wait_ready()
    sim.sim.set_fault(fault, "cmp_a")
    failed = await exporter.wait_published(
        lambda s: errors(s, "cmp_a", reason) >= 1, f"a {reason} error"
    )
    assert up(failed, "cmp_a") == 0
    assert "dialnexa_campaign_pending_calls" in series_for(failed, "cmp_a")
    assert up(failed, "cmp_ok") == 1
    clock.advance(61)  # past STALE_AFTER: cmp_ok keeps succeeding, cmp_a keeps failing
    stale = await exporter.wait_published(
        lambda s: not series_for(s, "cmp_a") and bool(series_for(s, "cmp_ok")),
        "cmp_a's stale data to be dropped while cmp_ok is fetched again",
    )
    assert up(stale, "cmp_a") == 0
    assert "dialnexa_campaign_pending_calls" in series_for(stale, "cmp_ok")
    assert exporter.app[RELOADER] is not None  # the app is still serving


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_rate_limit_honours_retry_after(
    start_simulator: StartSim, start_exporter: StartExporter, form: str
) -> None:
    """A 429 with Retry-After defers that campaign's next fetch by that long."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"]))
    await exporter.wait_ready()
    header = "60" if form == "seconds" else retry_after_date(60)
    sim.sim.set_fault(Fault(FaultKind.RATE_LIMIT, retry_after=header))
    await exporter.wait_published(
        lambda s: errors(s, "cmp_a", "rate_limited") >= 1, "the 429 to be counted"
    )
    assert 50 <= exporter.poller.next_fetch_in("cmp_a") <= 60
    requests = sim.sim.stats.by_campaign["cmp_a"]
    # Other work keeps flowing (a second scrape renders) while cmp_a stays deferred.
    await exporter.samples()
    assert sim.sim.stats.by_campaign["cmp_a"] == requests


async def test_metrics_answer_while_the_api_hangs(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """/metrics is served from memory: it answers while every API request is stuck."""
    sim = await start_simulator([campaign(f"cmp_{n}") for n in range(5)])
    exporter = await start_exporter(
        exporter_settings(sim, [f"cmp_{n}" for n in range(5)], request_timeout_seconds=30)
    )
    await exporter.wait_ready()
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=60))
    await wait_for(lambda: sim.sim.stats.in_flight >= 5, what="requests to hang")
    samples = await asyncio.wait_for(exporter.samples(), timeout=5)
    assert sim.sim.stats.in_flight >= 5
    assert up(samples, "cmp_0") == 1


async def test_config_file_reload_changes_the_campaign_list(
    start_simulator: StartSim, start_exporter: StartExporter, tmp_path: Path
) -> None:
    """A changed YAML file swaps campaigns in and out; a broken one is refused, changing nothing."""
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_b"), campaign("cmp_c")])
    config = tmp_path / "config.yaml"
    config.write_text("campaigns: [cmp_a, cmp_b]\n")
    flags = config_file_flags(sim, config)
    exporter = await start_exporter(load_settings(flags), flags)
    await exporter.wait_ready()
    config.write_text("campaigns: [cmp_b, cmp_c]\n")
    assert await exporter.app[RELOADER].reload()
    samples = await exporter.wait_published(
        lambda s: up(s, "cmp_c") == 1, "the new campaign to be polled"
    )
    assert series_for(samples, "cmp_a") == set()
    assert up(samples, "cmp_a") is None
    assert value(samples, "dialnexa_exporter_campaigns_configured") == 2
    config.write_text("campaigns: ['../etc/passwd']\n")
    assert not await exporter.app[RELOADER].reload()
    samples = await exporter.wait_published(
        lambda s: value(s, "dialnexa_exporter_config_last_reload_successful") == 0,
        "the failed reload to show",
    )
    assert exporter.poller.campaign_ids == ("cmp_b", "cmp_c")
    assert up(samples, "cmp_b") == 1


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_sigterm_stops_the_process_cleanly(start_simulator: StartSim, loop: str) -> None:
    """The real process serves ("polling 1 campaign"), then exits 0 on SIGTERM, either loop."""
    sim = await start_simulator([campaign("cmp_a")])
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": sim.api_url,
        "DIALNEXA_CAMPAIGN_IDS": "cmp_a",
        "DIALNEXA_LISTEN_ADDRESS": "127.0.0.1:0",
        "DIALNEXA_POLL_INTERVAL_SECONDS": "0.2",
        "DIALNEXA_LOG_LEVEL": "debug",
        "DIALNEXA_EVENT_LOOP": loop,
    }
    process = await spawn_exporter(env)
    assert process.stderr is not None
    log = b""
    try:
        async with asyncio.timeout(30):
            while b"first poll round done" not in log:
                line = await process.stderr.readline()
                assert line, log.decode()
                log += line
        match = re.search(rb"serving metrics on http://[\d.]+:(\d+)/metrics", log)
        assert match, log.decode()
        # One campaign is counted in the singular (issue 19).
        assert b"polling 1 campaign every " in log
        assert b"first poll round done: 1 campaign\n" in log
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = await process.stderr.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert b"Traceback" not in log + rest
    assert API_KEY.encode() not in log + rest
    assert API_KEY[:8].encode() not in log + rest


async def test_a_hanging_campaign_does_not_hold_back_the_others(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """While one campaign's request hangs, the others keep being fetched on their schedule."""
    sim = await start_simulator([campaign("cmp_slow"), campaign("cmp_a"), campaign("cmp_b")])
    exporter = await start_exporter(
        exporter_settings(
            sim,
            ["cmp_slow", "cmp_a", "cmp_b"],
            poll_interval_seconds=0.05,
            request_timeout_seconds=30,
        )
    )
    await exporter.wait_ready()
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=60), "cmp_slow")
    await wait_for(lambda: sim.sim.stats.in_flight >= 1, what="cmp_slow to hang")
    hung_at = sim.sim.stats.by_campaign["cmp_a"]
    await wait_for(
        lambda: sim.sim.stats.by_campaign["cmp_a"] >= hung_at + 10,
        what="cmp_a to be fetched again and again",
    )
    assert sim.sim.stats.in_flight >= 1  # cmp_slow is still stuck meanwhile
    samples = await exporter.samples()
    assert up(samples, "cmp_a") == 1


async def test_terminal_campaigns_are_fetched_at_the_terminal_interval(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """Completed and cancelled campaigns are not refetched while active ones are, many times."""
    sim = await start_simulator(
        [
            campaign("cmp_active"),
            campaign("cmp_done", status="completed", completed=1000.0),
            campaign("cmp_cancelled", status="cancelled"),
        ]
    )
    exporter = await start_exporter(
        exporter_settings(
            sim,
            ["cmp_active", "cmp_done", "cmp_cancelled"],
            poll_interval_seconds=0.05,
            terminal_poll_interval_seconds=3600,
        )
    )
    await exporter.wait_ready()
    await wait_for(
        lambda: sim.sim.stats.by_campaign["cmp_active"] >= 10, what="ten fetches of cmp_active"
    )
    assert sim.sim.stats.by_campaign["cmp_done"] == 1
    assert sim.sim.stats.by_campaign["cmp_cancelled"] == 1
    assert 0.9 * 3600 - 1 < exporter.poller.next_fetch_in("cmp_done") <= 3600


async def test_shutdown_survives_a_background_task_that_died(
    start_simulator: StartSim,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If the poller task has crashed, stopping the app still completes and says so."""

    crashed: list[bool] = []

    async def crash(self: object) -> None:
        crashed.append(True)
        raise RuntimeError("simulated poller crash")

    monkeypatch.setattr("exporter.polling.poller.Poller.run", crash)
    sim = await start_simulator([campaign("cmp_a")])
    app = create_app(exporter_settings(sim, ["cmp_a"]))
    server = await serve(app)
    await wait_for(lambda: bool(crashed), what="the poller task to crash")
    await server.close()
    assert "background task dialnexa-poller had failed" in caplog.text


def statuses_served(samples: Samples, cid: str) -> dict[str, float]:
    """The status series of one campaign: status label -> value."""
    return {
        dict(labels)["status"]: found
        for (name, labels), found in samples.items()
        if name == "dialnexa_campaign_status" and dict(labels)["campaign_id"] == cid
    }


async def test_current_status_series_follow_the_status(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """With DIALNEXA_STATUS_SERIES=current the exporter serves the current status's series
    only, and a change of status replaces it (the old series is gone, not 0)."""
    sim = await start_simulator([campaign("cmp_a")])
    sim.sim.set_raw("cmp_a", {"id": "cmp_a", "status": "active", "pending_calls": 5})
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"], status_series="current"))
    samples = await exporter.wait_published(
        lambda s: bool(statuses_served(s, "cmp_a")), "the first status"
    )
    assert statuses_served(samples, "cmp_a") == {"active": 1}
    sim.sim.set_raw("cmp_a", {"id": "cmp_a", "status": "paused", "pending_calls": 5})
    samples = await exporter.wait_published(
        lambda s: "paused" in statuses_served(s, "cmp_a"), "the paused status"
    )
    assert statuses_served(samples, "cmp_a") == {"paused": 1}


# --- freshness: whatever stops polling shows --------------------------------------------------


async def _serve_with_clock(
    settings: Settings, clock: OffsetClock
) -> tuple[web.Application, TestServer]:
    """The exporter app on a loopback port with ``clock`` injected (the caller closes it)."""
    app = create_app(settings, clock=clock)
    return app, await serve(app)


async def _scrape(server: TestServer) -> Samples:
    """One /metrics scrape of ``server``, parsed."""
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/metrics")) as got:
        assert got.status == 200
        return parse_samples(await got.text())


async def _page(server: TestServer) -> str:
    """The status page of ``server``."""
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as got:
        assert got.status == 200
        return await got.text()


async def test_data_dropped_as_stale_while_paced_turns_campaign_up_to_0(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """The budget holding every request (remaining 0, reset an hour away) lets the data go
    stale: it is dropped and campaign_up says 0 then, never 1 beside no data."""
    sim = await start_simulator([campaign("cmp_a")])
    sim.sim.set_rate_limit(RateLimitPolicy(limit=10, window=3600))
    sim.sim.spend(9)  # the first answer says 0 left: the budget holds every later request
    exporter = await start_exporter(
        exporter_settings(sim, ["cmp_a"], poll_interval_seconds=0.1, stale_after_seconds=1)
    )
    await exporter.wait_ready()
    first = await exporter.samples()
    assert up(first, "cmp_a") == 1
    stale = await exporter.wait_published(
        lambda s: not series_for(s, "cmp_a"), "the stale data to be dropped"
    )
    assert up(stale, "cmp_a") == 0
    assert sim.sim.stats.by_campaign["cmp_a"] == 1
    overdue = value(stale, "dialnexa_exporter_poll_overdue_seconds")
    assert overdue is not None
    assert overdue > 0.5
    _, _, body = await exporter.get("/")
    (banner,) = StatusPageParser(body.decode()).banners
    assert banner.startswith("Polling paused by the API budget until its reset at ")
    assert "0 of 10 requests left" in banner
    assert ", every request held since " in banner


async def test_a_wedged_poller_still_shows_growing_lag_and_drops_stale_data(
    start_simulator: StartSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll loop dies (a bug) and nothing is published any more: scrapes still show the
    lag growing, and past STALE_AFTER the data goes and campaign_up is 0."""
    sim = await start_simulator([campaign("cmp_a")])
    clock = OffsetClock()
    settings = exporter_settings(sim, ["cmp_a"], poll_interval_seconds=0.2, stale_after_seconds=60)
    app, server = await _serve_with_clock(settings, clock)
    try:
        await wait_for(lambda: app[EXPOSITION].current.ready, what="first poll round")

        def broken(self: Poller) -> float:
            raise RuntimeError("a bug in the poll loop")

        monkeypatch.setattr(Poller, "_next_wakeup", broken)
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "dialnexa-poller"]
        await wait_for(task.done, what="the poll loop to die")
        fresh = await _scrape(server)
        assert up(fresh, "cmp_a") == 1
        before = value(fresh, "dialnexa_exporter_poll_overdue_seconds")
        assert before is not None
        clock.advance(30)
        later = await _scrape(server)
        assert up(later, "cmp_a") == 1  # 30 s old: still within STALE_AFTER
        lag = value(later, "dialnexa_exporter_poll_overdue_seconds")
        assert lag is not None
        assert lag >= before + 29
        age = value(later, "dialnexa_exporter_oldest_campaign_data_age_seconds")
        assert age is not None
        assert age >= 30
        clock.advance(35)  # past STALE_AFTER and the grace the poller would have had
        stale = await _scrape(server)
        assert up(stale, "cmp_a") == 0
        assert not series_for(stale, "cmp_a")
        assert (value(stale, "dialnexa_exporter_poll_overdue_seconds") or 0) >= 60
        (banner,) = StatusPageParser(await _page(server)).banners
        assert banner.startswith("Polling is behind a campaign due since ")
    finally:
        await server.close()


async def test_unparseable_redirects_are_counted_failures_without_tracebacks(
    start_simulator: StartSim, start_exporter: StartExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """Locations the client cannot parse (an unclosed IPv6 literal, a port out of range): every
    fetch is an invalid_response failure, logged without a traceback and never at ERROR."""
    caplog.set_level(logging.DEBUG)
    sim = await start_simulator([campaign("cmp_v6"), campaign("cmp_port")])
    sim.sim.set_fault(Fault(FaultKind.REDIRECT, status=302, location="http://[::1"), "cmp_v6")
    far = Fault(FaultKind.REDIRECT, status=302, location="http://127.0.0.1:99999/x")
    sim.sim.set_fault(far, "cmp_port")
    exporter = await start_exporter(exporter_settings(sim, ["cmp_v6", "cmp_port"]))
    await wait_for(lambda: sim.sim.stats.requests >= 6, what="repeated failed fetches")
    samples = await exporter.samples()
    for cid in ("cmp_v6", "cmp_port"):
        assert errors(samples, cid, "invalid_response") >= 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("log_format", ["text", "logfmt", "json"])
async def test_upstream_text_reaches_the_log_escaped_in_every_format(
    start_exporter: StartExporter, caplog: pytest.LogCaptureFixture, log_format: str
) -> None:
    """A redirect to a Location holding 60 backspaces, ESC c and a vertical tab: the failure's
    log line, as the exporter's formatter writes it in this format, carries them escaped."""
    caplog.set_level(logging.DEBUG)
    formatter = RedactingFormatter(formatter_for(log_format))
    async with upstream_running(hostile_upstream) as upstream:
        settings = load_settings(
            {
                "api_url": upstream.api_url,
                "api_key": SecretStr(API_KEY),
                "campaign_ids": ["cmp_loc", "cmp_name"],
                "poll_interval_seconds": 0.05,
                "listen_address": "127.0.0.1:0",
            }
        )
        await start_exporter(settings)
        await wait_for(
            lambda: any("evil" in r.getMessage() for r in caplog.records),
            what="the failed redirect logged",
        )
    lines = [formatter.format(record) for record in caplog.records]
    assert [line for line in lines if unprintable(line)] == []
    escaped = "\\x08" * 60 + "\\x1bc\\x0b"
    if log_format != "text":  # logfmt and JSON escape the backslashes once more
        escaped = escaped.replace("\\", "\\\\")
    assert any(escaped in line for line in lines)
