"""Benchmark: every query of the Grafana dashboard on a real Prometheus scraping N campaigns.

Run from the repository root (about three minutes per mode at 10,000 campaigns on a 2-core
machine):

    .venv/bin/python -m tests.benchmarks.bench_dashboard --campaigns 10000

The simulator (N load campaigns, speed 1) and the exporter run as separate processes, as in
bench_exporter; a real Prometheus scrapes the exporter every SCRAPE_SECONDS with the canonical
rule file loaded (recording rules and alerts, so ALERTS and ALERTS_FOR_STATE exist: a tenth of
the load campaigns are paused, and DialNexaCampaignPaused is pending for each). Once every
campaign is in Prometheus and the recording rules have values, each query of the dashboard runs
as Grafana sends it:

- `$job` and `$campaign` are "All" (`.*`), the hidden top-N variables are resolved by their own
  query_result() queries (as Grafana does, with "All" selected);
- the time range is the dashboard's default, the last 6 hours: `$__range` is 6h, `$__interval`
  what Grafana makes of 6 hours over about 1,000 points (20s, never below the scrape interval),
  `$__rate_interval` max(`$__interval` + scrape interval, 4 times the scrape interval);
- instant panels (stats, tables, bar gauges) are evaluated at the end of the range, range panels
  over the whole range at a step of `$__interval`.

Each query runs REPEAT times; the table gives the series (or table rows) it returned, the samples
it read (Prometheus' own count, `stats=all`: the one figure that does not depend on the machine)
and the median and slowest time the client saw (request sent to JSON parsed), first while
Prometheus scrapes and evaluates the rules, then once more with both stopped (a reload without
them; the queries then evaluate at the moment before), where Prometheus' own CPU time per query
is read from /proc as well. On a shared machine `--nice -10` gives Prometheus and the client
priority while they query. The data spans only the
minutes the run lasts, so a range query evaluates the 10,000 campaigns at only the last few of
its steps: the per-campaign panels select their at most 50 campaigns through the top-N
variables before reading any sample, which keeps their cost that of 50 series at any range.
Also printed, per status-series mode: samples per scrape, the Prometheus head's series, the
scrape's duration and Prometheus' resident memory.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.demo.prometheus import render_config
from tests.benchmarks import bench_exporter as bench
from tests.helpers import (
    JOB,
    RULE_FILE,
    data_panels,
    load_dashboard,
    query_result_variables,
    resolve_query_result_variables,
    substitute_variables,
    variable_query,
)
from tests.prometheus_server import PrometheusServer, start_prometheus

SCRAPE_SECONDS = 15  # Grafana's default scrape interval for a Prometheus data source
POLL_SECONDS = 20.0
RANGE_SECONDS = 6 * 3600  # the dashboard's default time range
MAX_DATA_POINTS = 1000  # about a half-screen-wide panel's width in pixels
REPEAT = 3
# Grafana's interval rounding (rangeutil.roundInterval): below the first bound, the value.
_ROUNDING = (
    (1.5, 1),
    (3.5, 2),
    (7.5, 5),
    (12.5, 10),
    (17.5, 15),
    (25, 20),
    (45, 30),
    (90, 60),
    (210, 120),
    (450, 300),
    (750, 600),
    (1050, 900),
    (1500, 1200),
    (2700, 1800),
    (5400, 3600),
)

Progress = Callable[[str], None]


def grafana_interval(range_seconds: float, max_points: int, scrape_seconds: float) -> int:
    """``$__interval`` as Grafana computes it: the range over the points, rounded to a tidy
    interval, never below the data source's scrape interval."""
    raw = range_seconds / max_points
    rounded = next((tidy for bound, tidy in _ROUNDING if raw < bound), 3600)
    return int(max(rounded, scrape_seconds))


def grafana_variables(
    range_seconds: int, scrape_seconds: int, min_interval: int = 0
) -> dict[str, str]:
    """The built-in and user variables as Grafana substitutes them with "All" selected, for a
    panel whose minimum interval is ``min_interval`` (0: none set)."""
    floor = max(scrape_seconds, min_interval)  # a panel's min interval replaces the scrape's
    interval = grafana_interval(range_seconds, MAX_DATA_POINTS, floor)
    rate_interval = max(interval + floor, 4 * floor)
    return {
        "datasource": "prometheus",
        "job": ".*",
        "campaign": ".*",
        "__interval": f"{interval}s",
        "__rate_interval": f"{rate_interval}s",
        "__range": f"{range_seconds}s",
        "__range_s": str(range_seconds),
    }


