"""The canonical Prometheus rule file: promtool check and unit tests, and its conventions."""

from __future__ import annotations

import copy
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    CONTRACT_METRICS,
    ROOT,
    RULE_FILE,
    SEVERITIES,
    alert_rules,
    load_rules,
    load_yaml,
    metric_selectors,
    parse_duration,
    recording_rule_names,
    recording_rules,
    run_promtool,
    status_code_mapping,
)

RULE_TESTS_DIR = ROOT / "tests" / "rules"
RULE_TEST_FILES = sorted(RULE_TESTS_DIR.glob("*.test.yml"))
RUNBOOK_BASE = "https://github.com/dialnexa/dialnexa-exporter/blob/main/docs/alerts.md"
DOCS = ROOT / "docs"

# The alerts issues #5 and #10 ask for, by the names the runbook and the chart's overrides use.
REQUIRED_ALERTS = frozenset(
    {
        "DialNexaCampaignPaused",
        "DialNexaCampaignStalled",
        "DialNexaCampaignFetchFailing",
        "DialNexaCampaignNotFound",
        "DialNexaAPIKeyRejected",
        "DialNexaAPIRateLimited",
        "DialNexaExporterDown",
        "DialNexaExporterAbsent",
        "DialNexaExporterShardMissing",
        "DialNexaExporterShardsMismatch",
    }
)
# Only these may select a job; every other rule is job-agnostic.
JOB_SELECTING_ALERTS = frozenset({"DialNexaExporterDown", "DialNexaExporterAbsent"})
STATUS_NAMES = ("draft", "active", "running", "paused", "completed", "cancelled", "unknown")

# --- the rule file and its tests as data ---------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    return {name for name, _ in metric_selectors(expr)}


def load_rule_tests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every promtool test file under tests/rules/, parsed."""
    for path in RULE_TEST_FILES:
        yield path, load_yaml(path.read_text(encoding="utf-8"))


# --- the two status modes ----------------------------------------------------------------------

# DIALNEXA_STATUS_SERIES: every rule must judge the same data the same way in both modes.
STATUS_MODES = ("all", "current")
_STATUS_SERIES = re.compile(r"dialnexa_campaign_status\{")
# One term of promtool's expanding notation: `a+bxn` (n+1 samples), `_xn` (n missing samples),
# or a single sample (a number, `_` or `stale`).
_TERM = re.compile(r"(?P<start>[-+]?[\d.e+]+?)(?P<sign>[-+])(?P<step>[\d.e]+)x(?P<count>\d+)")
_BLANKS = re.compile(r"_x(?P<count>\d+)")


def expand_values(values: str) -> list[str]:
    """promtool's `values` notation as one token per sample: a number, `_` or `stale`."""
    tokens: list[str] = []
    for term in values.split():
        if blanks := _BLANKS.fullmatch(term):
            tokens += ["_"] * int(blanks["count"])
        elif series := _TERM.fullmatch(term):
            start, step = float(series["start"]), float(series["step"])
            step = -step if series["sign"] == "-" else step
            tokens += [f"{start + i * step:g}" for i in range(int(series["count"]) + 1)]
        else:
            tokens.append(term)
    return tokens


def without_zero_samples(values: str) -> str | None:
    """The samples a status series has with DIALNEXA_STATUS_SERIES=current: its 0 samples are
    not scraped; where it leaves a scrape Prometheus writes a staleness marker. None when the
    series never exists."""
    kept: list[str] = []
    for token in expand_values(values):
        present = bool(kept) and kept[-1] not in ("_", "stale")
        if token != "_" and token != "stale" and float(token) == 0:
            token = "stale" if present else "_"
        kept.append(token)
    return " ".join(kept) if any(t not in ("_", "stale") for t in kept) else None


