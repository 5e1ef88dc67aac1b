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
    dashboard_queries,
    data_panels,
    iter_panels,
    load_dashboard,
    metric_selectors,
    recording_rule_names,
    run_promtool,
    status_code_mapping,
    substitute_variables,
    variable,
)

DASHBOARD_UID = "dialnexa-campaigns"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Metrics that carry a campaign_id label, so the $campaign variable must filter them.
_CAMPAIGN_LABELLED = re.compile(
    r"dialnexa_campaign_\w+|campaign:\w+:\w+|dialnexa_exporter_campaign_"
    r"(?:up|last_success_timestamp_seconds|errors_total)"
)


def variable_query(name: str) -> str:
    """The query text of a query variable, whether stored as a string or an object."""
    query = variable(name)["query"]
    return query["query"] if isinstance(query, dict) else str(query)


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
    """The four rows come in order, each with panels, and the expected visualisations."""
    by_row: dict[str, list[str]] = {}
    current = None
    for panel in iter_panels(load_dashboard()):
        if panel["type"] == "row":
            current = panel["title"]
            by_row[current] = []
        else:
            assert current is not None, f"{panel['title']} sits above the first row"
            by_row[current].append(panel["type"])
    assert list(by_row) == ["Overview", "Progress", "Status", "Exporter"]
    assert all(by_row.values())
    assert "bargauge" in by_row["Progress"]
    assert {"state-timeline", "table"} <= set(by_row["Status"])


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
    (panel,) = [p for p in data_panels(load_dashboard()) if p["type"] == "table"]
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
    allowed = CONTRACT_METRICS | recording_rule_names()
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
    """Every selector filters by $job, and every campaign-labelled one by $campaign too."""
    for query in dashboard_queries(substitute=False):
        for name, matchers in metric_selectors(query.expr):
            where = f"{query.panel}/{query.ref_id}: {name}"
            assert 'job=~"$job"' in matchers, where
            if _CAMPAIGN_LABELLED.fullmatch(name):
                assert 'campaign_id=~"$campaign"' in matchers, where


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
    assert not any("$" in query.expr for query in queries)
    short = dashboard_queries({"__rate_interval": "7s", "campaign": "cmp_demo_stall"})
    assert any("[7s]" in query.expr for query in short)
    assert any('campaign_id=~"cmp_demo_stall"' in query.expr for query in short)
    with pytest.raises(KeyError):
        substitute_variables("up{job=~'$undefined_variable'}")


def test_metric_selectors_tolerate_grafana_variables() -> None:
    """The PromQL scanner reads selectors through unsubstituted $variables and ${...} forms."""
    expr = 'rate(x_total{job=~"$job"}[$__rate_interval]) / on (job) group_left () y{a="${b}"}'
    assert metric_selectors(expr) == [("x_total", '{job=~"$job"}'), ("y", '{a="${b}"}')]
