"""Benchmark: the exporter at N campaigns whose every text field is far past its cap.

Run from the repository root (about a minute at 10,000 campaigns):

    .venv/bin/python -m tests.benchmarks.bench_text_caps --campaigns 10000
    .venv/bin/python -m tests.benchmarks.bench_text_caps --campaigns 10000 --prometheus

The simulator (``dialnexa-exporter simulator --text-length L``) serves N load campaigns whose
name, agent_id, from_phone_number and organization_id are each L random characters (mostly
astral: 4 bytes in UTF-8 and in the exporter's memory, 12 in the escaped JSON body; some
quotes, backslashes, newlines and control characters), distinct between campaigns for their
first 300. The exporter (``python -m exporter``, a separate process, every campaign polled
every ``--poll`` seconds) keeps each text cut to its cap. Measured: the exporter's peak and
current resident memory (``VmHWM``, ``VmRSS`` in /proc/<pid>/status) after the first round,
after scrapes and after a second round; the /metrics body, gzipped and plain; what the plain
body holds (every info label at most the cap and ending in the mark, ``promtool check
metrics``); with ``--prometheus``, a real Prometheus scraping it (``up``,
``scrape_samples_scraped``, and the name label it stored for one campaign). The figures are
printed as one markdown table, beside the chart's memory limit (256 Mi).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from exporter.api.models import TEXT_MAX_CHARS, TRUNCATION_MARK
from tests.benchmarks.bench_exporter import (
    API_KEY,
    BenchmarkError,
    ExporterProcess,
    campaign_ids,
    exporter_requests,
    load_average,
    memory_bytes,
    parse_exposition,
    start_exporter,
    start_simulator,
    wait_ready,
    wait_until,
)
from tests.helpers import promtool_binary
from tests.prometheus_server import start_prometheus

MIB = 1024 * 1024
CHART_LIMIT = 256 * MIB  # helm/dialnexa-exporter/values.yaml: resources.limits.memory
TEXT_LABELS = ("name", "agent_id", "from_phone_number", "organization_id")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass
class CapFigures:
    """What one run measured."""

    campaigns: int
    text_length: int
    body_bytes: int  # one record as the simulator sends it
    rss: dict[str, int] = field(default_factory=dict)  # moment → VmRSS
    hwm: dict[str, int] = field(default_factory=dict)  # moment → VmHWM
    gzip_bytes: int = 0
    plain_bytes: int = 0
    info_lines: int = 0
    samples: int = 0  # sample lines of the plain body
    longest_label: int = 0
    labels_cut: int = 0
    promtool: str = ""
    prometheus: dict[str, str] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def peak(self) -> int:
        """The highest VmHWM seen."""
        return max(self.hwm.values())


def unescape(text: str) -> str:
    """A label value as the text format escapes it, read back."""
    return re.sub(r"\\[\\\"n]", lambda match: _ESCAPES[match.group(0)], text)


def info_labels(body: str) -> list[dict[str, str]]:
    """The labels of every dialnexa_campaign_info line of a plain exposition."""
    return [
        {name: unescape(value) for name, value in _LABEL.findall(line)}
        for line in body.split("\n")  # not splitlines(): a raw \r may be in a label
        if line.startswith("dialnexa_campaign_info{")
    ]


def shown(exporter: ExporterProcess) -> float:
    """Campaigns whose data the exporter shows now."""
    _, _, body, _ = exporter.client.get("/metrics", {"Accept-Encoding": "gzip"})
    return parse_exposition(gzip.decompress(body))["info"]


def read_memory(figures: CapFigures, exporter: ExporterProcess, moment: str) -> None:
    """Note the exporter's VmRSS and VmHWM at ``moment``."""
    figures.rss[moment] = memory_bytes(exporter.pid, "VmRSS")
    figures.hwm[moment] = memory_bytes(exporter.pid, "VmHWM")


