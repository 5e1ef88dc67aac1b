"""The demo's Alertmanager: its configuration, the terminal lines, the receiver under hostile
input, and the process with its receiver started and stopped for real.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from exporter.demo.alertmanager import (
    MAX_FIELD_CHARS,
    MAX_NOTIFICATION_BYTES,
    MAX_PRINTED_ALERTS,
    NOTIFY_PATH,
    Notification,
    NotifiedAlert,
    alert_line,
    alertmanager_command,
    demo_config,
    notification_lines,
    print_notification,
    printable,
    receiver_app,
    scale_route_timings,
    start_demo_alertmanager,
)
from exporter.demo.process import ServerStartError, duration_seconds
from exporter.demo.prometheus import SCRAPE_INTERVAL_SECONDS, WINDOW_SCRAPES, scale_rule_durations
from exporter.demo.simulator import CALL_SECONDS, demo_campaigns
from tests.alertmanager_server import alertmanager_binary
from tests.helpers import RULE_FILE, amtool, load_config, load_yaml, serve, wait_for
from tests.prometheus_server import free_port, port_is_open

RUNBOOK = "https://github.com/dialnexa/dialnexa-exporter/blob/main/docs/alerts.md"
DEMO_SPEED = 60.0  # the demo's default --speed


def notification(*alerts: Mapping[str, Any], status: str = "firing") -> Notification:
    """A notification as Alertmanager's webhook sends it, with the given alerts."""
    return Notification.model_validate(
        {"receiver": "dialnexa-tickets", "status": status, "alerts": list(alerts)}
    )


def paused(status: str = "firing", **labels: str) -> dict[str, Any]:
    """A DialNexaCampaignPaused alert of the webhook payload."""
    return {
        "status": status,
        "labels": {
            "alertname": "DialNexaCampaignPaused",
            "severity": "warning",
            "campaign_id": "cmp_demo_pause",
            "name": "Renewal Reminders",
            **labels,
        },
        "annotations": {"runbook_url": f"{RUNBOOK}#dialnexacampaignpaused"},
    }


# --- configuration ---------------------------------------------------------------------------


def test_scale_route_timings_divides_every_level_with_a_floor() -> None:
    """Route timings shrink by the speed, in whole seconds (at least 1); nothing else changes."""
    route = {
        "receiver": "a",
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
        "routes": [{"receiver": "b", "repeat_interval": "1h", "routes": [{"group_wait": "90s"}]}],
    }
    assert scale_route_timings(route, 60) == {
        "receiver": "a",
        "group_wait": "1s",
        "group_interval": "5s",
        "repeat_interval": "720s",
        "routes": [{"receiver": "b", "repeat_interval": "60s", "routes": [{"group_wait": "2s"}]}],
    }
    assert route["group_wait"] == "30s"  # a copy, the input is unchanged
    with pytest.raises(ValueError, match="speed"):
        scale_route_timings(route, 0)
    with pytest.raises(ValueError, match="duration"):
        scale_route_timings({"group_wait": "soon"}, 60)


