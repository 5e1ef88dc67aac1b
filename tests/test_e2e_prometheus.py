"""End to end: the simulator, the exporter and a real Prometheus running the canonical rules.

The simulator runs SPEED times faster than real time and every duration of the rule copy that
Prometheus loads is divided by the same SPEED (``scale_rule_durations``), so the alerts judge
simulated time: the Paused alert's hour becomes 20 s, the Stalled alert's 15 minutes 5 s.
The canonical file itself is only read.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.config import load_settings
from exporter.demo.process import duration_seconds
from exporter.demo.prometheus import render_config
from exporter.demo.simulator import Fault, FaultKind, RateLimitPolicy
from exporter.exposition.status_page import BEHIND_MIN_SECONDS
from tests.helpers import (
    API_KEY,
    FAILING,
    JOB,
    MIN_WINDOW_SECONDS,
    PAUSED,
    RULE_FILE,
    SCRAPE_SECONDS,
    SPEED,
    STALLED,
    RunningExporter,
    StartExporter,
    StartSim,
    StatusPageParser,
    alert_rules,
    campaign,
    dashboard_queries,
    e2e_campaigns,
    exporter_settings,
    recording_rule_names,
    resolve_query_result_variables,
    shortened_rules,
    value,
    variable,
    wait_for,
)
from tests.prometheus_server import (
    PrometheusServer,
    sample_values,
    start_prometheus,
    write_rules,
)

pytestmark = pytest.mark.e2e

StartPrometheus = Callable[..., Awaitable[PrometheusServer]]

QUIET = ("cmp_demo_progress", "cmp_demo_complete", "cmp_demo_scheduled", "cmp_demo_legacy")
EXPECTED_ALERTS = {
    ("DialNexaCampaignPaused", PAUSED),
    ("DialNexaCampaignStalled", STALLED),
    ("DialNexaCampaignFetchFailing", FAILING),
}


def shortened_copy() -> list[dict[str, Any]]:
    """Every rule of the shortened copy."""
    return [rule for group in shortened_rules()["groups"] for rule in group["rules"]]


def has_finite_sample(result: list[dict[str, Any]]) -> bool:
    """Whether a query result holds at least one sample that is a number (not NaN or Inf)."""
    return any(math.isfinite(found) for found in sample_values(result))


def has_data(server: PrometheusServer, expr: str) -> bool:
    """Whether an instant query of ``expr`` returns at least one sample that is a number."""
    return has_finite_sample(server.query(expr))


def active_alerts(server: PrometheusServer, state: str | None = None) -> set[tuple[str, str]]:
    """(alertname, campaign_id) of the pending and firing alerts, or of those in ``state``."""
    return {
        (alert["labels"]["alertname"], alert["labels"].get("campaign_id", ""))
        for alert in server.alerts()
        if state is None or alert["state"] == state
    }


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[StartPrometheus]:
    """Factory: a real Prometheus scraping one target every second with the shortened rules."""
    started: list[PrometheusServer] = []

    async def start(target: str, document: dict[str, Any] | None = None) -> PrometheusServer:
        workdir = tmp_path / "prometheus"
        rules = write_rules(workdir, "dialnexa-exporter.rules.yml", document or shortened_rules())
        config = render_config(
            targets=[target],
            rule_files=[rules],
            scrape_interval_seconds=SCRAPE_SECONDS,
            evaluation_interval_seconds=SCRAPE_SECONDS,
            job=JOB,
        )
        server = await asyncio.to_thread(start_prometheus, workdir, config)
        started.append(server)
        return server

    yield start
    for server in started:
        await asyncio.to_thread(server.stop)


def test_shortened_rules_divide_every_duration_and_keep_the_canonical_file() -> None:
    """The copy's for/windows/offsets are the canonical ones over SPEED; the file is unchanged."""
    before = RULE_FILE.read_bytes()
    shortened = {
        rule.get("alert") or rule["record"]: rule
        for group in shortened_rules()["groups"]
        for rule in group["rules"]
    }
    for rule in alert_rules():
        copy = shortened[rule["alert"]]
        expected = max(1, math.ceil(duration_seconds(rule["for"]) / SPEED))
        assert copy["for"] == f"{expected}s", rule["alert"]
    stalled = shortened["DialNexaCampaignStalled"]["expr"]
    assert "[15m]" not in stalled
    assert stalled.count("[5s]") == 4  # changes, active, other status, calling window
    assert "offset 5s" in stalled
    assert "[1d]" not in shortened["DialNexaCampaignPaused"]["expr"]
    assert "[480s]" in shortened["DialNexaCampaignPaused"]["expr"]
    assert "deriv(dialnexa_campaign_completed_calls[4s])" in str(
        shortened["campaign:dialnexa_campaign_completed_calls:deriv5m"]["expr"]
    )
    assert RULE_FILE.read_bytes() == before


