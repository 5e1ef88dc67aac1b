"""End to end, to what a person receives: simulator -> two exporter replicas -> Prometheus (the
canonical rules, durations divided by SPEED) -> Alertmanager (the canonical routing and
inhibitions, every receiver posting to a webhook served here).

One run walks what an on-call engineer lives through:
1. a campaign pauses and another stalls: each is told once per campaign (the replicas' twin alerts
   in one notification), with its name, severity, summary, description and runbook link;
2. one replica stops: its exporter-down alert pages, its campaign alerts are neither repeated nor
   told as resolved, while the other replica's keep being told;
3. the API rejects the key: the key alert pages, and the per-campaign fetch alerts that fire in
   Prometheus are held back, as are the campaign alerts;
4. the key works again: the key alert's resolution arrives, and no fetch alert is ever told.

Absence is proven with observed events, not a sleep: Alertmanager re-sends a firing group at
every group_interval here (repeat_interval is shorter), so two more notifications of a firing
group span a whole group_interval, in which every other group has been flushed at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from exporter.demo.alertmanager import TIMING_KEYS, with_webhook_receivers
from exporter.demo.prometheus import render_config
from exporter.demo.simulator import SimCampaign, Simulator
from tests.alertmanager_server import RunningAlertmanager, WebhookSink, start_alertmanager
from tests.helpers import (
    API_KEY,
    FAILING,
    JOB,
    PAUSED,
    SCRAPE_SECONDS,
    SPEED,
    STALLED,
    RunningExporter,
    StartExporter,
    StartSim,
    alert_rules,
    e2e_campaigns,
    exporter_settings,
    load_config,
    shortened_rules,
    wait_for,
)
from tests.prometheus_server import PrometheusServer, start_prometheus, write_rules

pytestmark = pytest.mark.e2e

TOLD = {("DialNexaCampaignPaused", PAUSED), ("DialNexaCampaignStalled", STALLED)}
KEY_ALERT = "DialNexaAPIKeyRejected"
DOWN_ALERT = "DialNexaExporterDown"
FETCH_ALERTS = frozenset({"DialNexaCampaignFetchFailing", "DialNexaCampaignNotFound"})
# Alertmanager's timings in the test's copy: a group is flushed every 2 s and a firing one re-sent
# at every flush (repeat shorter than the interval); group_wait below the interval.
GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL = "1s", "2s", "1s"
# The exporter retries a failing campaign after at most 10 poll intervals (plus jitter): 2.5 s
# here, well inside the key alert's keep_firing_for of 15m / SPEED = 5 s.
POLL_SECONDS = 0.2
# The exporter's default STALE_AFTER (5 minutes) in the simulated time of the rules.
STALE_AFTER_SECONDS = 300 / SPEED

Told = tuple[str, str, str, str]  # alertname, campaign_id, instance, status


def fast_timings(route: dict[str, Any]) -> dict[str, Any]:
    """A route tree with the test's timings wherever the canonical one sets a timing."""
    values = dict(zip(TIMING_KEYS, (GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL), strict=True))
    copy = {**route, **{key: values[key] for key in TIMING_KEYS if key in route}}
    if "routes" in route:
        copy["routes"] = [fast_timings(child) for child in route["routes"]]
    return copy


def test_config_copy_changes_only_receivers_and_timings() -> None:
    """The test's Alertmanager runs the canonical routes and inhibitions; only the receivers and
    the timings differ, and the timings only where the file sets them.
    """
    canonical = load_config()
    copy = with_webhook_receivers(canonical, "http://127.0.0.1:1/notify")
    copy["route"] = fast_timings(copy["route"])
    assert copy["inhibit_rules"] == canonical["inhibit_rules"]

    def without_timings(route: dict[str, Any]) -> dict[str, Any]:
        stripped = {k: v for k, v in route.items() if k not in TIMING_KEYS and k != "routes"}
        stripped["routes"] = [without_timings(child) for child in route.get("routes", [])]
        return stripped

    assert without_timings(copy["route"]) == without_timings(canonical["route"])
    subtree = copy["route"]["routes"][0]
    assert (subtree["group_wait"], subtree["group_interval"]) == (GROUP_WAIT, GROUP_INTERVAL)
    assert all(child["repeat_interval"] == REPEAT_INTERVAL for child in subtree["routes"][:1])


