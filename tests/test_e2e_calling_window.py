"""End to end: the calling window from the exporter's setting to a real Prometheus running the
canonical stall rule, and to the status page, with the simulator as the upstream.

The simulator runs SPEED times faster than real time and the rules Prometheus loads are divided
by the same factor (as in test_e2e_prometheus.py); the exporters' stall threshold is scaled
the same way, so the page and the alert judge the same simulated 15 minutes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.calling_window import DAYS
from exporter.demo.prometheus import render_config
from exporter.demo.simulator import demo_campaigns
from tests.helpers import (
    JOB,
    MIN_WINDOW_SECONDS,
    SCRAPE_SECONDS,
    SPEED,
    STALLED,
    RunningExporter,
    StartExporter,
    StartSim,
    StatusPageParser,
    exporter_settings,
    shortened_rules,
    wait_for,
)
from tests.prometheus_server import PrometheusServer, start_prometheus, write_rules

pytestmark = pytest.mark.e2e

# The stall alert's 15 minutes divided by SPEED, as shortened_rules() divides its windows.
STALL_AFTER_SECONDS = max(MIN_WINDOW_SECONDS, math.ceil(900 / SPEED))


def stall_alerts(server: PrometheusServer) -> dict[str, str]:
    """instance → state of every pending or firing DialNexaCampaignStalled."""
    return {
        alert["labels"]["instance"]: alert["state"]
        for alert in server.alerts()
        if alert["labels"]["alertname"] == "DialNexaCampaignStalled"
    }


async def page_of(exporter: RunningExporter) -> StatusPageParser:
    """``exporter``'s status page, parsed; it shows the one stalled campaign."""
    status, _, body = await exporter.get("/")
    assert status == 200
    parsed = StatusPageParser(body.decode())
    assert len(parsed.rows) == 1
    return parsed


async def test_a_closed_window_holds_the_stall_alert_and_the_page_agrees(
    start_simulator: StartSim, start_exporter: StartExporter, tmp_path: Path
) -> None:
    """Two exporters watch the same stalled campaign, one always open, one whose window is a
    day that is not today: Prometheus fires the stall for the first only, never even pending
    for the second, and each status page says the same as its alert."""
    stall = next(c for c in demo_campaigns() if c.id == STALLED)
    sim = await start_simulator([dataclasses.replace(stall, stall_at=0.05)], speed=SPEED)
    other_day = DAYS[(datetime.now(UTC).weekday() + 3) % 7].capitalize()
    closed_window = f"{other_day} 00:00-24:00 UTC"
    exporters = {
        window: await start_exporter(
            exporter_settings(
                sim,
                [STALLED],
                poll_interval_seconds=0.5,
                calling_window=window,
                stall_after_seconds=STALL_AFTER_SECONDS,
            )
        )
        for window in ("always", closed_window)
    }
    targets = {window: f"127.0.0.1:{e.server.port}" for window, e in exporters.items()}
    workdir = tmp_path / "prometheus"
    rules = write_rules(workdir, "dialnexa-exporter.rules.yml", shortened_rules())
    config = render_config(
        targets=list(targets.values()),
        rule_files=[rules],
        scrape_interval_seconds=SCRAPE_SECONDS,
        evaluation_interval_seconds=SCRAPE_SECONDS,
        job=JOB,
    )
    server = await asyncio.to_thread(start_prometheus, workdir, config)
    try:
        seen: set[str] = set()

        def fired_for_the_open_one() -> bool:
            alerts = stall_alerts(server)
            seen.update(alerts)
            return alerts.get(targets["always"]) == "firing"

        await wait_for(fired_for_the_open_one, 60, "the stall alert", interval=0.25, in_thread=True)
        assert targets[closed_window] not in seen
        gauge = await asyncio.to_thread(server.query, "dialnexa_exporter_calling_window_open")
        by_instance = {s["metric"]["instance"]: s["value"][1] for s in gauge}
        assert by_instance == {targets["always"]: "1", targets[closed_window]: "0"}
        (open_row,) = (await page_of(exporters["always"])).rows
        assert open_row.css == "stalled"
        assert open_row.cells[5].startswith("stalled: dialling with calls pending")
        closed = await page_of(exporters[closed_window])
        assert closed.rows[0].css == "ok"
        assert closed.rows[0].cells[7] == "— outside calling window"
        assert f"{closed_window} (closed now: no stalls judged)" in closed.text
    finally:
        await asyncio.to_thread(server.stop)
