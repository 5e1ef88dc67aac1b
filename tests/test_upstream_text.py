"""Text from the API is bounded: hostile records give capped label values and a valid scrape,
and at N campaigns of records far past the caps the exporter keeps only what the caps allow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from exporter.api.client import MAX_BODY_BYTES
from exporter.api.models import TEXT_MAX_CHARS, TRUNCATION_MARK
from exporter.demo.simulator import Fault, FaultKind
from tests.benchmarks import bench_text_caps as bench
from tests.helpers import (
    StartExporter,
    StartSim,
    exporter_settings,
    promtool_check,
    value,
)

TEXT_LABELS = ("name", "agent_id", "from_phone_number", "organization_id")


def cut(text: str) -> str:
    """What docs/metrics.md says a text becomes: at most the cap, the last one the mark."""
    return text if len(text) <= TEXT_MAX_CHARS else text[: TEXT_MAX_CHARS - 1] + "…"


# Each record holds one kind of hostile text, long enough to be cut and short enough that the
# body (JSON-escaped) stays under the body cap.
HOSTILE: dict[str, dict[str, str]] = {
    "cmp_long": {"name": "N" * (MAX_BODY_BYTES - 4096)},
    "cmp_control": {"agent_id": "\x00\x01\x1b[2J\x1bc\r\t\x7f\x85" * (MAX_BODY_BYTES // 80)},
    "cmp_escapes": {"organization_id": '"\\\n' * (MAX_BODY_BYTES // 24)},
    "cmp_astral": {"from_phone_number": "😀" * (MAX_BODY_BYTES // 16)},
    "cmp_mixed": {
        "name": "a😀\\" * 100,
        "agent_id": "\u2028\u2029\ufeff" * 100,
        "from_phone_number": "+91 " + "9" * 200,
        "organization_id": "org_" + "…" * 300,
    },
    "cmp_surrogate": {"name": "x\ud800y\udfff" * 200, "agent_id": "\ud83d"},
}
# A body over the cap is refused, not read: the campaign shows no data, the others are unharmed.
OVER_THE_CAP = {"name": "M" * (MAX_BODY_BYTES + 1)}


def expected_label(sent: str) -> str:
    """The label value a text becomes: cut to the cap, a lone surrogate shown as U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", cut(sent))