def in_status_mode(document: dict[str, Any], mode: str) -> dict[str, Any]:
    """A promtool test document with its input series as the exporter serves them in ``mode``
    (the rule file named by its absolute path, so the copy can live anywhere)."""
    converted = copy.deepcopy(document)
    converted["rule_files"] = [str(RULE_FILE)]
    if mode == "all":
        return converted
    for group in converted["tests"]:
        series = []
        for entry in group.get("input_series", []):
            if _STATUS_SERIES.match(entry["series"]):
                values = without_zero_samples(str(entry["values"]))
                if values is None:
                    continue
                entry = {**entry, "values": values}
            series.append(entry)
        group["input_series"] = series
    return converted


def test_promtool_notation_is_expanded_as_promtool_does() -> None:
    """`a+bxn` is n+1 samples, `_xn` n missing ones; singles stay as they are."""
    assert expand_values("1+0x2 _x2 stale 5 0-1x1 _") == [
        "1", "1", "1", "_", "_", "stale", "5", "0", "-1", "_",
    ]  # fmt: skip


def test_current_mode_drops_the_zero_samples_and_marks_them_stale() -> None:
    """A 0 after a scraped sample becomes a staleness marker, further 0s missing samples; a
    series that is never 1 is not scraped at all."""
    assert without_zero_samples("1+0x1 0+0x2 1") == "1 1 stale _ _ 1"
    assert without_zero_samples("0+0x1 1+0x1") == "_ _ 1 1"
    assert without_zero_samples("0+0x110") is None


def test_current_mode_variant_changes_only_status_series() -> None:
    """The converted campaign-alert tests keep every other series, and no 0 status sample."""
    path = RULE_TESTS_DIR / "campaign-alerts.test.yml"
    document = load_yaml(path.read_text(encoding="utf-8"))
    converted = in_status_mode(document, "current")
    for before, after in zip(document["tests"], converted["tests"], strict=True):
        others = [s for s in before["input_series"] if not _STATUS_SERIES.match(s["series"])]
        assert [s for s in after["input_series"] if s in others] == others
        for entry in after["input_series"]:
            if _STATUS_SERIES.match(entry["series"]):
                assert "0" not in expand_values(entry["values"]), entry
        assert before["alert_rule_test"] == after["alert_rule_test"]
    assert converted != document


# --- promtool ------------------------------------------------------------------------------------