def told(sink: WebhookSink, since: int = 0) -> list[Told]:
    """Every alert notified from notification ``since`` on."""
    return [
        (
            alert.labels["alertname"],
            alert.labels.get("campaign_id", ""),
            alert.labels.get("instance", ""),
            alert.status,
        )
        for _, alert in sink.received(since)
    ]


def first_notification(sink: WebhookSink, name: str, since: int = 0) -> int:
    """Index of the first notification from ``since`` on that carries an alert ``name``."""
    return next(
        index
        for index, notification in enumerate(sink.notifications)
        if index >= since and any(a.labels["alertname"] == name for a in notification.alerts)
    )


def firing(server: PrometheusServer, names: Iterable[str]) -> set[tuple[str, str, str]]:
    """(alertname, campaign_id, instance) of the alerts among ``names`` firing in Prometheus."""
    wanted = set(names)
    return {
        (
            alert["labels"]["alertname"],
            alert["labels"].get("campaign_id", ""),
            alert["labels"].get("instance", ""),
        )
        for alert in server.alerts()
        if alert["state"] == "firing" and alert["labels"]["alertname"] in wanted
    }


async def a_whole_group_interval(sink: WebhookSink, name: str, what: str) -> None:
    """Wait for two more notifications carrying the firing alert ``name``: every other group has
    been flushed at least once meanwhile (see the module docstring).
    """
    mark = len(sink.notifications)

    def repeats() -> int:
        return sum(
            any(a.labels["alertname"] == name and a.status == "firing" for a in n.alerts)
            for n in sink.notifications[mark:]
        )

    await wait_for(lambda: repeats() >= 2, 20, what)


def describe(sink: WebhookSink, since: int = 0) -> str:
    """The last notifications from ``since`` on, one alert a line, for failure messages."""
    return "\n".join(
        f"{n.receiver}: {a.status} {a.labels.get('alertname')} {a.labels.get('campaign_id', '')} "
        f"{a.labels.get('instance', '')}"
        for n in sink.notifications[since:][-40:]
        for a in n.alerts
    )


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    """The webhook every receiver posts to."""
    webhook = WebhookSink()
    await webhook.start()
    yield webhook
    await webhook.close()


@pytest.fixture
async def alertmanager(tmp_path: Path, sink: WebhookSink) -> AsyncIterator[RunningAlertmanager]:
    """A real Alertmanager running the canonical file, receivers pointed at the sink."""
    config = with_webhook_receivers(load_config(), sink.url)
    config["route"] = fast_timings(config["route"])
    server = await start_alertmanager(tmp_path, config)
    yield server
    await server.stop()