def check_scrapes(figures: CapFigures, exporter: ExporterProcess, workdir: Path) -> str:
    """Scrape gzipped and plain; check what the plain body holds; its text."""
    _, headers, zipped, _ = exporter.client.get("/metrics", {"Accept-Encoding": "gzip"})
    if headers.get("Content-Encoding") != "gzip":
        raise BenchmarkError("/metrics did not answer gzip")
    figures.gzip_bytes = len(zipped)
    _, _, plain, _ = exporter.client.get("/metrics", {"Accept-Encoding": "identity"})
    figures.plain_bytes = len(plain)
    text = plain.decode("utf-8")
    figures.samples = sum(1 for line in text.split("\n") if line and not line.startswith("#"))
    labels = info_labels(text)
    figures.info_lines = len(labels)
    values = [found[name] for found in labels for name in TEXT_LABELS]
    figures.longest_label = max(map(len, values), default=0)
    figures.labels_cut = sum(value.endswith(TRUNCATION_MARK) for value in values)
    path = workdir / "metrics.txt"
    path.write_bytes(plain)
    with path.open("rb") as body:
        result = subprocess.run(
            [promtool_binary(), "check", "metrics"],
            stdin=body,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    problems = (result.stdout + result.stderr).strip()
    figures.promtool = "passed" if result.returncode == 0 else f"failed: {problems[:300]}"
    return text


def scrape_with_prometheus(
    figures: CapFigures, exporter: ExporterProcess, expected_name: str, workdir: Path
) -> None:
    """A real Prometheus scrapes the exporter; note what it says and the name it stored."""
    target = exporter.url.removeprefix("http://")
    config = (
        "global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\n"
        f"scrape_configs:\n  - job_name: caps\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    server = start_prometheus(workdir / "prometheus", config)
    try:

        def scraped() -> bool:
            return bool(server.query('scrape_samples_scraped{job="caps"} > 0'))

        wait_until(scraped, 120, "a Prometheus scrape", every=0.5)
        up = server.query('up{job="caps"}')
        samples = server.query('scrape_samples_scraped{job="caps"}')
        took = server.query('scrape_duration_seconds{job="caps"}')
        cid = campaign_ids(1)[0]
        info = server.query(f'dialnexa_campaign_info{{campaign_id="{cid}"}}')
        stored = info[0]["metric"].get("name", "") if info else ""
        figures.prometheus = {
            "up": up[0]["value"][1] if up else "absent",
            "scrape_samples_scraped": samples[0]["value"][1] if samples else "absent",
            "scrape_duration_seconds": took[0]["value"][1] if took else "absent",
            "stored name is the cut name": str(bool(stored) and stored == expected_name),
            "stored name length": str(len(stored)),
        }
    finally:
        server.stop()


def run(n: int, text_length: int, poll: float, prometheus: bool, workdir: Path) -> CapFigures:
    """Every figure for ``n`` campaigns of texts ``text_length`` characters long."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sim = start_simulator(
            stack, n, workdir, ["--text-length", str(text_length)], start_seconds=120
        )
        ids = campaign_ids(n)
        _, _, record, _ = sim.client.get(
            f"/v1/campaigns/{ids[0]}", {"Authorization": f"Bearer {API_KEY}"}
        )
        figures = CapFigures(n, text_length, len(record))
        load_before = load_average()
        exporter = start_exporter(stack, sim, ids, workdir, poll=poll, terminal=poll)
        read_memory(figures, exporter, "listening")
        wait_ready(exporter, timeout=300)
        read_memory(figures, exporter, "first round")
        wait_until(lambda: shown(exporter) >= n, 600, "every campaign's data", every=1.0)
        read_memory(figures, exporter, "every campaign shown")
        text = check_scrapes(figures, exporter, workdir)
        read_memory(figures, exporter, "after scrapes")
        wait_until(lambda: exporter_requests(exporter) >= 2 * n, 300, "a second round", every=0.5)
        read_memory(figures, exporter, "second round")
        if prometheus:
            first = next(found for found in info_labels(text) if found["campaign_id"] == ids[0])
            scrape_with_prometheus(figures, exporter, first["name"], workdir)
            read_memory(figures, exporter, "Prometheus scraped")
        figures.load = (load_before, load_average())
        return figures


def _mib(value: int) -> str:
    return f"{value / MIB:.1f} MiB"


def report(figures: CapFigures) -> str:
    """The figures as a markdown table."""
    rows = [
        ("campaigns", f"{figures.campaigns:,}"),
        (
            "each text field as sent",
            (f"{figures.text_length:,} characters" if figures.text_length else "as in the load mix")
            + f" (one record: {figures.body_bytes:,} bytes)",
        ),
    ]
    for moment, rss in figures.rss.items():
        rows.append((f"RSS {moment} (VmRSS / VmHWM)", f"{_mib(rss)} / {_mib(figures.hwm[moment])}"))
    verdict = "under" if figures.peak < CHART_LIMIT else "OVER"
    rows += [
        ("peak RSS against the chart's limit", f"{_mib(figures.peak)}: {verdict} 256 MiB"),
        ("/metrics gzipped", f"{figures.gzip_bytes / 1e6:.1f} MB"),
        ("/metrics plain", f"{figures.plain_bytes / 1e6:.1f} MB"),
        ("info lines; samples", f"{figures.info_lines:,}; {figures.samples:,}"),
        ("longest label value", f"{figures.longest_label} characters (cap {TEXT_MAX_CHARS})"),
        ("text labels ending in the mark", f"{figures.labels_cut:,}"),
        ("promtool check metrics", figures.promtool),
    ]
    rows += [(f"Prometheus: {name}", value) for name, value in figures.prometheus.items()]
    rows.append(("load average before / after", f"{figures.load[0]:.2f} / {figures.load[1]:.2f}"))
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    """Run once and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--text-length", type=int, default=1024)
    parser.add_argument("--poll", type=float, default=20.0, help="poll interval, seconds")
    parser.add_argument("--prometheus", action="store_true", help="also scrape with Prometheus")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-caps-") as directory:
        figures = run(args.campaigns, args.text_length, args.poll, args.prometheus, Path(directory))
    print(report(figures))
    print(f"\n(run took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