@pytest.mark.parametrize("status_series", ["all", "current"])
async def test_dashboard_rules_and_alerts_against_a_real_prometheus(
    start_simulator: StartSim,
    start_exporter: StartExporter,
    prometheus: StartPrometheus,
    status_series: str,
) -> None:
    """Every panel query and recording rule has data; pause and stall alert, the others don't;
    the same with either DIALNEXA_STATUS_SERIES mode."""
    campaigns = {c.id: c for c in e2e_campaigns()}
    sim = await start_simulator(campaigns.values(), speed=SPEED)
    sim.sim.set_fault(Fault(FaultKind.STATUS, status=503), FAILING)
    campaign_ids = sorted(sim.sim.campaigns)
    settings = exporter_settings(
        sim, campaign_ids, poll_interval_seconds=0.5, status_series=status_series
    )
    exporter = await start_exporter(settings)
    server = await prometheus(f"127.0.0.1:{exporter.server.port}")
    began = time.time()

    # Scraped: the target is up under the job the dashboard and the health alerts expect.
    await wait_for(
        lambda: server.query(f'up{{job="{JOB}"}} == 1'),
        30,
        "the first successful scrape",
        interval=0.25,
        in_thread=True,
    )

    # Prometheus loaded every rule of the copy, with the shortened `for` durations.
    groups = await asyncio.to_thread(server.rule_groups)
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == {rule.get("alert") or rule.get("record") for rule in shortened_copy()}
    for rule in alert_rules():
        expected = max(1, math.ceil(duration_seconds(rule["for"]) / SPEED))
        assert loaded[rule["alert"]]["duration"] == expected, rule["alert"]

    # The dashboard's variables: label_values() finds the job and every campaign.
    jobs = await asyncio.to_thread(server.label_values, "job", "dialnexa_exporter_build_info")
    assert JOB in jobs
    await wait_for(
        lambda: (
            sorted(
                server.label_values("campaign_id", f'dialnexa_exporter_campaign_up{{job=~"{JOB}"}}')
            )
            == campaign_ids
        ),
        10,
        "every campaign in the campaign variable",
        interval=0.25,
        in_thread=True,
    )

    # Every recording rule produces numbers.
    for record in sorted(recording_rule_names()):
        await wait_for(
            partial(has_data, server, record),
            30,
            f"{record} values",
            interval=0.25,
            in_thread=True,
        )

    # The paused and the stalled campaign fire their alerts (and the failing one its own).
    await wait_for(
        lambda: active_alerts(server, "firing") >= EXPECTED_ALERTS,
        60,
        "the paused, stalled and fetch-failing alerts to fire",
        interval=0.25,
        in_thread=True,
    )
    by_campaign = {
        (alert["labels"]["alertname"], alert["labels"].get("campaign_id")): alert
        for alert in await asyncio.to_thread(server.alerts)
    }
    paused = by_campaign[("DialNexaCampaignPaused", PAUSED)]
    assert paused["labels"]["name"] == campaigns[PAUSED].name
    assert paused["labels"]["severity"] == "warning"
    stalled = by_campaign[("DialNexaCampaignStalled", STALLED)]
    assert stalled["labels"]["name"] == campaigns[STALLED].name
    stall = campaigns[STALLED]
    assert stall.stall_at is not None
    # The alert's value is the pending calls, frozen where the stall began.
    assert float(stalled["value"]) == stall.total_leads - int(stall.stall_at * stall.total_leads)
    assert STALLED in stalled["annotations"]["description"]

    # The quiet campaigns went through their own scenarios meanwhile ...
    states = {
        "cmp_demo_progress": "active",
        "cmp_demo_complete": "completed",  # completed after 13 s
        "cmp_demo_scheduled": "active",  # started at simulated second 1200, i.e. after 7 s
        "cmp_demo_legacy": "running",
        PAUSED: "paused",
    }
    for cid, status in states.items():
        selector = f'dialnexa_campaign_status{{campaign_id="{cid}", status="{status}"}} == 1'
        assert await asyncio.to_thread(server.query, selector), f"{cid} is not {status}"

    # In `current` mode Prometheus holds no 0-valued status series at all.
    zeros = await asyncio.to_thread(server.query, "dialnexa_campaign_status == 0")
    assert bool(zeros) is (status_series == "all")

    # ... and no campaign alert was ever pending or firing for them; nothing else is active now.
    elapsed = math.ceil(time.time() - began) + 5
    quiet = "|".join(QUIET)
    history = await asyncio.to_thread(
        server.query,
        f'count_over_time(ALERTS{{alertname=~"DialNexaCampaign.+", campaign_id=~"{quiet}"}}'
        f"[{elapsed}s])",
    )
    assert history == [], history
    assert await asyncio.to_thread(active_alerts, server) == EXPECTED_ALERTS

    # Every dashboard panel query, variables as Grafana would substitute them, returns numbers.
    now = time.time()
    variables: Mapping[str, str] = {
        "datasource": "prometheus",
        "job": JOB,
        "campaign": variable("campaign")["allValue"],  # "All"
        "__rate_interval": f"{MIN_WINDOW_SECONDS}s",
        "__interval": f"{SCRAPE_SECONDS}s",
        "__range": f"{math.ceil(now - began)}s",
        "__range_s": str(math.ceil(now - began)),
    }
    # The hidden top-N variables, as Grafana resolves them with "All" selected.
    variables = {
        **variables,
        **await asyncio.to_thread(resolve_query_result_variables, server.query, variables),
    }
    queries = dashboard_queries(variables)
    assert len(queries) >= 15
    for query in queries:
        where = f"panel {query.panel!r} query {query.ref_id}: {query.expr}"
        await wait_for(
            partial(has_data, server, query.expr),
            10,
            where,
            interval=0.25,
            in_thread=True,
        )
        if not query.instant:
            result = await asyncio.to_thread(
                server.query_range, query.expr, began, time.time(), SCRAPE_SECONDS
            )
            assert has_finite_sample(result), f"range query of {where}"