async def test_alerts_reach_a_person_and_inhibitions_hold(
    tmp_path: Path,
    start_simulator: StartSim,
    start_exporter: StartExporter,
    sink: WebhookSink,
    alertmanager: RunningAlertmanager,
) -> None:
    """Paused and stalled are told with all a person needs; a stopped replica pages without its
    campaign alerts; a revoked key pages without the fetch alerts, then resolves.
    """
    campaigns = {c.id: c for c in e2e_campaigns() if c.id != FAILING}
    sim = await start_simulator(campaigns.values(), speed=SPEED)
    settings = exporter_settings(
        sim,
        sorted(campaigns),
        poll_interval_seconds=POLL_SECONDS,
        terminal_poll_interval_seconds=POLL_SECONDS,
        stale_after_seconds=STALE_AFTER_SECONDS,
    )
    replicas = [await start_exporter(settings), await start_exporter(settings)]
    workdir = tmp_path / "prometheus"
    targets = [f"127.0.0.1:{replica.server.port}" for replica in replicas]
    # The rules load only once both replicas are scraped. Before Prometheus' first scrape,
    # absent(up{job=~".*dialnexa.*"}) holds, and whether DialNexaExporterAbsent (for: 5 s here)
    # fired would depend on how long Prometheus took to start scraping.
    rule_file = write_rules(workdir, "dialnexa-exporter.rules.yml", {"groups": []})
    config = render_config(
        targets=targets,
        rule_files=[rule_file],
        scrape_interval_seconds=SCRAPE_SECONDS,
        evaluation_interval_seconds=SCRAPE_SECONDS,
        job=JOB,
        alertmanagers=[alertmanager.address],
    )
    prometheus = await asyncio.to_thread(start_prometheus, workdir, config)
    try:
        await wait_for(
            lambda: (
                {t["labels"]["instance"] for t in prometheus.targets() if t["health"] == "up"}
                == set(targets)
            ),
            30,
            "both replicas scraped",
            interval=0.25,
            in_thread=True,
        )
        write_rules(workdir, rule_file.name, shortened_rules())
        await asyncio.to_thread(prometheus.reload)
        await wait_for(
            prometheus.rule_groups, 30, "the rules loaded", interval=0.25, in_thread=True
        )
        await campaign_alerts_are_told(sink, campaigns, replicas)
        await a_stopped_replica_pages_alone(sink, prometheus, replicas)
        await a_rejected_key_pages_alone(sink, prometheus, alertmanager, sim.sim, replicas[0])
        await a_working_key_resolves(sink, prometheus, sim.sim)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nnotifications:\n{describe(sink)}") from exc
    finally:
        await asyncio.to_thread(prometheus.stop)


async def campaign_alerts_are_told(
    sink: WebhookSink, campaigns: dict[str, SimCampaign], replicas: list[RunningExporter]
) -> None:
    """1. Paused and stalled are told, each with what a person needs, replicas folded together."""
    both = {f"127.0.0.1:{replica.server.port}" for replica in replicas}

    def folded() -> set[tuple[str, str]]:
        """(alertname, campaign_id) told in one notification carrying both replicas' alerts."""
        found = set()
        for notification in sink.notifications:
            instances: dict[tuple[str, str], set[str]] = {}
            for alert in notification.alerts:
                if alert.status == "firing":
                    key = (alert.labels["alertname"], alert.labels.get("campaign_id", ""))
                    # Alerts built on absent() or an aggregation carry no instance label.
                    instances.setdefault(key, set()).add(alert.labels.get("instance", ""))
            found |= {key for key, seen in instances.items() if seen == both}
        return found

    await wait_for(lambda: folded() >= TOLD, 90, "the paused and stalled notifications")
    annotations = {rule["alert"]: rule["annotations"] for rule in alert_rules()}
    for notification, alert in sink.received():
        name, campaign_id = alert.labels["alertname"], alert.labels.get("campaign_id", "")
        assert (name, campaign_id) in TOLD, "nothing else is wrong with the demo campaigns"
        assert notification.receiver == "dialnexa-tickets"
        assert alert.labels["severity"] == "warning"
        assert alert.labels["name"] == campaigns[campaign_id].name
        assert alert.annotations["summary"] == annotations[name]["summary"]
        assert campaign_id in alert.annotations["description"]
        assert campaigns[campaign_id].name in alert.annotations["description"]
        assert alert.annotations["runbook_url"] == annotations[name]["runbook_url"]
        assert alert.annotations["runbook_url"].startswith("https://")
        assert alert.annotations["runbook_url"].endswith(f"#{name.lower()}")
        # One notification per campaign: never two campaigns or two alert names together.
        assert {(a.labels["alertname"], a.labels["campaign_id"]) for a in notification.alerts} == {
            (name, campaign_id)
        }


