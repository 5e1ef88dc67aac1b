"""The Grafana dashboard: provisioning-friendly JSON, datasource variable, units, valid PromQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    CONTRACT_METRICS,
    DASHBOARD_FILE,
    alert_rules,
    dashboard_queries,
    data_panels,
    iter_panels,
    load_dashboard,
    metric_selectors,
    query_result_variables,
    recording_rule_names,
    resolve_query_result_variables,
    run_promtool,
    status_code_mapping,
    substitute_variables,
    variable,
    variable_query,
)

DASHBOARD_UID = "dialnexa-campaigns"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Metrics that carry a campaign_id label, so the $campaign variable must filter them.
_CAMPAIGN_LABELLED = re.compile(
    r"dialnexa_campaign_\w+|campaign:\w+:\w+|dialnexa_exporter_campaign_"
    r"(?:up|last_success_timestamp_seconds|errors_total)|ALERTS_FOR_STATE"
)
# What Prometheus itself writes for the loaded alerting rules, which panels may read too.
ALERT_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE"})
# Most series a panel may draw, and rows a table may show, however many campaigns are selected.
MAX_SERIES = 50
MAX_ROWS = 100


# --- provisioning ----------------------------------------------------------------------------


def test_dashboard_is_json_with_a_fixed_uid() -> None:
    """The file is JSON of a schemaVersion 39 dashboard with the fixed uid and no numeric id."""
    dashboard = load_dashboard()
    assert dashboard["uid"] == DASHBOARD_UID
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"] == "DialNexa campaigns"
    assert dashboard.get("id") is None


def test_dashboard_has_no_import_placeholders() -> None:
    """No __inputs/__requires/__elements and no ${DS_...}: file and sidecar provisioning work."""
    dashboard = load_dashboard()
    for key in ("__inputs", "__requires", "__elements"):
        assert key not in dashboard
    assert "${DS_" not in DASHBOARD_FILE.read_text(encoding="utf-8")


def test_datasource_variable_picks_a_prometheus_datasource() -> None:
    """A `datasource` variable of type datasource lists Prometheus data sources."""
    datasource = variable("datasource")
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    assert not datasource.get("multi")
    assert not datasource.get("includeAll")


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    """Every panel, target and query variable points at ${datasource}, nothing else."""
    dashboard = load_dashboard()
    for panel in data_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for template in dashboard["templating"]["list"]:
        if template["type"] == "query":
            assert template["datasource"] == DATASOURCE, template["name"]

    def datasources(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from datasources(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasources(item)

    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    annotations = list(datasources(dashboard["annotations"]))
    assert all(found == builtin for found in annotations)
    others = [found for found in datasources(dashboard) if found != builtin]
    assert others
    assert all(found == DATASOURCE for found in others)


def test_job_and_campaign_variables_come_from_label_values() -> None:
    """`job` and `campaign` (campaign_id values, multi, All) are label_values of our metrics."""
    job, campaign = variable("job"), variable("campaign")
    assert job["type"] == campaign["type"] == "query"
    job_query = re.fullmatch(r"label_values\((.+),\s*job\)", variable_query("job"))
    campaign_query = re.fullmatch(
        r"label_values\((.+),\s*campaign_id\)", variable_query("campaign")
    )
    assert job_query
    assert campaign_query
    for selector in (job_query.group(1), campaign_query.group(1)):
        assert {name for name, _ in metric_selectors(selector)} <= CONTRACT_METRICS
    assert 'job=~"$job"' in campaign_query.group(1)
    assert campaign["multi"] is True
    assert campaign["includeAll"] is True
    assert job["refresh"] == campaign["refresh"] == 2  # refreshed on time range change


# --- layout ----------------------------------------------------------------------------------


def test_rows_are_overview_progress_status_exporter() -> None:
    """The four rows come in order, problems first: the overview holds the attention table,
    the slowest ETAs and the active alerts; progress has a bar gauge, status a timeline and a
    table."""
    by_row: dict[str, list[str]] = {}
    current = None
    for panel in iter_panels(load_dashboard()):
        if panel["type"] == "row":
            current = panel["title"].split(":")[0]
            by_row[current] = []
        else:
            assert current is not None, f"{panel['title']} sits above the first row"
            by_row[current].append(panel["title"])
    assert list(by_row) == ["Overview", "Progress", "Status", "Exporter"]
    assert all(by_row.values())
    assert {
        "Campaigns by status",
        "Need attention",
        "Campaigns that need attention",
        "The 20 slowest estimated times to finish",
        "Active DialNexa alerts",
        "Calling window",
    } <= set(by_row["Overview"])
    types = {p["title"]: p["type"] for p in data_panels(load_dashboard())}
    assert "bargauge" in {types[title] for title in by_row["Progress"]}
    assert {"state-timeline", "table"} <= {types[title] for title in by_row["Status"]}


def test_every_panel_sets_a_unit() -> None:
    """Every data panel sets fieldConfig.defaults.unit."""
    for panel in data_panels(load_dashboard()):
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert isinstance(unit, str), panel["title"]
        assert unit, panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and no two panels share a grid cell."""
    panels = list(iter_panels(load_dashboard()))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken.get((x, y))}"
                taken[(x, y)] = panel["title"]