def duration_seconds(text: str) -> int:
    """Seconds of a Grafana interval such as ``30s``, ``1m`` or ``2h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    return int(text[:-1]) * units[text[-1]]


@dataclass(frozen=True)
class QueryFigures:
    """One query of the dashboard as measured."""

    panel: str
    ref_id: str
    kind: str  # "instant", "range", or "variable" (a query_result() variable's query)
    table: bool
    series: int
    samples: int  # samples the query read (Prometheus' totalQueryableSamples)
    median: float
    slowest: float
    cpu: float  # Prometheus' CPU seconds per run, median (NaN: not measured)


@dataclass(frozen=True)
class PrometheusCost:
    """What scraping the exporter costs the Prometheus, in one status-series mode."""

    samples_per_scrape: int
    head_series: int
    scrape_seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class DashboardRun:
    """One mode's run: the cost, and every query's figures."""

    campaigns: int
    status_series: str
    cost: PrometheusCost
    queries: list[QueryFigures]  # while Prometheus scrapes and evaluates the rules
    quiet: list[QueryFigures]  # the same queries, Prometheus doing nothing else
    load: float  # the machine's 1-minute load average after the queries
    niceness: int  # of Prometheus and the client while querying (0: as started)


Fetch = Callable[[], dict[str, Any]]


def instant(server: PrometheusServer, expr: str, at: float) -> Fetch:
    """An instant query at ``at``, with Prometheus' query statistics."""
    params = [("query", expr), ("time", f"{at:.3f}"), ("stats", "all")]
    return lambda: dict(server.get("/api/v1/query", params))


def ranged(server: PrometheusServer, expr: str, start: float, end: float, step: int) -> Fetch:
    """A range query, with Prometheus' query statistics."""
    params = [
        ("query", expr),
        ("start", f"{start:.3f}"),
        ("end", f"{end:.3f}"),
        ("step", str(step)),
        ("stats", "all"),
    ]
    return lambda: dict(server.get("/api/v1/query_range", params))


def _timed(fetch: Fetch, repeat: int, cpu_pid: int | None) -> tuple[int, int, float, float, float]:
    """Series returned, samples read, median and slowest wall time of ``repeat`` runs, and the
    median CPU time process ``cpu_pid`` (Prometheus) spent meanwhile."""
    durations: list[float] = []
    cpu: list[float] = []
    data: dict[str, Any] = {}
    for _ in range(repeat):
        cpu_before = bench.cpu_seconds(cpu_pid) if cpu_pid is not None else math.nan
        started = time.perf_counter()
        data = fetch()
        durations.append(time.perf_counter() - started)
        if cpu_pid is not None:
            cpu.append(bench.cpu_seconds(cpu_pid) - cpu_before)
    samples = int(data.get("stats", {}).get("samples", {}).get("totalQueryableSamples", -1))
    spent = statistics.median(cpu) if cpu else math.nan
    return len(data["result"]), samples, statistics.median(durations), max(durations), spent


def measure_queries(
    server: PrometheusServer,
    range_seconds: int,
    *,
    repeat: int = REPEAT,
    end: float | None = None,
    cpu_pid: int | None = None,
    scrape_seconds: int = SCRAPE_SECONDS,
) -> list[QueryFigures]:
    """Run the variables' and every panel's queries as Grafana would for the ``range_seconds``
    up to ``end`` (default: now), ``repeat`` times each, for a data source scraped every
    ``scrape_seconds``; with ``cpu_pid``, that process's CPU time per query too."""
    end = time.time() if end is None else end
    start = end - range_seconds
    variables = grafana_variables(range_seconds, scrape_seconds)
    figures = []
    for name in query_result_variables():
        expr = substitute_variables(variable_query(name), variables)
        expr = expr.removeprefix("query_result(").removesuffix(")")
        measured = _timed(instant(server, expr, end), repeat, cpu_pid)
        figures.append(QueryFigures(f"${name}", "-", "variable", False, *measured))
    chosen = resolve_query_result_variables(lambda e: server.query(e, at=end), variables)
    for panel in data_panels(load_dashboard()):
        min_interval = duration_seconds(panel["interval"]) if "interval" in panel else 0
        own = {**grafana_variables(range_seconds, scrape_seconds, min_interval), **chosen}
        step = duration_seconds(own["__interval"])
        for target in panel["targets"]:
            expr = substitute_variables(target["expr"], own)
            if target.get("instant"):
                fetch = instant(server, expr, end)
            else:
                fetch = ranged(server, expr, start, end, step)
            figures.append(
                QueryFigures(
                    panel["title"],
                    target["refId"],
                    "instant" if target.get("instant") else "range",
                    target.get("format") == "table",
                    *_timed(fetch, repeat, cpu_pid),
                )
            )
    return figures


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    bench.wait_until(check, timeout, what, every=1.0)