def test_demo_config_posts_every_receiver_to_the_demo_and_passes_amtool(tmp_path: Path) -> None:
    """Every receiver becomes one webhook (resolved too); routes and inhibitions otherwise stay."""
    canonical = load_config()
    url = "http://127.0.0.1:5/notify"
    config = demo_config(canonical, url, DEMO_SPEED)
    assert [r["name"] for r in config["receivers"]] == [r["name"] for r in canonical["receivers"]]
    for receiver in config["receivers"]:
        assert receiver["webhook_configs"] == [{"url": url, "send_resolved": True}]
    assert config["inhibit_rules"] == canonical["inhibit_rules"]
    assert config["route"] == scale_route_timings(canonical["route"], DEMO_SPEED)
    assert canonical == load_config(), "the canonical document was modified"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [amtool(), "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_command_runs_alone_with_its_own_storage() -> None:
    """Clustering is off (a lone demo needs no gossip port) and storage is the given directory."""
    argv = alertmanager_command("am", Path("c.yml"), Path("d"), "127.0.0.1:9")
    assert argv[0] == "am"
    assert "--cluster.listen-address=" in argv
    assert "--config.file=c.yml" in argv
    assert "--storage.path=d" in argv
    assert "--web.listen-address=127.0.0.1:9" in argv


def test_demo_scenario_notifies_within_a_few_minutes() -> None:
    """At the default speed, the paused and stalled alerts fire within 3 minutes of the start,
    and the paused one resolves within 4, as the quick start promises.
    """
    rules = scale_rule_durations(
        load_yaml(RULE_FILE.read_text(encoding="utf-8")),
        DEMO_SPEED,
        WINDOW_SCRAPES * SCRAPE_INTERVAL_SECONDS,
    )
    alerts = {
        rule["alert"]: rule
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    route = scale_route_timings(load_config()["route"], DEMO_SPEED)["routes"][0]
    group_wait = duration_seconds(route["group_wait"])
    group_interval = duration_seconds(route["group_interval"])
    campaigns = {c.id: c for c in demo_campaigns()}

    def reached(campaign_id: str, fraction: float) -> float:
        """Real seconds until a campaign has completed ``fraction`` of its leads."""
        demo = campaigns[campaign_id]
        return fraction * demo.total_leads * CALL_SECONDS / demo.max_concurrent_calls / DEMO_SPEED

    # Each judgement can lag by one scrape and one evaluation (5 s each).
    lag = 2 * SCRAPE_INTERVAL_SECONDS
    pause = campaigns["cmp_demo_pause"]
    assert pause.pause_at is not None
    paused_at = reached("cmp_demo_pause", pause.pause_at)
    paused_told = paused_at + duration_seconds(alerts["DialNexaCampaignPaused"]["for"])
    stall = campaigns["cmp_demo_stall"]
    assert stall.stall_at is not None
    stalled = alerts["DialNexaCampaignStalled"]
    # Calls must stand still for a whole window before the `for` starts.
    (window,) = re.findall(r"changes\(dialnexa_campaign_completed_calls\[(\d+)s\]", stalled["expr"])
    stalled_told = (
        reached("cmp_demo_stall", stall.stall_at) + int(window) + duration_seconds(stalled["for"])
    )
    resumed = paused_at + pause.resume_after / DEMO_SPEED
    resolved_told = resumed + duration_seconds(alerts["DialNexaCampaignPaused"]["keep_firing_for"])
    assert resumed > paused_told + lag + group_wait, "the pause ends before it is told"
    assert paused_told + lag + group_wait < 180
    assert stalled_told + lag + group_wait < 180
    assert resolved_told + lag + group_interval < 240


# --- terminal lines --------------------------------------------------------------------------


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    """Escape sequences, C1 controls, line breaks and bidi overrides are shown, not obeyed."""
    assert printable('Survey "Müller" \\ São Paulo') == 'Survey "Müller" \\ São Paulo'
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("a\x9b31mb") == "a\\x9b31mb"
    assert printable("line\nbreak\r") == "line\\x0abreak\\x0d"
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert printable("\U000e0041tag") == "\\U000e0041tag"
    assert printable("x" * (MAX_FIELD_CHARS + 5)) == "x" * MAX_FIELD_CHARS + "…"


def test_alert_line_names_status_alert_severity_campaign_and_runbook() -> None:
    """A campaign alert's line carries all a person needs to start, on one line."""
    (firing,) = notification(paused()).alerts
    assert alert_line(firing) == (
        '  Alert FIRING: DialNexaCampaignPaused (warning), campaign "Renewal Reminders" '
        f"(cmp_demo_pause); runbook {RUNBOOK}#dialnexacampaignpaused"
    )
    (resolved,) = notification(paused("resolved"), status="resolved").alerts
    assert alert_line(resolved).startswith("  Alert RESOLVED: DialNexaCampaignPaused (warning),")


@pytest.mark.parametrize(
    ("labels", "subject"),
    [
        ({"campaign_id": "c1"}, "campaign (c1)"),
        ({"instance": "10.0.0.1:10027", "job": "x"}, "exporter 10.0.0.1:10027"),
        ({"job": "dnx-dialnexa-exporter"}, "job dnx-dialnexa-exporter"),
        ({}, "all exporters"),
    ],
    ids=["unnamed campaign", "exporter", "job", "no labels"],
)
def test_alert_line_subject_follows_the_labels(labels: dict[str, str], subject: str) -> None:
    """Campaign alerts name the campaign; exporter alerts their target or job; absent: all."""
    alert = NotifiedAlert(status="firing", labels={"alertname": "A", **labels})
    assert alert_line(alert) == f"  Alert FIRING: A (no severity), {subject}"


def test_hostile_labels_stay_on_one_escaped_line() -> None:
    """A campaign name with a newline and an escape sequence cannot forge or colour lines."""
    (alert,) = notification(paused(name="x\n  Alert RESOLVED: fake\x1b[31m")).alerts
    line = alert_line(alert)
    assert "\n" not in line
    assert "\x1b" not in line
    assert '"x\\x0a  Alert RESOLVED: fake\\x1b[31m"' in line


def test_a_huge_notification_prints_a_screenful() -> None:
    """At most MAX_PRINTED_ALERTS lines per notification, then one line counting the rest."""
    many = notification(*(paused(campaign_id=f"c{n}") for n in range(MAX_PRINTED_ALERTS + 7)))
    lines = notification_lines(many)
    assert len(lines) == MAX_PRINTED_ALERTS + 1
    assert lines[-1] == "  ... and 7 more alerts in this notification"


# --- the receiver ----------------------------------------------------------------------------


async def test_receiver_hands_over_notifications_and_refuses_the_rest() -> None:
    """Valid webhook bodies reach the callback; junk is 400, too big 413, other methods 405."""
    received: list[Notification] = []
    server = await serve(receiver_app(received.append))
    try:
        url = str(server.make_url(NOTIFY_PATH))
        valid = {"receiver": "r", "status": "firing", "alerts": [paused()], "version": "4"}
        junk: list[bytes] = [
            b"",
            b"not json",
            b"[]",
            b'{"receiver": "r", "status": "firing"}',
            json.dumps({**valid, "alerts": [{"status": "firing", "labels": {"a": 1}}]}).encode(),
            json.dumps({**valid, "alerts": "many"}).encode(),
            b'{"receiver": "r", "status": "firing", "alerts": [' + b"[" * 100_000 + b"]",
            "{\udcff}".encode("utf-8", "surrogatepass"),
        ]
        async with aiohttp.ClientSession() as session:
            for body in junk:
                async with session.post(url, data=body) as response:
                    assert response.status == 400, body[:60]
            huge = b'{"receiver": "' + b"x" * MAX_NOTIFICATION_BYTES + b'"}'
            async with session.post(url, data=huge) as response:
                assert response.status == 413
            async with session.get(url) as response:
                assert response.status == 405
            async with session.post(str(server.make_url("/other")), json=valid) as response:
                assert response.status == 404
            assert received == []
            async with session.post(url, json=valid) as response:
                assert response.status == 200
        (notified,) = received
        assert notified.alerts[0].labels["campaign_id"] == "cmp_demo_pause"
    finally:
        await server.close()


def test_print_notification_writes_one_line_per_alert(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's callback prints each alert's line and nothing else."""
    print_notification(notification(paused(), paused(campaign_id="c2", name="Other")))
    out = capsys.readouterr().out
    assert out.count("\n") == 2
    assert '"Renewal Reminders" (cmp_demo_pause)' in out
    assert '"Other" (c2)' in out


# --- the process, for real -------------------------------------------------------------------


def entries(directory: Path) -> list[str]:
    """Names in ``directory``: what a test left behind there."""
    return sorted(os.listdir(directory))


@pytest.mark.e2e
async def test_demo_alertmanager_delivers_to_its_receiver_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An alert sent to the demo's Alertmanager comes out of its receiver; stop removes all."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    received: list[Notification] = []
    port = free_port()
    running = await start_demo_alertmanager(
        alertmanager_binary(),
        listen_address=f"127.0.0.1:{port}",
        speed=DEMO_SPEED,
        on_notification=received.append,
    )
    try:
        assert running.url == f"http://127.0.0.1:{port}"
        assert len(entries(tmp_path)) == 1
        (receiver_address,) = running.receiver.addresses
        now = datetime.now(UTC)
        alert = paused()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{running.url}/api/v2/alerts",
                json=[
                    {
                        "labels": alert["labels"],
                        "annotations": alert["annotations"],
                        "startsAt": now.isoformat(),
                        "endsAt": (now + timedelta(hours=1)).isoformat(),
                    }
                ],
            ) as response,
        ):
            assert response.status == 200
        # group_wait is 30 s / 60: the notification follows within a few seconds.
        await wait_for(lambda: bool(received), within=20, what="the demo receiver's notification")
        (notified,) = received[:1]
        assert notified.receiver == "dialnexa-tickets"
        assert alert_line(notified.alerts[0]).startswith("  Alert FIRING: DialNexaCampaignPaused")
    finally:
        process = running.server.process
        await running.stop()
    assert process.returncode is not None
    assert not port_is_open(port)
    assert not port_is_open(receiver_address[1])
    assert entries(tmp_path) == []


@pytest.mark.e2e
async def test_half_sent_notification_does_not_hold_the_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A client that sent headers and half a body to the receiver: stop still completes soon."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    received: list[Notification] = []
    running = await start_demo_alertmanager(
        alertmanager_binary(),
        listen_address=f"127.0.0.1:{free_port()}",
        speed=DEMO_SPEED,
        on_notification=received.append,
    )
    host, port = running.receiver.addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {NOTIFY_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        await writer.drain()
        # Well below aiohttp's default minute; RECEIVER_SHUTDOWN_SECONDS is 2.
        async with asyncio.timeout(20):
            await running.stop()
        assert await reader.read() == b""  # the server hung up on the half request
    finally:
        writer.close()
    assert received == []
    assert entries(tmp_path) == []


@pytest.mark.e2e
async def test_demo_alertmanager_that_cannot_bind_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A taken port: ServerStartError saying so, no directory, no receiver left listening."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match="address already in use"):
            await start_demo_alertmanager(
                alertmanager_binary(), listen_address=f"127.0.0.1:{port}", speed=DEMO_SPEED
            )
    assert entries(tmp_path) == []


def test_scaled_timings_keep_their_order() -> None:
    """Scaled for the demo, wait < interval <= repeat still holds at every level."""
    route = scale_route_timings(load_config()["route"], DEMO_SPEED)["routes"][0]
    wait, interval = (duration_seconds(route[k]) for k in ("group_wait", "group_interval"))
    assert wait < interval
    for child in route["routes"]:
        repeat = duration_seconds(child.get("repeat_interval", route["repeat_interval"]))
        assert interval <= repeat
    assert math.isclose(duration_seconds(route["group_interval"]), 300 / DEMO_SPEED)
