"""The canonical Alertmanager configuration: amtool's checks, routing of every alert of the rule
file, a merge into an existing configuration, and the inhibitions in a real Alertmanager.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Settings
from exporter.demo.alertmanager import ALERTMANAGER_FILE_NAME, packaged_alertmanager_text
from tests.alertmanager_server import start_alertmanager
from tests.helpers import (
    AM_FILE,
    RECEIVER_BY_SEVERITY,
    ROOT,
    SEVERITIES,
    alert_labels,
    alert_rules,
    dialnexa_route,
    load_config,
    parse_duration,
    routed_receivers,
    run_amtool,
    wait_for,
)

PACKAGED_AM_FILE = ROOT / "exporter" / "rules" / ALERTMANAGER_FILE_NAME
FALLBACK_RECEIVER = "dialnexa-tickets"
ROOT_RECEIVER = "default"
# The causes that nothing may hide: whatever else fires, these are told.
DEEPEST_CAUSES = frozenset({"DialNexaExporterDown", "DialNexaExporterAbsent"})
# Time for Prometheus to evaluate a rule that has just crossed its `for` and deliver the alert to
# Alertmanager, with room for a slow evaluation; a held alert must outlast its cause by this.
DELIVERY_MARGIN_SECONDS = 120


# --- the file itself -------------------------------------------------------------------------


def test_packaged_copy_is_identical_and_loaded() -> None:
    """exporter/rules/ holds a byte-identical copy of the canonical file, and the demo reads it."""
    assert PACKAGED_AM_FILE.read_bytes() == AM_FILE.read_bytes()
    assert packaged_alertmanager_text() == AM_FILE.read_text(encoding="utf-8")


def test_packaged_copy_is_declared_package_data() -> None:
    """pyproject.toml's package-data for `exporter` has a glob that matches the copy."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["exporter"]
    relative = PACKAGED_AM_FILE.relative_to(ROOT / "exporter")
    assert any(relative.match(pattern) for pattern in globs), globs