def wait_for_data(server: PrometheusServer, n: int, progress: Progress) -> None:
    """Until every campaign is in Prometheus, the recording rules have values for most of the
    moving ones, and the paused campaigns' alerts are pending."""

    def count(expr: str) -> float:
        result = server.query(f"count({expr})")
        return float(result[0]["value"][1]) if result else 0.0

    _wait(lambda: count("dialnexa_exporter_campaign_up") >= n, 300, "every campaign scraped")
    progress("every campaign is in Prometheus")
    _wait(lambda: count('ALERTS{alertname="DialNexaCampaignPaused"}') > 0, 120, "paused alerts")
    # The pace needs two different completed_calls values in its window (two polls apart); the
    # slowest ETAs panel shows 20, the Progress row 25 campaigns.
    _wait(
        lambda: count("campaign:dialnexa_campaign_remaining_seconds:estimate") >= 100,
        300,
        "time-to-finish estimates of a hundred campaigns",
    )
    # A campaign whose first fetch failed (a loaded machine) has its values a poll later, and its
    # pace a scrape and an evaluation after that: the Throughput panel draws the pace of the 25
    # campaigns with most calls pending, which may be among them.
    _wait(
        lambda: (
            count("campaign:dialnexa_campaign_completed_calls:deriv5m")
            >= count("dialnexa_campaign_completed_calls")
        ),
        120,
        "a pace for every campaign with values",
    )
    # The status code is another rule group's, evaluated on its own schedule (about a second a
    # pass at 10,000 campaigns): the "changed most" variable reads it.
    _wait(
        lambda: count("campaign:dialnexa_campaign_status:code") >= count("dialnexa_campaign_info"),
        120,
        "a status code for every campaign with values",
    )
    progress("recording rules and alerts have values")


def prometheus_cost(server: PrometheusServer) -> PrometheusCost:
    """Samples per scrape, head series, scrape duration and resident memory, as now."""

    def one(expr: str) -> float:
        result = server.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    head = server.get("/api/v1/status/tsdb")["headStats"]["numSeries"]
    return PrometheusCost(
        samples_per_scrape=int(one(f'scrape_samples_scraped{{job="{JOB}"}}')),
        head_series=int(head),
        scrape_seconds=one(f'scrape_duration_seconds{{job="{JOB}"}}'),
        rss_bytes=bench.memory_bytes(server.process.pid),
    )