# --- stale data: polling stopped by pacing, and by a fetch that never ends -----------------------

STALE_ALERT = "DialNexaExporterDataStale"
# The alert's 300 s threshold in the test's copy (its `for` is divided by SPEED like the others).
STALE_THRESHOLD_SECONDS = 2
STALE_RECORD = {"status": "active", "total_leads": 10, "completed_calls": 1, "pending_calls": 9}


def stale_alert_rules() -> dict[str, Any]:
    """The shortened rule copy with DialNexaExporterDataStale's threshold cut to seconds."""
    document = shortened_rules()
    (rule,) = [r for g in document["groups"] for r in g["rules"] if r.get("alert") == STALE_ALERT]
    assert rule["expr"].count("> 300") == 1, rule["expr"]
    rule["expr"] = rule["expr"].replace("> 300", f"> {STALE_THRESHOLD_SECONDS}")
    return document


class HangingUpstream:
    """A scripted DialNexa API on loopback: answers every GET with an active record until told
    to hang, then accepts requests and never answers them."""

    def __init__(self) -> None:
        self.hang = False
        self.answered = 0
        self.hanging = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def api_url(self) -> str:
        """The base URL to configure the exporter with."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                if self.hang:
                    self.hanging += 1
                    await reader.read()  # until the exporter gives up on the connection
                    return
                cid = head.split(b" ", 2)[1].rsplit(b"/", 1)[-1].decode()
                body = json.dumps({"id": cid, **STALE_RECORD}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def hanging_upstream() -> AsyncIterator[HangingUpstream]:
    """A started HangingUpstream, stopped after the test."""
    upstream = HangingUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


def stale_alerts(server: PrometheusServer, state: str) -> list[dict[str, Any]]:
    """The DialNexaExporterDataStale alerts in ``state``."""
    return [
        alert
        for alert in server.alerts()
        if alert["labels"]["alertname"] == STALE_ALERT and alert["state"] == state
    ]


async def quiet_then_stale(
    prometheus: StartPrometheus, exporter: RunningExporter, stop: Callable[[], None]
) -> dict[str, Any]:
    """With the exporter polling well, Prometheus sees no lag and no stale-data alert; once
    ``stop`` stops polling, the alert fires. Returns the firing alert."""
    target = f"127.0.0.1:{exporter.server.port}"
    server = await prometheus(target, stale_alert_rules())
    await wait_for(
        lambda: server.query("dialnexa_exporter_poll_overdue_seconds < 1"),
        30,
        "a healthy exporter's lag in Prometheus",
        interval=0.25,
        in_thread=True,
    )
    assert await asyncio.to_thread(stale_alerts, server, "pending") == []
    assert await asyncio.to_thread(stale_alerts, server, "firing") == []
    stop()
    (alert,) = await wait_for(
        lambda: stale_alerts(server, "firing"),
        60,
        "the stale-data alert to fire",
        interval=0.25,
        in_thread=True,
    )
    assert alert["labels"]["instance"] == target
    assert alert["labels"]["severity"] == "critical"
    assert float(alert["value"]) > STALE_THRESHOLD_SECONDS
    return alert


async def test_polling_held_by_the_api_budget_fires_the_stale_data_alert(
    start_simulator: StartSim, start_exporter: StartExporter, prometheus: StartPrometheus
) -> None:
    """The API's headers leave no budget (0 left, the reset ten minutes away): the exporter
    holds every request, the lag grows, and a real Prometheus fires DialNexaExporterDataStale;
    the status page says the budget holds polling."""
    sim = await start_simulator([campaign("cmp_a"), campaign("cmp_b")])
    exporter = await start_exporter(
        exporter_settings(sim, ["cmp_a", "cmp_b"], poll_interval_seconds=0.2)
    )
    await exporter.wait_ready()

    def exhaust_budget() -> None:
        sim.sim.set_rate_limit(RateLimitPolicy(limit=10, window=600))
        sim.sim.spend(9)  # the next answer says 0 left

    await quiet_then_stale(prometheus, exporter, exhaust_budget)
    requests = sim.sim.stats.requests
    _, _, body = await exporter.get("/")
    (banner,) = StatusPageParser(body.decode()).banners
    assert banner.startswith("Polling paused by the API budget until its reset")
    assert sim.sim.stats.requests == requests  # held: no request went out meanwhile


async def test_a_fetch_that_never_ends_fires_the_stale_data_alert(
    hanging_upstream: HangingUpstream, start_exporter: StartExporter, prometheus: StartPrometheus
) -> None:
    """The API accepts requests and never answers (the request timeout an hour): no fetch
    fails, none ends, the lag grows, and a real Prometheus fires DialNexaExporterDataStale;
    the status page says polling is behind."""
    settings = load_settings(
        {
            "api_url": hanging_upstream.api_url,
            "api_key": SecretStr(API_KEY),
            "campaign_ids": ["cmp_a", "cmp_b"],
            "poll_interval_seconds": 0.2,
            "request_timeout_seconds": 3600,
            "listen_address": "127.0.0.1:0",
        }
    )
    exporter = await start_exporter(settings)
    await exporter.wait_ready()

    def hang() -> None:
        hanging_upstream.hang = True

    await quiet_then_stale(prometheus, exporter, hang)
    assert hanging_upstream.hanging >= 1
    samples = await exporter.samples()
    # Behind, but its data is younger than STALE_AFTER: still shown, still up.
    assert value(samples, "dialnexa_exporter_campaign_up", campaign_id="cmp_a") == 1
    banners: list[str] = []

    async def behind() -> bool:
        nonlocal banners
        _, _, body = await exporter.get("/")
        banners = StatusPageParser(body.decode()).banners
        return bool(banners)

    await wait_for(behind, within=BEHIND_MIN_SECONDS + 5, what="the page's banner")
    (banner,) = banners
    assert banner.startswith("Polling is behind a campaign due since ")
