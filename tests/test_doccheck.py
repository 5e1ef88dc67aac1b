"""docs/metrics.md against the code (kube-state-metrics' doccheck): the metric names and types
documented are exactly those declared, and exactly those a running exporter serves."""

from __future__ import annotations

import re
from typing import Any

from exporter.demo.simulator import RateLimitPolicy
from exporter.exposition import metrics
from exporter.exposition.metrics import Family
from tests.helpers import ROOT, StartExporter, StartSim, campaign, exporter_settings

METRICS_DOC = ROOT / "docs" / "metrics.md"
_NAME = re.compile(r"`((?:dialnexa|process)_[a-z0-9_*]+)")


def documented(text: str | None = None) -> dict[str, str]:
    """Metric name → type from the tables of docs/metrics.md (a row may name several metrics;
    ``process_*`` is prometheus_client's set and not listed one by one)."""
    text = METRICS_DOC.read_text(encoding="utf-8") if text is None else text
    found: dict[str, str] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        for name in _NAME.findall(cells[0]):
            if "*" not in name:
                assert name not in found, f"{name} has two rows"
                found[name] = cells[1]
    return found


def declared() -> dict[str, str]:
    """Metric name → type of every family the metrics module declares, alone or in a tuple."""
    families: list[Family] = []
    for item in vars(metrics).values():
        group: Any = item if isinstance(item, tuple) else (item,)
        families += [family for family in group if isinstance(family, Family)]
    return {family.name: family.kind for family in families}


def served(text: str) -> dict[str, str]:
    """Metric name → type from the ``# TYPE`` lines of an exposition, process_* left out."""
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE)
    return {name: kind for name, kind in types if not name.startswith("process_")}


def difference(docs: dict[str, str], code: dict[str, str]) -> dict[str, list[str]]:
    """What one side has and the other lacks or types differently, by direction."""
    return {
        "documented, not in the code": sorted(
            f"{name} ({kind})" for name, kind in docs.items() if code.get(name) != kind
        ),
        "in the code, not documented": sorted(
            f"{name} ({kind})" for name, kind in code.items() if docs.get(name) != kind
        ),
    }


NO_DIFFERENCE = {"documented, not in the code": [], "in the code, not documented": []}


def test_documented_metrics_are_the_declared_ones() -> None:
    """Every declared family has a row with its type, and every row a declared family."""
    assert difference(documented(), declared()) == NO_DIFFERENCE


async def test_documented_metrics_are_the_served_ones(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """A real exporter whose API announces a budget, with a scheduled campaign and one that
    fails, serves exactly the documented families with their documented types."""
    sim = await start_simulator(
        [campaign("cmp_doc", status="draft", scheduled_at=10**9, organization_id="org_doc")]
    )
    sim.sim.set_rate_limit(RateLimitPolicy(limit=100_000, window=600))
    exporter = await start_exporter(exporter_settings(sim, ["cmp_doc", "cmp_missing"]))
    await exporter.wait_published(
        lambda samples: (
            any(name.endswith("_errors_total") for name, _ in samples)
            and any(name.endswith("_scheduled_timestamp_seconds") for name, _ in samples)
        ),
        "an error counted and a scheduled time shown",
    )
    text = await exporter.metrics_text()
    assert difference(documented(), served(text)) == NO_DIFFERENCE


def test_doccheck_sees_a_missing_row_and_a_wrong_type() -> None:
    """A family without a row, a row without a family and a row of the wrong type are all
    reported, each in its direction."""
    docs = documented()
    code = declared()
    name = "dialnexa_campaign_total_leads"
    without = METRICS_DOC.read_text(encoding="utf-8").replace(f"| `{name}` | gauge |", "")
    assert difference(documented(without), code)["in the code, not documented"] == [
        f"{name} (gauge)"
    ]
    renamed = {**code, "dialnexa_campaign_new_field": "gauge"}
    assert difference(docs, renamed)["in the code, not documented"] == [
        "dialnexa_campaign_new_field (gauge)"
    ]
    retyped = {**code, name: "counter"}
    assert difference(docs, retyped) == {
        "documented, not in the code": [f"{name} (gauge)"],
        "in the code, not documented": [f"{name} (counter)"],
    }