def silence(server: PrometheusServer, scrape_seconds: int = SCRAPE_SECONDS) -> float:
    """Stop Prometheus' scraping and rule evaluation (a configuration reload without either);
    returns a moment just before, at which every series still has its last sample."""
    before = time.time() - 1
    config = {
        "global": {
            "scrape_interval": f"{scrape_seconds}s",
            "evaluation_interval": f"{scrape_seconds}s",
        }
    }
    (server.workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    server.process.send_signal(signal.SIGHUP)
    _wait(lambda: not server.targets() and not server.rule_groups(), 60, "Prometheus idle")
    return before


def set_niceness(pid: int, niceness: int) -> None:
    """Give every thread of process ``pid`` the scheduling ``niceness`` (Linux: per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


def run_mode(
    n: int,
    status_series: str,
    workdir: Path,
    progress: Progress,
    *,
    repeat: int = REPEAT,
    niceness: int = 0,
    idle: bool = True,
    scrape_seconds: int = SCRAPE_SECONDS,
    poll_seconds: float = POLL_SECONDS,
) -> DashboardRun:
    """Simulator, exporter (in ``status_series`` mode, polling every ``poll_seconds``) and
    Prometheus (scraping and evaluating the rules every ``scrape_seconds``) for ``n`` campaigns;
    the cost and every dashboard query measured (with ``idle``, a second time with Prometheus'
    scraping and rules stopped); everything stopped again. The test passes shorter intervals
    than the benchmark's: what the queries return does not depend on them, only how long the
    data takes to arrive."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sim = bench.start_simulator(stack, n, workdir)
        exporter = bench.start_exporter(
            stack,
            sim,
            bench.campaign_ids(n),
            workdir,
            poll=poll_seconds,
            terminal=600.0,
            extra_env={"DIALNEXA_STATUS_SERIES": status_series},
        )
        bench.wait_ready(exporter, 300)
        progress(f"{status_series}: exporter ready with {n} campaigns")
        config = render_config(
            targets=[exporter.url.removeprefix("http://")],
            rule_files=[RULE_FILE],
            scrape_interval_seconds=scrape_seconds,
            evaluation_interval_seconds=scrape_seconds,
            job=JOB,
        )
        server = start_prometheus(workdir / "prometheus", config)
        stack.callback(server.stop)
        wait_for_data(server, n, progress)
        cost = prometheus_cost(server)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        if niceness:  # on a shared machine: Prometheus and this client first while querying
            set_niceness(server.process.pid, niceness)
            set_niceness(os.getpid(), niceness)
        try:
            queries = measure_queries(
                server, RANGE_SECONDS, repeat=repeat, scrape_seconds=scrape_seconds
            )
            load = bench.load_average()
            progress(f"{status_series}: {len(queries)} queries measured")
            quiet = []
            if idle:
                at = silence(server, scrape_seconds)
                quiet = measure_queries(
                    server,
                    RANGE_SECONDS,
                    repeat=repeat,
                    end=at,
                    cpu_pid=server.process.pid,
                    scrape_seconds=scrape_seconds,
                )
                progress(f"{status_series}: measured again, Prometheus otherwise idle")
        finally:
            set_niceness(os.getpid(), own)  # the next mode's processes inherit it
    return DashboardRun(n, status_series, cost, queries, quiet, load, niceness)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def query_table(run: DashboardRun) -> str:
    """One markdown row per query of one mode: series (rows), samples read, time while
    Prometheus scrapes and evaluates rules, time and Prometheus CPU with it otherwise idle."""
    lines = [
        "| panel | query | kind | series | samples read | time (live) | time (idle) | "
        "Prometheus CPU (idle) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for live, quiet in zip(run.queries, run.quiet, strict=True):
        unit = " rows" if live.table else ""
        cells = [
            live.panel,
            live.ref_id,
            live.kind + (" table" if live.table else ""),
            f"{live.series}{unit}",
            f"{live.samples:,}",
            f"{_ms(live.median)} (max {_ms(live.slowest)})",
            f"{_ms(quiet.median)} (max {_ms(quiet.slowest)})",
            _ms(quiet.cpu),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(runs: Sequence[DashboardRun]) -> str:
    """What each status-series mode costs Prometheus."""
    lines = [
        "| DIALNEXA_STATUS_SERIES | samples per scrape | head series | scrape duration | "
        "Prometheus RSS |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        cost = run.cost
        lines.append(
            f"| `{run.status_series}` | {cost.samples_per_scrape:,} | {cost.head_series:,} | "
            f"{_ms(cost.scrape_seconds)} | {cost.rss_bytes / 2**20:.0f} MiB |"
        )
    return "\n".join(lines)


def build_report(runs: Sequence[DashboardRun]) -> str:
    """The whole report: settings, the queries' table and the cost table."""
    variables = grafana_variables(RANGE_SECONDS, SCRAPE_SECONDS)
    return (
        f"{runs[0].campaigns:,} campaigns; Prometheus scraping every {SCRAPE_SECONDS}s; "
        f"$__range {variables['__range']}, $__interval {variables['__interval']}, "
        f"$__rate_interval {variables['__rate_interval']}; each query {REPEAT} times, "
        "median (slowest); load average "
        + ", ".join(f"{run.load:.1f} ({run.status_series})" for run in runs)
        + f" on {os.cpu_count()} CPUs"
        + (
            f"; Prometheus and the client at niceness {runs[0].niceness}"
            if runs[0].niceness
            else ""
        )
        + ".\n\n"
        + "\n\n".join(
            f"DIALNEXA_STATUS_SERIES={run.status_series}:\n\n{query_table(run)}" for run in runs
        )
        + "\n\n"
        + cost_table(runs)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark in each mode and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--campaigns", type=int, default=10000)
    parser.add_argument(
        "--status-series", nargs="+", choices=("all", "current"), default=["all", "current"]
    )
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of Prometheus and this client while querying (-10 on a busy machine; "
        "below 0 needs root)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] {text}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="dialnexa-dashboard-") as tmp:
        try:
            runs = [
                run_mode(args.campaigns, mode, Path(tmp) / mode, progress, niceness=args.nice)
                for mode in args.status_series
            ]
        except bench.BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    report = build_report(runs)
    print(report)
    if args.output is not None:
        args.output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