def test_completion_bar_gauge_names_each_campaign() -> None:
    """The completion bar gauge joins the campaign name from the info series into its legend."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Completion"]
    assert panel["type"] == "bargauge"
    (target,) = panel["targets"]
    assert "campaign:dialnexa_campaign_completion:ratio" in target["expr"]
    assert "group_left (name) dialnexa_campaign_info" in target["expr"]
    assert "{{name}}" in target["legendFormat"]
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert panel["fieldConfig"]["defaults"]["max"] == 1


def test_state_timeline_maps_the_status_codes_of_the_recording_rule() -> None:
    """The state timeline reads the status code rule and names every code like the rule does."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["type"] == "state-timeline"]
    (target,) = panel["targets"]
    assert "campaign:dialnexa_campaign_status:code" in target["expr"]
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    shown = {option["text"]: int(code) for code, option in mapping["options"].items()}
    assert shown == status_code_mapping()


def test_campaign_table_has_name_agent_number_concurrency_and_status() -> None:
    """The campaign table's query carries and its columns show the campaign's configuration."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Campaigns"]
    (target,) = panel["targets"]
    assert target["format"] == "table"
    assert target["instant"] is True
    grouping = re.match(r"max by \(([^)]*)\)", target["expr"])
    assert grouping
    assert {label.strip() for label in grouping.group(1).split(",")} == {
        "campaign_id",
        "name",
        "agent_id",
        "from_phone_number",
        "status",
    }
    assert "dialnexa_campaign_max_concurrent_calls" in target["expr"]
    (organize,) = [t for t in panel["transformations"] if t["id"] == "organize"]
    assert set(organize["options"]["renameByName"].values()) >= {
        "Name",
        "Agent",
        "From number",
        "Max concurrent calls",
        "Status",
    }


# --- queries ---------------------------------------------------------------------------------


def test_queries_read_only_contract_metrics_and_recording_rules() -> None:
    """Every metric a panel queries is in the design contract or the canonical rule file."""
    allowed = CONTRACT_METRICS | recording_rule_names() | ALERT_SERIES
    queries = dashboard_queries()
    assert len(queries) >= 15
    for query in queries:
        names = {name for name, _ in metric_selectors(query.expr)}
        assert names, f"{query.panel}/{query.ref_id} reads no metric"
        assert names <= allowed, f"{query.panel}/{query.ref_id} reads {sorted(names - allowed)}"


def test_every_recording_rule_is_on_the_dashboard() -> None:
    """Each recording rule of the canonical file feeds some panel."""
    used = {name for q in dashboard_queries() for name, _ in metric_selectors(q.expr)}
    assert recording_rule_names() <= used


def test_every_selector_follows_the_job_and_campaign_variables() -> None:
    """Every selector filters by $job, and every campaign-labelled one by $campaign, or by a
    top-N variable whose own query filters by $job and $campaign."""
    derived = set(query_result_variables())
    for name in derived:
        for metric, matchers in metric_selectors(variable_query(name)):
            assert 'job=~"$job"' in matchers, f"variable {name}: {metric}"
            assert 'campaign_id=~"$campaign"' in matchers, f"variable {name}: {metric}"
    for query in dashboard_queries(substitute=False):
        for name, matchers in metric_selectors(query.expr):
            where = f"{query.panel}/{query.ref_id}: {name}"
            assert 'job=~"$job"' in matchers, where
            if _CAMPAIGN_LABELLED.fullmatch(name):
                allowed = {"$campaign"} | {f"${v}" for v in derived}
                assert any(f'campaign_id=~"{v}"' in matchers for v in allowed), where


def test_range_windows_are_grafana_variables() -> None:
    """No hard-coded range window: Grafana (or a test) sets them via $__rate_interval/$__range."""
    for query in dashboard_queries(substitute=False):
        for window in re.findall(r"\[([^\]]*)\]", query.expr):
            assert window in ("$__rate_interval", "$__range", "$__interval"), query.panel


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool accepts every panel query, variables substituted, as a recording rule expression."""
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard_query_{index}", "expr": query.expr}
                    for index, query in enumerate(queries)
                ],
            }
        ]
    }
    rule_file = tmp_path / "dashboard-queries.rules.yml"
    rule_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run_promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_queries_substitutes_every_variable() -> None:
    """dashboard_queries() leaves no Grafana variable behind and honours overrides."""
    queries = dashboard_queries()
    # Only label_replace's "$1" stays: Grafana leaves what names no variable.
    assert not any(re.search(r"\$(?!1\b)", query.expr) for query in queries)
    short = dashboard_queries({"__rate_interval": "7s", "campaign": "cmp_demo_stall"})
    assert any("[7s]" in query.expr for query in short)
    assert any('campaign_id=~"cmp_demo_stall"' in query.expr for query in short)
    with pytest.raises(KeyError):
        substitute_variables("up{job=~'$undefined_variable'}")