def test_rule_file_passes_promtool_check() -> None:
    """`promtool check rules` accepts the canonical rule file."""
    result = run_promtool("check", "rules", str(RULE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_rule_test_files_exist() -> None:
    """tests/rules/ holds the promtool test files the parametrised test below runs."""
    names = {path.name for path in RULE_TEST_FILES}
    assert {
        "recording.test.yml",
        "campaign-alerts.test.yml",
        "fetch-alerts.test.yml",
        "exporter-alerts.test.yml",
        "shard-alerts.test.yml",
        "data-gaps.test.yml",
        "calling-window.test.yml",
    } <= names


def in_mode_where_it_differs(document: dict[str, Any], mode: str) -> dict[str, Any]:
    """``in_status_mode``, keeping in the modes after the first only the test groups whose input
    that mode changes: a group without status series gets the same input in every mode, so its
    run in the first proves them all."""
    converted = in_status_mode(document, mode)
    if mode != STATUS_MODES[0]:
        first = in_status_mode(document, STATUS_MODES[0])["tests"]
        groups = zip(converted["tests"], first, strict=True)
        converted["tests"] = [group for group, same in groups if group != same]
    return converted


def promtool_runs() -> list[Any]:
    """(file, mode) for every tests/rules/ file in the first status mode, and in each other mode
    where some of its test groups get a different input."""
    runs = []
    for test_file in RULE_TEST_FILES:
        document = load_yaml(test_file.read_text(encoding="utf-8"))
        for mode in STATUS_MODES:
            if mode == STATUS_MODES[0] or in_mode_where_it_differs(document, mode)["tests"]:
                runs.append(pytest.param(test_file, mode, id=f"{test_file.name}-{mode}"))
    return runs


def test_promtool_runs_cover_every_file_and_the_groups_that_differ() -> None:
    """Each file runs whole in the first mode; in the other, only the groups whose input the
    mode changes: none of a file without status series, every group of calling-window's, and
    the one group of exporter-alerts' with a status series."""
    runs = {(param.values[0].name, param.values[1]) for param in promtool_runs()}
    assert {name for name, _ in runs} == {path.name for path in RULE_TEST_FILES}
    assert ("shard-alerts.test.yml", "current") not in runs
    for name, groups in (("calling-window.test.yml", 3), ("exporter-alerts.test.yml", 1)):
        document = load_yaml((RULE_TESTS_DIR / name).read_text(encoding="utf-8"))
        kept = in_mode_where_it_differs(document, "current")["tests"]
        assert len(kept) == groups, name
        assert all(
            any(_STATUS_SERIES.match(entry["series"]) for entry in group["input_series"])
            for group in kept
        )


@pytest.mark.slow
@pytest.mark.parametrize(("test_file", "mode"), promtool_runs())
def test_promtool_rule_unit_tests_pass(test_file: Path, mode: str, tmp_path: Path) -> None:
    """Every scenario of a tests/rules/ file passes `promtool test rules`, with the status
    series of either DIALNEXA_STATUS_SERIES mode and the same expected results (once, for a
    scenario whose input both modes leave the same)."""
    document = load_yaml(test_file.read_text(encoding="utf-8"))
    converted = tmp_path / test_file.name
    text = yaml.safe_dump(in_mode_where_it_differs(document, mode))
    converted.write_text(text, encoding="utf-8")
    result = run_promtool("test", "rules", str(converted))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", RULE_TEST_FILES, ids=lambda path: path.name)
def test_rule_tests_load_the_canonical_file(test_file: Path) -> None:
    """Each test file loads exactly the canonical rule file, by a path relative to itself."""
    document = load_yaml(test_file.read_text(encoding="utf-8"))
    (rule_file,) = document["rule_files"]
    assert not Path(rule_file).is_absolute()
    assert (test_file.parent / rule_file).resolve() == RULE_FILE


# --- conventions of the rule file ----------------------------------------------------------------


def test_required_alerts_exist() -> None:
    """Every alert the issue asks for exists under the name the runbook and chart use."""
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED_ALERTS


def test_rule_names_are_unique() -> None:
    """No alert name and no recording rule name is defined twice."""
    names = [rule.get("alert") or rule["record"] for rule in load_rules()]
    assert len(names) == len(set(names))


def test_alert_names_are_prefixed_camel_case() -> None:
    """Alert names are CamelCase and start with DialNexa."""
    for rule in alert_rules():
        assert re.fullmatch(r"DialNexa(?:[A-Z][a-z0-9]*|API)+", rule["alert"]), rule["alert"]


def test_every_alert_has_severity_and_annotations() -> None:
    """Every alert carries a known severity and non-empty summary, description and runbook_url."""
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']}: no {key}"


def test_key_rejected_and_exporter_loss_page() -> None:
    """A rejected API key or a lost exporter blinds all monitoring, so they are critical."""
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    assert severities["DialNexaAPIKeyRejected"] == "critical"
    assert severities["DialNexaExporterDown"] == "critical"
    assert severities["DialNexaCampaignPaused"] == "warning"
    assert severities["DialNexaCampaignStalled"] == "warning"


def test_runbook_urls_point_at_the_lowercased_alert_name() -> None:
    """runbook_url is the docs/alerts.md anchor GitHub derives from a `### <AlertName>` heading."""
    urls = [rule["annotations"]["runbook_url"] for rule in alert_rules()]
    for rule, url in zip(alert_rules(), urls, strict=True):
        assert url == f"{RUNBOOK_BASE}#{rule['alert'].lower()}"
    assert len(set(urls)) == len(urls)


def test_summaries_are_fixed_sentences() -> None:
    """A summary is one untemplated sentence; the details belong in the description."""
    for rule in alert_rules():
        summary = rule["annotations"]["summary"]
        assert "{{" not in summary, rule["alert"]
        assert summary.endswith("."), rule["alert"]


def test_campaign_alerts_join_and_describe_the_campaign_name() -> None:
    """Alerts about one campaign join its name from the info series and template id and name."""
    campaign_alerts = [
        rule for rule in alert_rules() if rule["group"] == "dialnexa-campaigns.alerts"
    ]
    assert len(campaign_alerts) >= 4
    for rule in campaign_alerts:
        assert "group_left(name)" in rule["expr"], rule["alert"]
        assert "dialnexa_campaign_info" in metric_names(rule["expr"]), rule["alert"]
        description = rule["annotations"]["description"]
        assert "$labels.campaign_id" in description, rule["alert"]
        assert "$labels.name" in description, rule["alert"]


def test_only_exporter_health_alerts_select_a_job() -> None:
    """Rules are job-agnostic; only the down/absent alerts pick the exporter's job by regex."""
    for rule in load_rules():
        matchers = " ".join(block for _, block in metric_selectors(rule["expr"]))
        name = rule.get("alert") or rule["record"]
        if name in JOB_SELECTING_ALERTS:
            assert 'up{job=~".*dialnexa.*"}' in rule["expr"].replace(" ", ""), name
        else:
            assert "job=" not in matchers.replace(" ", ""), name


def test_rules_query_only_contract_metrics() -> None:
    """Every metric a rule reads is in the design contract, a recording rule here, or `up`."""
    allowed = CONTRACT_METRICS | recording_rule_names() | {"up"}
    for rule in load_rules():
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule.get('alert') or rule['record']} reads {sorted(unknown)}"


def test_for_durations_and_windows_are_plain_literals() -> None:
    """`for`, `keep_firing_for` and range windows are literal durations a test can scale by text."""
    for rule in alert_rules():
        assert parse_duration(str(rule["for"])) > 0, rule["alert"]
        if "keep_firing_for" in rule:
            assert parse_duration(str(rule["keep_firing_for"])) > 0, rule["alert"]
    for rule in load_rules():
        for window in re.findall(r"\[([^\]]*)\]", rule["expr"]):
            assert parse_duration(window) > 0, f"{rule.get('alert') or rule['record']}: {window}"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    """Recording rules are named level:metric:operations around a dialnexa_ metric."""
    for rule in recording_rules():
        level, metric, operations = rule["record"].split(":")
        assert level == "campaign", rule["record"]
        assert operations, rule["record"]
        assert metric.startswith("dialnexa_campaign_"), rule["record"]


def test_recording_rules_required_by_the_issue_exist() -> None:
    """Completion ratio, deriv pace, remaining seconds and status code are all recorded."""
    assert {
        "campaign:dialnexa_campaign_completion:ratio",
        "campaign:dialnexa_campaign_completed_calls:deriv5m",
        "campaign:dialnexa_campaign_remaining_seconds:estimate",
        "campaign:dialnexa_campaign_status:code",
    } <= recording_rule_names()


def test_gauge_pace_uses_deriv_not_rate() -> None:
    """The campaign counters are gauges from the API, so no rule applies rate() or increase()."""
    for rule in load_rules():
        for name in ("dialnexa_campaign_completed_calls", "dialnexa_campaign_pending_calls"):
            assert not re.search(rf"\b(?:rate|irate|increase)\(\s*{name}", rule["expr"])


def test_status_code_covers_every_status_once_as_documented() -> None:
    """Each of the seven statuses gets its own code, exactly as the file's header documents."""
    mapping = status_code_mapping()
    assert sorted(mapping) == sorted(STATUS_NAMES)
    assert len(set(mapping.values())) == len(STATUS_NAMES)
    documented = "   ".join(f"{code} {status}" for status, code in mapping.items())
    assert f"#   {documented}\n" in RULE_FILE.read_text(encoding="utf-8")


def docs_text(page: str) -> str:
    """The text of a docs/ page."""
    return (DOCS / page).read_text(encoding="utf-8")


def test_contract_metrics_are_the_documented_metrics() -> None:
    """Every metric the rules and dashboard may read is documented in docs/metrics.md's tables."""
    tables = "\n".join(
        line for line in docs_text("metrics.md").splitlines() if line.startswith("|")
    )
    for name in CONTRACT_METRICS:
        base = re.sub(r"_(?:bucket|sum|count)$", "", name)
        assert f"`{base}`" in tables or f"`{base}{{" in tables, name
        if base != name:
            assert re.search(rf"`{base}` \| histogram", tables), name


def test_runbook_has_a_section_per_alert() -> None:
    """Each runbook_url anchor is a `### <AlertName>` heading of docs/alerts.md."""
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^### (.+)$", docs_text("alerts.md"), re.M)
    }
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors, rule["alert"]


