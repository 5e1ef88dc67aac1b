"""Rendering snapshots: exact text from the production renderer, absent fields, escaping,
the cache, slicing, and promtool's verdict."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.api.models import parse_campaign
from exporter.exposition import render
from exporter.exposition.cache import ExpositionCache
from exporter.exposition.metrics import BUILD_FAMILIES, CAMPAIGN_FAMILIES, campaign_families
from exporter.exposition.render import CampaignRenderer, render_exporter_families
from exporter.polling.state import BuildInfo, CampaignView, Snapshot
from tests.helpers import FIRST_EXAMPLE, SECOND_EXAMPLE, parse_samples, promtool_check, value

BUILD = BuildInfo(version="1.2.3", python_version="3.11.7", event_loop="uvloop")


def snapshot_of(*views: CampaignView, **extra: Any) -> Snapshot:
    """A snapshot of the given campaigns."""
    return Snapshot(campaigns=views, **extra)


def render_exposition(snapshot: Snapshot) -> bytes:
    """The snapshot's text from a fresh production renderer (nothing cached)."""
    return CampaignRenderer().render(snapshot)


def view_of(document: dict[str, Any], **extra: Any) -> CampaignView:
    """A healthy view of one record."""
    campaign_id = document["id"]
    record = parse_campaign(document, campaign_id)
    fields: dict[str, Any] = {"up": True, "last_success": 1700000000.5}
    fields.update(extra)
    return CampaignView(campaign_id=campaign_id, record=record, **fields)


async def test_second_example_renders_exactly() -> None:
    """The /metrics body production builds (ExpositionCache, gzipped and finished with a
    scrape's exporter-wide part) for the API page's second example, line for line."""
    cache = ExpositionCache(
        [lambda: render_exporter_families(BUILD_FAMILIES, BUILD)], tune_memory=False
    )
    view = view_of(SECOND_EXAMPLE, errors=(("timeout", 2),))
    await cache.update(snapshot_of(view, last_poll_timestamp=1700000001.0, poll_duration=0.25))
    body = b"".join(cache.current.plain_chunks(cache.scrape_tail())).decode()
    cid = 'campaign_id="cmp_5tw8vz2rnx1q"'
    as_of = "As of the last successful fetch."
    assert body == (
        f"# HELP dialnexa_campaign_info Campaign metadata as labels; always 1. {as_of}\n"
        "# TYPE dialnexa_campaign_info gauge\n"
        f'dialnexa_campaign_info{{{cid},name="Q2 Lead Re-engagement",agent_id="agt_k7m2nq9xw4p8",'
        f'from_phone_number="+912234567890",organization_id=""}} 1\n'
        "# HELP dialnexa_campaign_status Campaign lifecycle status: 1 for the current state, 0 "
        f"for the others. {as_of}\n"
        "# TYPE dialnexa_campaign_status gauge\n"
        f'dialnexa_campaign_status{{{cid},status="draft"}} 0\n'
        f'dialnexa_campaign_status{{{cid},status="active"}} 1\n'
        f'dialnexa_campaign_status{{{cid},status="running"}} 0\n'
        f'dialnexa_campaign_status{{{cid},status="paused"}} 0\n'
        f'dialnexa_campaign_status{{{cid},status="completed"}} 0\n'
        f'dialnexa_campaign_status{{{cid},status="cancelled"}} 0\n'
        f'dialnexa_campaign_status{{{cid},status="unknown"}} 0\n'
        f"# HELP dialnexa_campaign_total_leads Leads enrolled in the campaign. {as_of}\n"
        "# TYPE dialnexa_campaign_total_leads gauge\n"
        f"dialnexa_campaign_total_leads{{{cid}}} 1200\n"
        f"# HELP dialnexa_campaign_completed_calls Calls the campaign has completed. {as_of}\n"
        "# TYPE dialnexa_campaign_completed_calls gauge\n"
        f"dialnexa_campaign_completed_calls{{{cid}}} 438\n"
        f"# HELP dialnexa_campaign_pending_calls Calls the campaign still has to make. {as_of}\n"
        "# TYPE dialnexa_campaign_pending_calls gauge\n"
        f"dialnexa_campaign_pending_calls{{{cid}}} 762\n"
        "# HELP dialnexa_campaign_max_concurrent_calls Configured maximum of simultaneous "
        f"calls. {as_of}\n"
        "# TYPE dialnexa_campaign_max_concurrent_calls gauge\n"
        f"dialnexa_campaign_max_concurrent_calls{{{cid}}} 5\n"
        "# HELP dialnexa_campaign_created_timestamp_seconds When the campaign was created, "
        f"Unix time. {as_of}\n"
        "# TYPE dialnexa_campaign_created_timestamp_seconds gauge\n"
        f"dialnexa_campaign_created_timestamp_seconds{{{cid}}} 1714554000\n"
        "# HELP dialnexa_exporter_campaign_up 1 while the last fetch of the campaign succeeded "
        "and its data is fresh (shown, younger than the stale limit), else 0.\n"
        "# TYPE dialnexa_exporter_campaign_up gauge\n"
        f"dialnexa_exporter_campaign_up{{{cid}}} 1\n"
        "# HELP dialnexa_exporter_campaign_last_success_timestamp_seconds Unix time of the last "
        "successful fetch of the campaign.\n"
        "# TYPE dialnexa_exporter_campaign_last_success_timestamp_seconds gauge\n"
        f"dialnexa_exporter_campaign_last_success_timestamp_seconds{{{cid}}} 1700000000.5\n"
        "# HELP dialnexa_exporter_campaign_errors_total Failed fetches of the campaign, by "
        "reason.\n"
        "# TYPE dialnexa_exporter_campaign_errors_total counter\n"
        f'dialnexa_exporter_campaign_errors_total{{{cid},reason="timeout"}} 2\n'
        "# HELP dialnexa_exporter_campaigns_configured Campaign ids this exporter (shard) "
        "polls.\n"
        "# TYPE dialnexa_exporter_campaigns_configured gauge\n"
        "dialnexa_exporter_campaigns_configured 1\n"
        "# HELP dialnexa_exporter_last_poll_timestamp_seconds Unix time at which the latest "
        "poll round finished.\n"
        "# TYPE dialnexa_exporter_last_poll_timestamp_seconds gauge\n"
        "dialnexa_exporter_last_poll_timestamp_seconds 1700000001\n"
        "# HELP dialnexa_exporter_poll_duration_seconds How long the latest poll round took.\n"
        "# TYPE dialnexa_exporter_poll_duration_seconds gauge\n"
        "dialnexa_exporter_poll_duration_seconds 0.25\n"
        "# HELP dialnexa_exporter_build_info Exporter build information; always 1.\n"
        "# TYPE dialnexa_exporter_build_info gauge\n"
        'dialnexa_exporter_build_info{version="1.2.3",python_version="3.11.7",event_loop="uvloop"}'
        " 1\n"
    )