def test_canonical_file_passes_amtool_check_config() -> None:
    """`amtool check-config` accepts the file as it is shipped."""
    result = run_amtool("check-config", str(AM_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert f"{len(load_config()['inhibit_rules'])} inhibit rules" in result.stdout


def test_top_level_has_route_receivers_and_inhibitions_only() -> None:
    """A plain configuration: route, receivers and inhibit_rules, nothing global to merge."""
    assert set(load_config()) == {"route", "receivers", "inhibit_rules"}


def test_grouping_and_timings_suit_campaign_alerts() -> None:
    """One group per alert, job and campaign; timings ordered; pages remind more than tickets."""
    route = dialnexa_route(load_config())
    assert route["group_by"] == ["alertname", "job", "campaign_id"]
    wait, interval, repeat = (
        parse_duration(route[key]) for key in ("group_wait", "group_interval", "repeat_interval")
    )
    assert 0 < wait < interval < repeat
    repeats = {
        child["matchers"][0]: parse_duration(child.get("repeat_interval", route["repeat_interval"]))
        for child in route["routes"]
    }
    assert repeats['severity="critical"'] < repeats['severity="warning"']
    assert repeats['severity="warning"'] <= repeats['severity="info"']
    # Alertmanager forgets notifications after its data retention (120h by default).
    assert max(repeats.values()) < 120 * 3600


def test_every_receiver_is_used_and_named_by_purpose() -> None:
    """The receivers are the root's default plus one per severity, each reached by a route."""
    config = load_config()
    names = [receiver["name"] for receiver in config["receivers"]]
    assert names == [ROOT_RECEIVER, *RECEIVER_BY_SEVERITY.values()]
    used = {config["route"]["receiver"]}
    pending = [config["route"]]
    while pending:
        route = pending.pop()
        used.add(route.get("receiver", ""))
        pending.extend(route.get("routes", []))
    assert used - {""} == set(names)


# --- routing ---------------------------------------------------------------------------------

ROUTING_CASES = [
    pytest.param(rule, severity, id=f"{rule['alert']}-{severity}")
    for rule in alert_rules()
    for severity in sorted(SEVERITIES)
]


@pytest.mark.parametrize(("rule", "severity"), ROUTING_CASES)
def test_every_alert_and_severity_reaches_its_receiver(rule: dict[str, Any], severity: str) -> None:
    """amtool routes each alert of the rule file, at each severity, to exactly that receiver."""
    expected = RECEIVER_BY_SEVERITY[severity]
    result = run_amtool(
        "config",
        "routes",
        "test",
        f"--config.file={AM_FILE}",
        f"--verify.receivers={expected}",
        *(f"{name}={value}" for name, value in alert_labels(rule, severity).items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_alerts_route_by_the_severity_the_rule_file_gives_them() -> None:
    """Every alert's own severity is routed: the rule file uses no severity without a route."""
    for rule in alert_rules():
        expected = RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]
        assert routed_receivers(AM_FILE, alert_labels(rule)) == [expected], rule["alert"]


def test_verify_fails_for_a_wrong_receiver() -> None:
    """The check above can fail: amtool's verification rejects a receiver that is not picked."""
    rule = next(r for r in alert_rules() if r["labels"]["severity"] == "critical")
    result = run_amtool(
        "config",
        "routes",
        "test",
        f"--config.file={AM_FILE}",
        f"--verify.receivers={FALLBACK_RECEIVER}",
        *(f"{name}={value}" for name, value in alert_labels(rule).items()),
    )
    assert result.returncode != 0


def test_an_unknown_severity_still_reaches_a_person() -> None:
    """A severity outside the three (a chart override, a typo) falls back to tickets."""
    for severity in ("page", "CRITICAL", ""):
        labels = {"alertname": "DialNexaCampaignPaused", "severity": severity, "job": "x"}
        assert routed_receivers(AM_FILE, labels) == [FALLBACK_RECEIVER], severity
    assert routed_receivers(AM_FILE, {"alertname": "DialNexaCampaignPaused"}) == [FALLBACK_RECEIVER]


def test_other_alerts_stay_with_the_root_route() -> None:
    """Only names starting with DialNexa enter the subtree (Alertmanager anchors the regex)."""
    for name in ("NodeDown", "MyDialNexaCheck", "dialnexaCampaignPaused", "DialNexa"):
        labels = {"alertname": name, "severity": "critical"}
        assert routed_receivers(AM_FILE, labels) == [ROOT_RECEIVER], name


# --- merging into an existing configuration ---------------------------------------------------

EXISTING_CONFIG: dict[str, Any] = {
    "global": {"resolve_timeout": "5m"},
    "route": {
        "receiver": "team-email",
        "group_by": ["alertname", "cluster"],
        "routes": [
            {"matchers": ['severity="critical"'], "receiver": "oncall"},
            {"matchers": ['team="db"'], "receiver": "db-team"},
        ],
    },
    "receivers": [
        {"name": "team-email"},
        {"name": "oncall"},
        {"name": "db-team"},
    ],
    "inhibit_rules": [
        {
            "source_matchers": ['alertname="NodeDown"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["instance"],
        }
    ],
}


def merged(existing: Mapping[str, Any], canonical: Mapping[str, Any]) -> dict[str, Any]:
    """The merge docs/alerts.md describes: the DialNexa route first among the root's routes, the
    dialnexa-* receivers and the inhibit rules appended.
    """
    config = copy.deepcopy(dict(existing))
    config["route"]["routes"] = [dialnexa_route(canonical), *config["route"].get("routes", [])]
    config["receivers"] += [
        receiver for receiver in canonical["receivers"] if receiver["name"].startswith("dialnexa-")
    ]
    config["inhibit_rules"] = [*config.get("inhibit_rules", []), *canonical["inhibit_rules"]]
    return config


def test_merge_into_an_existing_configuration(tmp_path: Path) -> None:
    """Merged as documented: accepted by amtool; DialNexa alerts route as shipped, others too."""
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(merged(EXISTING_CONFIG, load_config())), "utf-8")
    result = run_amtool("check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    for rule in alert_rules():
        expected = RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]
        assert routed_receivers(config_file, alert_labels(rule)) == [expected], rule["alert"]
    assert routed_receivers(config_file, {"alertname": "NodeDown", "severity": "critical"}) == [
        "oncall"
    ]
    assert routed_receivers(config_file, {"alertname": "Slow", "team": "db"}) == ["db-team"]
    assert routed_receivers(config_file, {"alertname": "Other"}) == ["team-email"]


# --- inhibitions: their shape ----------------------------------------------------------------

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager matcher, evaluated as Alertmanager does (regexes anchored)."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse `name op "value"`; the canonical file quotes every value."""
        match = _MATCHER.match(text)
        assert match, f"not a quoted matcher: {text!r}"
        return cls(match[1], match[2], match[3])

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with ``labels`` satisfies this matcher (a missing label is "")."""
        value = labels.get(self.name, "")
        if self.op in ("=", "!="):
            return (value == self.value) == (self.op == "=")
        return bool(re.fullmatch(self.value, value)) == (self.op == "=~")


def matching_alerts(matchers: list[str]) -> set[str]:
    """Names of the rule file's alerts whose labels satisfy every one of ``matchers``."""
    parsed = [Matcher.parse(text) for text in matchers]
    return {
        rule["alert"]
        for rule in alert_rules()
        if all(matcher.matches(alert_labels(rule)) for matcher in parsed)
    }


def inhibition_edges() -> Iterator[tuple[str, str]]:
    """(source alert, target alert) for every pair an inhibit rule can relate."""
    for rule in load_config()["inhibit_rules"]:
        for source in matching_alerts(rule["source_matchers"]):
            for target in matching_alerts(rule["target_matchers"]):
                yield source, target


def test_every_inhibit_rule_names_existing_alerts() -> None:
    """Each rule's source and target matchers select alerts of the rule file (no typo)."""
    for rule in load_config()["inhibit_rules"]:
        assert matching_alerts(rule["source_matchers"]), rule
        assert matching_alerts(rule["target_matchers"]), rule
        for text in rule["source_matchers"] + rule["target_matchers"]:
            matcher = Matcher.parse(text)
            if matcher.name == "alertname" and re.fullmatch(r"[\w|]+", matcher.value):
                names = set(matcher.value.split("|"))
                assert names <= {r["alert"] for r in alert_rules()}, names


def test_no_inhibition_hides_a_root_cause() -> None:
    """No chain of inhibitions loops back to its start, and the deepest causes are never hidden."""
    edges = set(inhibition_edges())
    assert edges
    assert not {target for _, target in edges} & DEEPEST_CAUSES
    hidden_by: dict[str, set[str]] = {}
    for source, target in edges:
        hidden_by.setdefault(target, set()).add(source)

    def causes(name: str, seen: frozenset[str]) -> None:
        for source in hidden_by.get(name, set()):
            assert source not in seen, f"inhibition cycle through {source}"
            causes(source, seen | {source})

    for name in hidden_by:
        causes(name, frozenset({name}))


def test_inhibitions_cover_what_the_issue_asks_for() -> None:
    """Key rejected hides fetch alerts; exporter down hides everything else; fetch hides data."""
    edges = set(inhibition_edges())
    names = {rule["alert"] for rule in alert_rules()}
    assert ("DialNexaAPIKeyRejected", "DialNexaCampaignFetchFailing") in edges
    assert ("DialNexaAPIKeyRejected", "DialNexaCampaignNotFound") in edges
    for name in names - DEEPEST_CAUSES:
        assert ("DialNexaExporterDown", name) in edges, name
    for target in ("Paused", "Stalled", "StatusUnknown"):
        for source in ("FetchFailing", "NotFound"):
            assert (f"DialNexaCampaign{source}", f"DialNexaCampaign{target}") in edges


# --- keep_firing_for bridges the time until the cause fires ----------------------------------


def rule_by_name(name: str) -> dict[str, Any]:
    """One alerting rule of the canonical file."""
    (rule,) = [rule for rule in alert_rules() if rule["alert"] == name]
    return rule


def test_campaign_data_alerts_outlast_the_alerts_that_hide_them() -> None:
    """When data vanishes, a held alert resolves only after its cause fired and can hide it."""
    stale_after = Settings.model_fields["stale_after_seconds"].default
    assert isinstance(stale_after, int | float)
    # Seconds from the moment a campaign's data vanishes to the moment each cause fires.
    cause_after = {
        "DialNexaExporterDown": parse_duration(rule_by_name("DialNexaExporterDown")["for"]),
        "DialNexaCampaignFetchFailing": parse_duration(
            rule_by_name("DialNexaCampaignFetchFailing")["for"]
        )
        - stale_after,
        "DialNexaCampaignNotFound": parse_duration(rule_by_name("DialNexaCampaignNotFound")["for"]),
    }
    edges = set(inhibition_edges())
    for name in (
        "DialNexaCampaignPaused",
        "DialNexaCampaignStalled",
        "DialNexaCampaignStatusUnknown",
    ):
        keep = parse_duration(rule_by_name(name)["keep_firing_for"])
        for cause, after in cause_after.items():
            assert (cause, name) in edges, (cause, name)
            assert keep >= after + DELIVERY_MARGIN_SECONDS, (name, cause)


def test_key_alert_outlasts_the_retries_after_a_fix() -> None:
    """After a key fix, the key alert holds until every failed campaign has been retried."""
    defaults = Settings.model_fields
    slowest = max(
        defaults["poll_interval_seconds"].default,
        defaults["terminal_poll_interval_seconds"].default,
    )
    # docs/failures.md, "Backoff": ten intervals at most, and no more than 10 minutes unless the
    # interval itself is longer.
    longest_retry = max(slowest, min(10 * slowest, 600))
    keep = parse_duration(rule_by_name("DialNexaAPIKeyRejected")["keep_firing_for"])
    assert keep >= longest_retry + DELIVERY_MARGIN_SECONDS


# --- inhibitions in a real Alertmanager ------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Alerts sent together, the ones expected inhibited, and what the case shows."""

    what: str
    alerts: tuple[dict[str, str], ...]
    inhibited: frozenset[int]  # indexes into alerts


def labelled(name: str, **labels: str) -> dict[str, str]:
    """Labels of an alert named ``name``, with its severity from the rule file."""
    return {"alertname": name, "severity": rule_by_name(name)["labels"]["severity"], **labels}


def inhibition_cases() -> list[Case]:
    """One case per claim of the inhibit rules, each on its own job/instance so none overlap."""
    names = sorted(rule["alert"] for rule in alert_rules())
    campaign_alerts = [name for name in names if name.startswith("DialNexaCampaign")]
    cases: list[Case] = []

    def target(index: int) -> dict[str, str]:
        return {"job": f"j{index}", "instance": f"i{index}:10027"}

    others = [name for name in names if name not in DEEPEST_CAUSES]
    at = target(1)
    cases.append(
        Case(
            "exporter down hides every other alert of its target",
            (
                labelled("DialNexaExporterDown", **at),
                *(labelled(name, **at, campaign_id="c1") for name in others),
            ),
            frozenset(range(1, len(others) + 1)),
        )
    )
    cases.append(
        Case(
            "exporter down hides a missing shard of its job",
            (
                labelled("DialNexaExporterDown", **target(2)),
                labelled("DialNexaExporterShardMissing", job="j2", namespace="ns"),
            ),
            frozenset({1}),
        )
    )
    cases.append(
        Case(
            "exporter down hides nothing of another job, and never the absent alert",
            (
                labelled("DialNexaExporterDown", **target(3)),
                # Each on an instance of its own, so that they do not hide one another either.
                *(
                    labelled(name, job="j4", instance=f"i4-{number}:10027", campaign_id="c1")
                    for number, name in enumerate(others)
                ),
                labelled("DialNexaExporterAbsent"),
            ),
            frozenset(),
        )
    )
    at = target(5)
    cases.append(
        Case(
            "a rejected key hides the campaign alerts of its exporter, not the exporter alerts",
            (
                labelled("DialNexaAPIKeyRejected", **at),
                *(labelled(name, **at, campaign_id="c1") for name in campaign_alerts),
                labelled("DialNexaAPIRateLimited", **at),
            ),
            frozenset(range(1, len(campaign_alerts) + 1)),
        )
    )
    cases.append(
        Case(
            "a rejected key hides nothing of another exporter",
            (
                labelled("DialNexaAPIKeyRejected", **target(6)),
                labelled("DialNexaCampaignFetchFailing", **target(7), campaign_id="c1"),
            ),
            frozenset(),
        )
    )
    at = target(10)
    cases.append(
        Case(
            "stale data hides the fetch-failing alerts of its exporter, nothing else",
            (
                labelled("DialNexaExporterDataStale", **at),
                labelled("DialNexaCampaignFetchFailing", **at, campaign_id="c1"),
                labelled("DialNexaCampaignPaused", **at, campaign_id="c2"),
                labelled("DialNexaCampaignFetchFailing", **target(11), campaign_id="c1"),
            ),
            frozenset({1}),
        )
    )
    for cause in ("DialNexaCampaignFetchFailing", "DialNexaCampaignNotFound"):
        at = target(8 if cause.endswith("Failing") else 9)
        data = (
            "DialNexaCampaignPaused",
            "DialNexaCampaignStalled",
            "DialNexaCampaignStatusUnknown",
        )
        cases.append(
            Case(
                f"{cause} hides the data alerts of its campaign only",
                (
                    labelled(cause, **at, campaign_id="c1"),
                    *(labelled(name, **at, campaign_id="c1") for name in data),
                    *(labelled(name, **at, campaign_id="c2") for name in data),
                ),
                frozenset({1, 2, 3}),
            )
        )
    return cases


def test_inhibition_cases_name_every_rule_alert() -> None:
    """The cases below use every alert of the rule file, so a new alert is exercised too."""
    used = {alert["alertname"] for case in inhibition_cases() for alert in case.alerts}
    assert used == {rule["alert"] for rule in alert_rules()}


@pytest.mark.e2e
async def test_inhibitions_in_a_real_alertmanager(tmp_path: Path) -> None:
    """Alertmanager, loaded with the file, suppresses exactly the targets each case expects."""
    cases = inhibition_cases()
    server = await start_alertmanager(tmp_path, load_config())
    try:
        now = datetime.now(UTC)
        sent = [
            {
                "labels": {**alert, "case": str(number)},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
            }
            for number, case in enumerate(cases)
            for alert in case.alerts
        ]
        await server.post(sent)
        expected = {
            (str(number), tuple(sorted(alert.items()))): index in case.inhibited
            for number, case in enumerate(cases)
            for index, alert in enumerate(case.alerts)
        }

        def observed(alerts: list[dict[str, Any]]) -> dict[tuple[str, Any], bool]:
            found = {}
            for alert in alerts:
                labels = dict(alert["labels"])
                number = labels.pop("case")
                found[(number, tuple(sorted(labels.items())))] = bool(
                    alert["status"]["inhibitedBy"]
                )
            return found

        found: dict[tuple[str, Any], bool] = {}

        async def settled() -> bool:
            nonlocal found
            found = observed(await server.alerts())
            return found == expected

        # The inhibitor learns of sources asynchronously: wait until the picture settles.
        try:
            await wait_for(settled, 15, "the inhibitions to settle", interval=0.2)
        except AssertionError:
            wrong = [
                (cases[int(key[0])].what, dict(key[1]), "inhibited" if value else "active")
                for key, value in found.items()
                if expected.get(key) != value
            ]
            pytest.fail(f"unexpected states: {wrong}")
    finally:
        await server.stop()