async def a_stopped_replica_pages_alone(
    sink: WebhookSink, prometheus: PrometheusServer, replicas: list[RunningExporter]
) -> None:
    """2. One replica stops: it pages; its campaign alerts are held (not repeated, not resolved
    when their data vanishes), the other replica's are still told.
    """
    stopped = f"127.0.0.1:{replicas[1].server.port}"
    mark = len(sink.notifications)
    await replicas[1].server.close()
    await wait_for(lambda: (DOWN_ALERT, "", stopped, "firing") in told(sink, mark), 30, "down page")
    down_told = first_notification(sink, DOWN_ALERT, mark)
    assert sink.notifications[down_told].receiver == "dialnexa-pager"
    # keep_firing_for holds them past the page, then they resolve in Prometheus.
    names = {name for name, _ in TOLD}
    await wait_for(
        lambda: not {alert for alert in firing(prometheus, names) if alert[2] == stopped},
        30,
        "the stopped replica's campaign alerts to resolve in Prometheus",
        interval=0.25,
        in_thread=True,
    )
    await a_whole_group_interval(sink, DOWN_ALERT, "two more exporter-down notifications")
    after = told(sink, down_told)
    assert [t for t in after if t[2] == stopped and t[0] != DOWN_ALERT] == []
    assert [t for t in told(sink, mark) if t[3] == "resolved"] == []
    # The inhibition is scoped to the stopped target: the other replica is still told.
    assert {(t[0], t[1]) for t in after if t[2] != stopped and t[0] != DOWN_ALERT} == TOLD


async def a_rejected_key_pages_alone(
    sink: WebhookSink,
    prometheus: PrometheusServer,
    alertmanager: RunningAlertmanager,
    simulator: Simulator,
    replica: RunningExporter,
) -> None:
    """3. The API rejects the key: it pages; the fetch alerts firing in Prometheus are held
    back, and so are the campaign alerts.
    """
    instance = f"127.0.0.1:{replica.server.port}"
    mark = len(sink.notifications)
    simulator.api_key = "revoked-" + API_KEY
    await wait_for(lambda: (KEY_ALERT, "", instance, "firing") in told(sink, mark), 30, "key page")
    key_told = first_notification(sink, KEY_ALERT, mark)
    page = sink.notifications[key_told]
    assert page.receiver == "dialnexa-pager"
    assert page.alerts[0].labels["severity"] == "critical"
    assert page.alerts[0].annotations["runbook_url"].endswith("#dialnexaapikeyrejected")
    campaign_ids = set(simulator.campaigns)
    expected = {("DialNexaCampaignFetchFailing", cid, instance) for cid in campaign_ids}
    await wait_for(
        lambda: firing(prometheus, FETCH_ALERTS) == expected,
        30,
        "the fetch alerts of every campaign firing in Prometheus",
        interval=0.25,
        in_thread=True,
    )

    async def fetch_alerts() -> list[dict[str, Any]]:
        return [
            alert
            for alert in await alertmanager.alerts()
            if alert["labels"]["alertname"] == "DialNexaCampaignFetchFailing"
        ]

    async def all_reached() -> bool:
        return len(await fetch_alerts()) >= len(campaign_ids)

    await wait_for(all_reached, 15, "the fetch alerts to reach Alertmanager", interval=0.25)
    await a_whole_group_interval(sink, KEY_ALERT, "two more key notifications")
    assert [t for t in told(sink, key_told) if t[0] not in (KEY_ALERT, DOWN_ALERT)] == []
    assert all(alert["status"]["inhibitedBy"] for alert in await fetch_alerts())


async def a_working_key_resolves(
    sink: WebhookSink, prometheus: PrometheusServer, simulator: Simulator
) -> None:
    """4. The key works again: the key alert's resolution arrives; no fetch alert is ever told."""
    simulator.api_key = API_KEY
    mark = len(sink.notifications)
    await wait_for(
        lambda: any(t[0] == KEY_ALERT and t[3] == "resolved" for t in told(sink, mark)),
        30,
        "the key-resolved notification",
    )
    resolved = [n for n in sink.notifications[mark:] if n.status == "resolved"]
    assert any(n.receiver == "dialnexa-pager" for n in resolved)
    await wait_for(
        lambda: not firing(prometheus, FETCH_ALERTS),
        30,
        "the fetch alerts to resolve",
        interval=0.25,
        in_thread=True,
    )
    # The stopped replica still pages: its repeats show every group was flushed since.
    await a_whole_group_interval(sink, DOWN_ALERT, "two more exporter-down notifications")
    assert not {t[0] for t in told(sink)} & FETCH_ALERTS