def test_first_example_has_retry_settings_and_no_counters() -> None:
    """Absent counters give absent series (never 0); retry minutes become seconds."""
    samples = parse_samples(render_exposition(snapshot_of(view_of(FIRST_EXAMPLE))).decode())
    cid = FIRST_EXAMPLE["id"]
    assert value(samples, "dialnexa_campaign_retry_max_retries", campaign_id=cid) == 3
    assert value(samples, "dialnexa_campaign_retry_interval_seconds", campaign_id=cid) == 7200
    for absent in (
        "total_leads",
        "completed_calls",
        "pending_calls",
        "scheduled_timestamp_seconds",
    ):
        assert value(samples, f"dialnexa_campaign_{absent}", campaign_id=cid) is None, absent
    status = {
        dict(labels)["status"]: v
        for (name, labels), v in samples.items()
        if name == "dialnexa_campaign_status"
    }
    assert status == {
        "draft": 0,
        "active": 0,
        "running": 1,
        "paused": 0,
        "completed": 0,
        "cancelled": 0,
        "unknown": 0,
    }


def test_unknown_status_sets_only_unknown() -> None:
    """A status outside the enum turns on `unknown` and nothing else."""
    text = render_exposition(snapshot_of(view_of({"id": "c", "status": "archived"}))).decode()
    samples = parse_samples(text)
    ones = [
        dict(labels)["status"]
        for (name, labels), v in samples.items()
        if name == "dialnexa_campaign_status" and v == 1
    ]
    assert ones == ["unknown"]


def test_current_status_series_renders_only_the_current_state() -> None:
    """DIALNEXA_STATUS_SERIES=current serves one status series, value 1, and the same other
    families as `all` (only the status lines differ), and promtool accepts it."""
    views = (view_of(SECOND_EXAMPLE), view_of({"id": "c", "status": "archived"}))
    sparse = CampaignRenderer(campaign_families("current")).render(snapshot_of(*views)).decode()
    full = CampaignRenderer(campaign_families("all")).render(snapshot_of(*views)).decode()
    status_lines = [line for line in sparse.splitlines() if line.startswith("dialnexa_campaign_s")]
    assert status_lines == [
        'dialnexa_campaign_status{campaign_id="cmp_5tw8vz2rnx1q",status="active"} 1',
        'dialnexa_campaign_status{campaign_id="c",status="unknown"} 1',
    ]
    assert "the current state only, always 1 (DIALNEXA_STATUS_SERIES=current)" in sparse

    def others(text: str) -> list[str]:
        return [line for line in text.splitlines() if "dialnexa_campaign_status" not in line]

    assert others(sparse) == others(full)
    assert len(full.splitlines()) - len(sparse.splitlines()) == 2 * 6
    assert campaign_families("all") == CAMPAIGN_FAMILIES
    assert promtool_check(sparse.encode()).returncode == 0


def test_missing_status_renders_no_status_series() -> None:
    """A record without a status has no status series rather than a made-up state."""
    text = render_exposition(snapshot_of(view_of({"id": "c", "name": "n"}))).decode()
    assert "dialnexa_campaign_status{" not in text
    assert 'dialnexa_campaign_info{campaign_id="c",name="n"' in text