def test_metric_selectors_tolerate_grafana_variables() -> None:
    """The PromQL scanner reads selectors through unsubstituted $variables and ${...} forms."""
    expr = 'rate(x_total{job=~"$job"}[$__rate_interval]) / on (job) group_left () y{a="${b}"}'
    assert metric_selectors(expr) == [("x_total", '{job=~"$job"}'), ("y", '{a="${b}"}')]


# --- scale: bounded panels -------------------------------------------------------------------


def test_campaign_and_job_all_are_a_regex_not_a_list() -> None:
    """`All` of $job and $campaign is the regex `.*`, never Grafana's list of every value."""
    for name in ("job", "campaign"):
        found = variable(name)
        assert found["includeAll"] is True, name
        assert found["allValue"] == ".*", name


def test_top_n_variables_are_hidden_bounded_selections() -> None:
    """Each query_result variable is hidden, always All (no allValue: All is its own values),
    a topk of at most 50 campaigns, and captures campaign ids with its regex."""
    names = query_result_variables()
    assert set(names) == {"top", "changed"}
    for name in names:
        found = variable(name)
        assert found["hide"] == 2, name
        assert found["includeAll"] is True, name
        assert found["multi"] is True, name
        assert "allValue" not in found, name
        assert found["current"]["value"] == ["$__all"], name
        assert found["refresh"] == 2, name
        size = re.match(r"query_result\(topk\((\d+), max by \(campaign_id\) ", variable_query(name))
        assert size, name
        assert int(size.group(1)) <= MAX_SERIES, name
        assert (
            re.search(found["regex"].strip("/"), 'x{campaign_id="cmp_1", job="j"} 5').group(1)
            == "cmp_1"
        )


def test_query_result_variables_resolve_as_grafana_does() -> None:
    """The resolver runs each variable's query with the others substituted and joins the
    captured ids, escaped, into a regex alternation."""
    asked: list[str] = []

    def query(expr: str) -> list[dict[str, object]]:
        asked.append(expr)
        return [
            {"metric": {"campaign_id": "cmp_a"}, "value": [0, "9"]},
            {"metric": {"campaign_id": "cmp.b"}, "value": [0, "3"]},
        ]

    resolved = resolve_query_result_variables(query, {"job": "j", "campaign": ".*"})
    assert resolved == {"top": "(cmp_a|cmp\\.b)", "changed": "(cmp_a|cmp\\.b)"}
    assert all(expr.startswith("topk(") and 'job=~"j"' in expr for expr in asked)
    assert any("[1h]" in expr for expr in asked)  # $__range of the changed variable


