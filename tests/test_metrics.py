"""The metric declarations: one per name, text-format spelling, and exporter-wide families read
from their owners."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.api.client import RequestStats
from exporter.api.fields import FieldKind, RecordField
from exporter.api.models import RECORD_FIELDS, parse_campaign, record_document
from exporter.config import load_settings
from exporter.exposition import metrics
from exporter.exposition.metrics import (
    BUDGET_FAMILIES,
    BUILD_FAMILIES,
    CAMPAIGN_FAMILIES,
    CONNECTION_FAMILIES,
    LAG_FAMILIES,
    RECORD_FAMILIES,
    RELOAD_FAMILIES,
    REQUEST_FAMILIES,
    SHARD_FAMILIES,
    SNAPSHOT_FAMILIES,
    WINDOW_FAMILIES,
    ExporterFamily,
    Family,
    ProcessMetrics,
    RecordFamily,
    escape_label_value,
    format_value,
)
from exporter.exposition.render import CampaignRenderer, render_exporter_families
from exporter.polling.reloader import ReloadStatus
from exporter.polling.state import BuildInfo, CampaignView, Snapshot
from tests.helpers import SECOND_EXAMPLE, parse_samples, promtool_check, value

EXPORTER_FAMILY_TUPLES: tuple[tuple[ExporterFamily[Any], ...], ...] = (
    SNAPSHOT_FAMILIES,
    BUILD_FAMILIES,
    REQUEST_FAMILIES,
    SHARD_FAMILIES,
    RELOAD_FAMILIES,
    BUDGET_FAMILIES,
    CONNECTION_FAMILIES,
    LAG_FAMILIES,
    WINDOW_FAMILIES,
)


def declared() -> list[Family]:
    """Every family object the metrics module defines: at top level, and one per declared
    record field."""
    top = [item for item in vars(metrics).values() if isinstance(item, Family)]
    return top + [family for family in RECORD_FAMILIES if family not in top]


def test_every_declared_family_is_served_exactly_once() -> None:
    """Each declaration appears in exactly one served tuple, and no two share a name."""
    served = [*CAMPAIGN_FAMILIES, *(f for group in EXPORTER_FAMILY_TUPLES for f in group)]
    assert sorted(id(f) for f in declared()) == sorted(id(f) for f in served)
    names = [family.name for family in served]
    assert len(names) == len(set(names))


def test_family_names_follow_the_conventions() -> None:
    """Prefixes, snake case, counters end in _total, gauges never end like histogram parts."""
    for family in declared():
        assert re.fullmatch(r"dialnexa_(campaign|exporter)_[a-z0-9_]+", family.name), family
        if family.kind == "counter":
            assert family.name.endswith("_total"), family.name
        if family.kind == "gauge":
            assert not re.search(r"_(count|sum|bucket|total)$", family.name), family.name
        assert family.help.endswith("."), family.name


def test_a_new_campaign_gauge_is_one_declaration() -> None:
    """A family declared with its extractor is rendered with no other change."""
    remaining = RecordFamily(
        "dialnexa_campaign_remaining_leads_test",
        "gauge",
        "Leads left (a test family).",
        value=lambda record: None if record.total_leads is None else record.total_leads - 1,
    )
    record = parse_campaign(SECOND_EXAMPLE, SECOND_EXAMPLE["id"])
    view = CampaignView(SECOND_EXAMPLE["id"], record, up=True, last_success=1.0)
    text = CampaignRenderer((*CAMPAIGN_FAMILIES, remaining)).render(Snapshot((view,))).decode()
    samples = parse_samples(text)
    assert value(samples, remaining.name, campaign_id=SECOND_EXAMPLE["id"]) == 1199
    assert promtool_check(text.encode()).returncode == 0


def test_a_cached_family_is_made_again_when_its_field_changes() -> None:
    """A family cached on a field shows the new value once that field changes, and the cached
    lines meanwhile (a stand-in extractor counts its calls)."""
    calls: list[str] = []

    def name_value(record: Any) -> int:
        calls.append(record.name)
        return len(record.name)

    family = RecordFamily(
        "dialnexa_campaign_name_length_test",
        "gauge",
        "Length of the name (a test family).",
        value=name_value,
        cached_on=("name",),
    )
    renderer = CampaignRenderer((family,))

    def render(document: dict[str, Any]) -> str:
        record = parse_campaign(document, "c")
        return renderer.render(Snapshot((CampaignView("c", record, True, 1.0),))).decode()

    assert 'name_length_test{campaign_id="c"} 2' in render({"id": "c", "name": "ab"})
    assert 'name_length_test{campaign_id="c"} 2' in render(
        {"id": "c", "name": "ab", "total_leads": 5}
    )
    assert calls == ["ab"]  # another field changed: the cached line was reused
    assert 'name_length_test{campaign_id="c"} 3' in render({"id": "c", "name": "abc"})
    assert calls == ["ab", "abc"]


def test_exporter_families_read_their_owners() -> None:
    """Build info, request counters and histogram, shards and reload status render from the
    objects that own them."""
    stats = RequestStats()
    for code, seconds in (("200", 0.005), ("200", 0.3), ("error", 20.0)):
        stats.observe_request(code, seconds)
    settings = load_settings(
        {
            "api_key": SecretStr("k"),
            "campaign_ids": ["a"],
            "shard_count": 3,
            "shard_index": 2,
        }
    )
    text = "".join(
        [
            render_exporter_families(BUILD_FAMILIES, BuildInfo("1.2.3", "3.11.7", "uvloop")),
            render_exporter_families(REQUEST_FAMILIES, stats),
            render_exporter_families(SHARD_FAMILIES, settings),
            render_exporter_families(RELOAD_FAMILIES, ReloadStatus(1700000000.0, False)),
        ]
    )
    samples = parse_samples(text)
    build = {"version": "1.2.3", "python_version": "3.11.7", "event_loop": "uvloop"}
    assert value(samples, "dialnexa_exporter_build_info", **build) == 1
    assert value(samples, "dialnexa_exporter_api_requests_total", code="200") == 2
    assert value(samples, "dialnexa_exporter_api_requests_total", code="error") == 1
    duration = "dialnexa_exporter_api_request_duration_seconds"
    assert value(samples, f"{duration}_bucket", le="0.01") == 1
    assert value(samples, f"{duration}_bucket", le="0.5") == 2
    assert value(samples, f"{duration}_bucket", le="10") == 2
    assert value(samples, f"{duration}_bucket", le="+Inf") == 3
    assert value(samples, f"{duration}_count") == 3
    assert value(samples, f"{duration}_sum") == pytest.approx(20.305)
    assert value(samples, "dialnexa_exporter_shard_index") == 2
    assert value(samples, "dialnexa_exporter_shards") == 3
    assert value(samples, "dialnexa_exporter_config_last_reload_successful") == 0
    reload_time = "dialnexa_exporter_config_last_reload_success_timestamp_seconds"
    assert value(samples, reload_time) == 1700000000
    assert promtool_check(text.encode()).returncode == 0


def test_a_family_without_samples_is_left_out_with_its_header() -> None:
    """No request yet: no requests_total family at all (not a bare HELP/TYPE)."""
    text = render_exporter_families(REQUEST_FAMILIES, RequestStats())
    assert "dialnexa_exporter_api_requests_total" not in text
    assert "dialnexa_exporter_api_request_duration_seconds_count 0" in text


def test_process_metrics_are_measured_when_asked() -> None:
    """Each call reads the process anew: CPU time spent between two calls shows."""
    process = ProcessMetrics()

    def cpu() -> float:
        found = value(parse_samples(process.text()), "process_cpu_seconds_total")
        assert found is not None
        return found

    before = cpu()
    for _ in range(20_000):  # bounded: seconds of CPU at most, ticks come every 10 ms
        if cpu() > before:
            break
        sum(range(10_000))
    assert cpu() > before


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ("São Paulo ☎", "São Paulo ☎"),
    ],
)
def test_label_escaping(raw: str, escaped: str) -> None:
    """Quotes, backslashes and newlines are escaped; other Unicode passes through."""
    assert escape_label_value(raw) == escaped


@pytest.mark.parametrize(
    ("number", "text"), [(5, "5"), (5.0, "5"), (0.25, "0.25"), (1e20, "1e+20"), (-0.0, "0")]
)
def test_value_formatting(number: float, text: str) -> None:
    """Integral values print without a decimal point; others round-trip exactly."""
    assert format_value(number) == text


@pytest.mark.parametrize(
    "field", [f for f in RECORD_FIELDS if f.metric], ids=lambda field: str(field.metric)
)
def test_each_declared_field_is_served_as_its_family(field: RecordField) -> None:
    """A record with only that field set (a distinct value) shows it in the field's family,
    scaled as declared, and in no other record family."""
    sent: dict[FieldKind, tuple[object, float]] = {
        FieldKind.STATUS: ("paused", 1),
        FieldKind.COUNT: (4321, 4321),
        FieldKind.NUMBER: (2.5, 2.5 * field.scale),
        FieldKind.TIMESTAMP: ("2024-03-01T09:00:00Z", 1709283600),
    }
    json_value, expected = sent[field.kind]
    record = parse_campaign({"id": "c", **record_document({field.attr: json_value})}, "c")
    text = CampaignRenderer().render(Snapshot((CampaignView("c", record, True, 1.0),))).decode()
    samples = parse_samples(text)
    extra = {"status": "paused"} if field.kind is FieldKind.STATUS else {}
    assert value(samples, str(field.metric), campaign_id="c", **extra) == expected
    shown = {name for name, _ in samples if name.startswith("dialnexa_campaign_")}
    assert shown == {"dialnexa_campaign_info", field.metric}


def test_process_metrics_read_like_prometheus_clients_own() -> None:
    """The process families are prometheus_client's, formatted here: the same names, types,
    help texts and (for those that do not move) values as generate_latest gives."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    theirs = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    ours = {f.name: f for f in text_string_to_metric_families(ProcessMetrics().text())}
    assert sorted(ours) == sorted(theirs)
    assert len(ours) >= 6
    for name, family in ours.items():
        assert (family.type, family.documentation) == (
            theirs[name].type,
            theirs[name].documentation,
        )
    for steady in ("process_max_fds", "process_start_time_seconds"):
        assert ours[steady].samples[0].value == theirs[steady].samples[0].value
    assert promtool_check(ProcessMetrics().text().encode()).returncode == 0