def test_down_campaign_without_data_keeps_health_series() -> None:
    """A campaign with no data still reports campaign_up 0 and its error counts."""
    down = CampaignView("c", None, up=False, last_success=None, errors=(("timeout", 3),))
    samples = parse_samples(render_exposition(snapshot_of(down)).decode())
    assert value(samples, "dialnexa_exporter_campaign_up", campaign_id="c") == 0
    assert (
        value(samples, "dialnexa_exporter_campaign_errors_total", campaign_id="c", reason="timeout")
        == 3
    )
    assert not [name for name, _ in samples if name.startswith("dialnexa_campaign_")]
    assert value(samples, "dialnexa_exporter_campaign_last_success_timestamp_seconds") is None


label_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(name=label_text, agent=label_text, phone=label_text, org=label_text)
def test_any_label_string_round_trips(name: str, agent: str, phone: str, org: str) -> None:
    """Whatever text the API sends in metadata comes back exactly through the parser."""
    document = {
        "id": "cmp_rt",
        "name": name,
        "agent_id": agent,
        "from_phone_number": phone,
        "organization_id": org,
        "status": "active",
    }
    samples = parse_samples(render_exposition(snapshot_of(view_of(document))).decode())
    info = [labels for (metric, labels) in samples if metric == "dialnexa_campaign_info"]
    assert len(info) == 1
    assert dict(info[0]) == {
        "campaign_id": "cmp_rt",
        "name": name,
        "agent_id": agent,
        "from_phone_number": phone,
        "organization_id": org,
    }


def test_cached_rendering_equals_fresh_rendering() -> None:
    """Reusing cached fragments gives byte-identical output to rendering from scratch."""
    renderer = CampaignRenderer()
    first = snapshot_of(view_of(SECOND_EXAMPLE), view_of(FIRST_EXAMPLE))
    assert renderer.render(first) == render_exposition(first)
    changed = dict(SECOND_EXAMPLE, completed_calls=439, pending_calls=761)
    second = snapshot_of(view_of(changed), first.campaigns[1])
    assert renderer.render(second) == render_exposition(second)
    assert b'dialnexa_campaign_completed_calls{campaign_id="cmp_5tw8vz2rnx1q"} 439' in (
        renderer.render(second)
    )
    third = snapshot_of(first.campaigns[1])
    assert renderer.render(third) == render_exposition(third)
    assert b"cmp_5tw8vz2rnx1q" not in renderer.render(third)


def test_slicing_does_not_change_the_exposition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered in slices of a campaign or two, the exposition is byte for byte the same and
    every family stays one contiguous group."""
    views = [
        view_of(dict(SECOND_EXAMPLE, id=f"cmp_{n}", completed_calls=n), errors=(("timeout", n),))
        for n in range(7)
    ]
    views.append(CampaignView("cmp_gone", None, up=False, last_success=None))
    views.append(view_of(dict(FIRST_EXAMPLE, scheduled_at="2024-06-01T10:00:00Z")))
    snapshot = snapshot_of(*views)
    whole = render_exposition(snapshot)
    monkeypatch.setattr(render, "FAMILY_SLICE", 2)
    monkeypatch.setattr(render, "RENDER_SLICE", 1)
    chunks: list[bytes] = []
    steps = sum(1 for _ in CampaignRenderer().render_steps(snapshot, chunks.append))
    sliced = b"".join(chunks)
    assert steps > 20  # really rendered in many slices
    assert sliced == whole
    names = [line.split("{")[0].split(" ")[0] for line in whole.decode().splitlines()]
    names = [name for name in names if name != "#"]
    groups = [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]
    assert len(groups) == len(set(groups))  # no family appears in two places
    assert promtool_check(sliced).returncode == 0


def test_promtool_accepts_a_full_exposition() -> None:
    """promtool check metrics finds no problem in an exposition with every family present."""
    scheduled = dict(FIRST_EXAMPLE, id="cmp_sched", scheduled_at="2024-06-01T10:00:00+02:00")
    snapshot = snapshot_of(
        view_of(SECOND_EXAMPLE, errors=(("server_error", 2),)),
        view_of(FIRST_EXAMPLE),
        view_of(scheduled),
        CampaignView("cmp_gone", None, up=False, last_success=None, errors=(("not_found", 1),)),
        last_poll_timestamp=1700000000.0,
        poll_duration=0.5,
    )
    result = promtool_check(render_exposition(snapshot))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.slow
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(name=label_text, phone=label_text)
def test_promtool_accepts_any_metadata(name: str, phone: str) -> None:
    """Arbitrary Unicode in labels never produces an exposition promtool rejects."""
    document = dict(SECOND_EXAMPLE, name=name, from_phone_number=phone)
    result = promtool_check(render_exposition(snapshot_of(view_of(document))))
    assert result.returncode == 0, result.stdout + result.stderr