# --- the unit tests cover every rule -------------------------------------------------------------


def alert_timelines() -> dict[str, list[dict[int, set[frozenset[tuple[str, str]]]]]]:
    """Per alert, per test group: eval time in seconds -> the set of expected firing label sets."""
    timelines: dict[str, list[dict[int, set[frozenset[tuple[str, str]]]]]] = defaultdict(list)
    for _, document in load_rule_tests():
        for group in document["tests"]:
            per_alert: dict[str, dict[int, set[frozenset[tuple[str, str]]]]] = defaultdict(dict)
            for case in group.get("alert_rule_test", []):
                alerts = {
                    frozenset(alert.get("exp_labels", {}).items())
                    for alert in case.get("exp_alerts") or []
                }
                per_alert[case["alertname"]][parse_duration(case["eval_time"])] = alerts
            for name, timeline in per_alert.items():
                timelines[name].append(timeline)
    return timelines


def test_every_alert_is_tested_across_its_for_boundary() -> None:
    """Each alert has a test where an alert is absent at one evaluation and firing at the next."""
    timelines = alert_timelines()
    for rule in alert_rules():
        step = 60  # every test file evaluates once a minute (checked below)
        crossings = [
            time
            for timeline in timelines[rule["alert"]]
            for time, firing in timeline.items()
            if time + step in timeline and firing < timeline[time + step]
        ]
        assert crossings, f"{rule['alert']}: no test one evaluation before and at its boundary"
    for _, document in load_rule_tests():
        assert parse_duration(document.get("evaluation_interval", "1m")) == 60