def _bounded(expr: str, limit: int) -> bool:
    """Whether the expression's result cannot exceed ``limit`` series, read from its form:
    a topk/bottomk of at most ``limit``, or an aggregation that drops campaign_id."""
    outer = re.match(r"(?:\d+ \* )?(?:max by \([^)]*\) \()?(topk|bottomk)\((\d+),", expr)
    if outer:
        return int(outer.group(2)) <= limit
    limited = re.search(r"\) and on \(campaign_id\) topk\((\d+),", expr)
    if limited:
        return int(limited.group(1)) <= limit
    aggregation = re.match(r"(?:time\(\) - )?(sum|count|max|min|histogram_quantile)\b(.*)", expr)
    if not aggregation:
        return False
    grouping = re.match(r" by \(([^)]*)\)", aggregation.group(2))
    return grouping is None or "campaign_id" not in grouping.group(1)


def test_every_panel_query_is_bounded_whatever_is_selected() -> None:
    """With every campaign selected, no query can return more than about 50 series (tables
    100 rows): a topk/bottomk, a campaign-free aggregation, or a top-N variable's campaigns."""
    derived = {f"${name}" for name in query_result_variables()}
    for panel in data_panels(load_dashboard()):
        table = any(t.get("format") == "table" for t in panel["targets"])
        limit = MAX_ROWS if table else MAX_SERIES
        per_panel = 0
        for target in panel["targets"]:
            expr = target["expr"]
            campaign_matchers = re.findall(r'campaign_id=~"([^"]+)"', expr)
            if campaign_matchers and set(campaign_matchers) <= derived:
                per_panel += 25 if "$top" in campaign_matchers else MAX_SERIES
                continue
            assert _bounded(expr, limit), f"{panel['title']}/{target['refId']}: {expr}"
        assert per_panel <= MAX_SERIES, panel["title"]


def test_attention_table_names_why_and_since_for_every_campaign_alert() -> None:
    """The attention table reads the alerts' active-since times, keeps the oldest 100, and
    maps every campaign alert of the rule file to a reason."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"].endswith("need attention")]
    (target,) = panel["targets"]
    assert target["format"] == "table"
    assert target["instant"] is True
    assert target["expr"].startswith(f"bottomk({MAX_ROWS}, 1000 * ")
    assert "ALERTS_FOR_STATE" in target["expr"]
    (why,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Why"]
    (mapping,) = [p["value"] for p in why["properties"] if p["id"] == "mappings"]
    campaign_alerts = {
        rule["alert"].removeprefix("DialNexaCampaign")
        for rule in alert_rules()
        if rule["alert"].startswith("DialNexaCampaign")
    }
    assert set(mapping[0]["options"]) == campaign_alerts
    (since,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Since"]
    assert since["properties"] == [{"id": "unit", "value": "dateTimeFromNow"}]


def test_active_alerts_panel_counts_every_dialnexa_alert() -> None:
    """The alerts panel sums ALERTS{alertname=~"DialNexa.+"} by name, state and severity."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Active DialNexa alerts"]
    (target,) = panel["targets"]
    assert target["expr"] == (
        'sum by (alertname, alertstate, severity) (ALERTS{alertname=~"DialNexa.+", job=~"$job"})'
    )


def test_dashboard_reads_no_metric_about_to_be_removed() -> None:
    """The API-connection metrics of the built-in client are not on the dashboard."""
    text = DASHBOARD_FILE.read_text(encoding="utf-8")
    assert "dialnexa_exporter_api_connections" not in text
    assert "api_requests_resent_total" not in text


def test_calling_window_stat_names_open_and_closed() -> None:
    """The overview tells whether the calling window is open on every exporter (min of the
    gauge), mapped to the words "open" and "closed"."""
    (panel,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Calling window"]
    (target,) = panel["targets"]
    assert target["expr"] == 'min(dialnexa_exporter_calling_window_open{job=~"$job"})'
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    assert {code: option["text"] for code, option in mapping["options"].items()} == {
        "0": "closed",
        "1": "open",
    }
