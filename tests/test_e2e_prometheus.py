"""End to end: the simulator, the exporter and a real Prometheus running the canonical rules.

The simulator runs SPEED times faster than real time and every duration of the rule copy that
Prometheus loads is divided by the same SPEED (``scale_rule_durations``), so the alerts judge
simulated time: the Paused alert's hour becomes 20 s, the Stalled alert's 15 minutes 5 s.
The canonical file itself is only read.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from exporter.demo.process import duration_seconds
from exporter.demo.prometheus import render_config
from exporter.demo.simulator import Fault, FaultKind
from tests.helpers import (
    FAILING,
    JOB,
    MIN_WINDOW_SECONDS,
    PAUSED,
    RULE_FILE,
    SCRAPE_SECONDS,
    SPEED,
    STALLED,
    StartExporter,
    StartSim,
    alert_rules,
    dashboard_queries,
    e2e_campaigns,
    exporter_settings,
    recording_rule_names,
    shortened_rules,
    variable,
)
from tests.prometheus_server import (
    PrometheusServer,
    sample_values,
    start_prometheus,
    write_rules,
)

pytestmark = pytest.mark.e2e

StartPrometheus = Callable[[str], Awaitable[PrometheusServer]]
T = TypeVar("T")

QUIET = ("cmp_demo_progress", "cmp_demo_complete", "cmp_demo_scheduled", "cmp_demo_legacy")
EXPECTED_ALERTS = {
    ("DialNexaCampaignPaused", PAUSED),
    ("DialNexaCampaignStalled", STALLED),
    ("DialNexaCampaignFetchFailing", FAILING),
}


def shortened_copy() -> list[dict[str, Any]]:
    """Every rule of the shortened copy."""
    return [rule for group in shortened_rules()["groups"] for rule in group["rules"]]


async def until(fetch: Callable[[], T], accept: Callable[[T], bool], within: float, what: str) -> T:
    """Run blocking ``fetch`` in a thread until ``accept`` takes its result, with a deadline."""
    deadline = time.monotonic() + within
    while True:
        result = await asyncio.to_thread(fetch)
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last: {result}")
        await asyncio.sleep(0.25)


def has_finite_sample(result: list[dict[str, Any]]) -> bool:
    """Whether a query result holds at least one sample that is a number (not NaN or Inf)."""
    return any(math.isfinite(found) for found in sample_values(result))


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

    async def start(target: str) -> PrometheusServer:
        workdir = tmp_path / "prometheus"
        rules = write_rules(workdir, "dialnexa-exporter.rules.yml", shortened_rules())
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
    assert stalled.count("[5s]") == 3
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
    await until(
        lambda: server.query(f'up{{job="{JOB}"}} == 1'), bool, 30, "the first successful scrape"
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
    found_ids = await until(
        lambda: server.label_values(
            "campaign_id", f'dialnexa_exporter_campaign_up{{job=~"{JOB}"}}'
        ),
        lambda ids: set(ids) == set(campaign_ids),
        10,
        "every campaign in the campaign variable",
    )
    assert sorted(found_ids) == campaign_ids

    # Every recording rule produces numbers.
    for record in sorted(recording_rule_names()):
        await until(partial(server.query, record), has_finite_sample, 30, f"{record} values")

    # The paused and the stalled campaign fire their alerts (and the failing one its own).
    await until(
        lambda: active_alerts(server, "firing"),
        lambda firing: firing >= EXPECTED_ALERTS,
        60,
        "the paused, stalled and fetch-failing alerts to fire",
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
    queries = dashboard_queries(variables)
    assert len(queries) >= 15
    for query in queries:
        where = f"panel {query.panel!r} query {query.ref_id}: {query.expr}"
        await until(partial(server.query, query.expr), has_finite_sample, 10, where)
        if not query.instant:
            result = await asyncio.to_thread(
                server.query_range, query.expr, began, time.time(), SCRAPE_SECONDS
            )
            assert has_finite_sample(result), f"range query of {where}"