def test_every_alert_is_tested_firing_with_its_full_annotations() -> None:
    """Each alert's runbook anchor and annotations appear in some expected firing alert."""
    expected: dict[str, list[dict[str, str]]] = defaultdict(list)
    for _, document in load_rule_tests():
        for group in document["tests"]:
            for case in group.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    expected[case["alertname"]].append(alert.get("exp_annotations", {}))
    for rule in alert_rules():
        annotations = expected[rule["alert"]]
        assert annotations, f"{rule['alert']} is never expected to fire"
        for annotation in annotations:
            assert annotation["runbook_url"] == rule["annotations"]["runbook_url"]
            assert annotation["summary"] == rule["annotations"]["summary"]


def test_every_recording_rule_is_tested_for_its_value() -> None:
    """Each recording rule is queried in a promql_expr_test that expects samples of it."""
    tested: set[str] = set()
    for _, document in load_rule_tests():
        for group in document["tests"]:
            for case in group.get("promql_expr_test", []):
                for sample in case.get("exp_samples") or []:
                    tested.add(sample["labels"].split("{", 1)[0])
    assert recording_rule_names() <= tested


# --- the scanner itself --------------------------------------------------------------------------


def test_metric_selectors_skip_functions_labels_and_strings() -> None:
    """The PromQL scanner returns selectors only, not functions, label lists or literals."""
    expr = (
        'sum by (le, job) (rate(foo_bucket{job=~"$job", x="a}b"}[5m] offset 1h)) '
        "/ on(instance) group_left(name) bar * 1e3 + topk(1, baz) or absent(qux{a='b'}) > bool 0.5"
    )
    assert metric_selectors(expr) == [
        ("foo_bucket", '{job=~"$job", x="a}b"}'),
        ("bar", ""),
        ("baz", ""),
        ("qux", "{a='b'}"),
    ]
    assert metric_names("max without(status) (dialnexa_campaign_status) == inf") == {
        "dialnexa_campaign_status"
    }