async def test_hostile_records_give_capped_labels_and_a_valid_scrape(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """Texts of hundreds of kilobytes, control characters, quotes, backslashes, newlines,
    astral characters and lone surrogates become label values of at most the cap that read
    back as the text cut to it; promtool accepts the scrape; a body over the cap is refused
    and counted without touching the other campaigns."""
    sim = await start_simulator()
    for cid, texts in {**HOSTILE, "cmp_over": OVER_THE_CAP}.items():
        sim.sim.set_raw(cid, {"id": cid, "status": "active", "total_leads": 9, **texts})
    exporter = await start_exporter(exporter_settings(sim, [*HOSTILE, "cmp_over"]))

    def settled(samples: Any) -> bool:
        over = value(
            samples,
            "dialnexa_exporter_campaign_errors_total",
            campaign_id="cmp_over",
            reason="invalid_response",
        )
        infos = [name for name, _ in samples if name == "dialnexa_campaign_info"]
        return over is not None and len(infos) == len(HOSTILE)

    samples = await exporter.wait_published(settled, "every hostile record handled")
    text = await exporter.metrics_text()
    result = promtool_check(text.encode())
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(text.encode()) < 200_000  # the scrape holds caps, not the records
    infos = {
        labels["campaign_id"]: labels
        for labels in (dict(key) for name, key in samples if name == "dialnexa_campaign_info")
    }
    assert set(infos) == set(HOSTILE)
    for cid, texts in HOSTILE.items():
        for label in TEXT_LABELS:
            shown = infos[cid][label]
            assert len(shown) <= TEXT_MAX_CHARS, (cid, label)
            assert shown == expected_label(texts.get(label, "")), (cid, label)
    assert infos["cmp_long"]["name"].endswith(TRUNCATION_MARK)
    assert value(samples, "dialnexa_exporter_campaign_up", campaign_id="cmp_over") == 0
    assert value(samples, "dialnexa_campaign_total_leads", campaign_id="cmp_long") == 9


async def test_raw_invalid_utf8_in_a_body_is_refused_and_counted(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """A body with bytes that are not UTF-8 inside a string is not a record (RFC 8259): it is
    counted as invalid_response and never reaches a label."""
    sim = await start_simulator()
    body = b'{"id": "cmp_bytes", "name": "bad \xff\xfe\xc0\x80 name"}'
    sim.sim.set_fault(Fault(FaultKind.BODY, body=body), "cmp_bytes")
    sim.sim.set_raw("cmp_fine", {"id": "cmp_fine", "name": "fine"})
    exporter = await start_exporter(exporter_settings(sim, ["cmp_bytes", "cmp_fine"]))
    samples = await exporter.wait_published(
        lambda s: (
            value(
                s,
                "dialnexa_exporter_campaign_errors_total",
                campaign_id="cmp_bytes",
                reason="invalid_response",
            )
            is not None
        ),
        "the undecodable body counted",
    )
    names = [dict(key).get("name") for name, key in samples if name == "dialnexa_campaign_info"]
    assert names == ["fine"]
    assert promtool_check((await exporter.metrics_text()).encode()).returncode == 0


@pytest.mark.slow
def test_records_far_past_the_caps_cost_what_records_at_the_caps_cost(tmp_path: Path) -> None:
    """Spawned exporters at 1,000 campaigns: texts 8 times the cap keep no more memory than
    texts exactly at the cap (the cut is all that is kept), every label is at most the cap, and
    promtool accepts the scrape; the absolute figure at 10,000 is bench_text_caps'."""
    n = 1000
    far = bench.run(n, 8 * TEXT_MAX_CHARS, 5.0, False, tmp_path / "far")
    at_cap = bench.run(n, TEXT_MAX_CHARS, 5.0, False, tmp_path / "at-cap")
    for figures in (far, at_cap):
        assert figures.info_lines == n
        assert figures.longest_label == TEXT_MAX_CHARS
        assert figures.promtool == "passed"
        assert figures.peak < bench.CHART_LIMIT
    assert far.labels_cut == 4 * n
    assert at_cap.labels_cut == 0
    assert far.body_bytes > 6 * at_cap.body_bytes
    # The scrape is the same size, and so is what a campaign keeps; resident memory differs by
    # what the longer bodies in flight leave behind (more on a loaded machine). Without the cut,
    # texts 8 times longer would add about 30 MiB here and make the scrape several times larger.
    assert far.plain_bytes < 1.1 * at_cap.plain_bytes
    grown_far = far.rss["second round"] - far.rss["listening"]
    grown_at_cap = at_cap.rss["second round"] - at_cap.rss["listening"]
    assert grown_far < 1.6 * grown_at_cap + 4 * bench.MIB, bench.report(far)


@pytest.mark.e2e
def test_a_real_prometheus_accepts_a_scrape_of_records_far_past_the_caps(tmp_path: Path) -> None:
    """Prometheus scrapes 300 campaigns whose texts run 8 times past the cap: the target is up,
    it took every sample, and the info series it stored carries the cut name."""
    n = 300
    figures = bench.run(n, 8 * TEXT_MAX_CHARS, 5.0, True, tmp_path)
    assert figures.prometheus["up"] == "1"
    scraped = int(figures.prometheus["scrape_samples_scraped"])
    # The exporter-wide series may differ by a few between this scrape and Prometheus' own.
    assert abs(scraped - figures.samples) <= 5, (scraped, figures.samples)
    assert scraped > 17 * n
    assert figures.prometheus["stored name is the cut name"] == "True"
    assert figures.prometheus["stored name length"] == str(TEXT_MAX_CHARS)
