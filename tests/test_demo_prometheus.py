"""The demo's optional Prometheus (and its Alertmanager): packaged rule file, scaled rules,
config, process lifecycle.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.demo import prometheus as demo_prometheus
from exporter.demo.alertmanager import BINARIES
from exporter.demo.process import duration_seconds
from exporter.demo.prometheus import (
    RULES_FILE_NAME,
    DemoPrometheusSession,
    local_url,
    optional_demo_prometheus,
    packaged_rules_text,
    render_config,
    scale_expression,
    scale_rule_durations,
)
from tests.helpers import (
    ROOT,
    RULE_FILE,
    StartExporter,
    StartSim,
    campaign,
    exporter_settings,
    load_yaml,
    recording_rule_names,
    run_promtool,
    wait_for,
)
from tests.prometheus_server import PrometheusAPI, free_port, port_is_open

PACKAGED_RULE_FILE = ROOT / "exporter" / "rules" / RULES_FILE_NAME


def entries(directory: Path) -> list[str]:
    """Names in ``directory``: what a test left behind there."""
    return sorted(os.listdir(directory))


# --- the packaged rule file ------------------------------------------------------------------


def test_packaged_rule_file_is_identical_to_the_canonical_file() -> None:
    """exporter/rules/ holds a byte-identical copy of the canonical rule file, and it is loaded."""
    assert PACKAGED_RULE_FILE.read_bytes() == RULE_FILE.read_bytes()
    assert packaged_rules_text() == RULE_FILE.read_text(encoding="utf-8")


def test_packaged_rule_file_is_declared_package_data() -> None:
    """pyproject.toml's package-data for `exporter` has a glob that matches the rule file."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["exporter"]
    relative = PACKAGED_RULE_FILE.relative_to(ROOT / "exporter")
    assert any(relative.match(pattern) for pattern in globs), globs


# --- scaling durations -----------------------------------------------------------------------


def test_duration_seconds_reads_prometheus_literals() -> None:
    """Compound and millisecond literals convert; anything else is a ValueError."""
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("15m") == 900
    assert duration_seconds("1d") == 86400
    assert duration_seconds("250ms") == 0.25
    for junk in ("", "15", "m15", "1h 30m", "1.5h"):
        with pytest.raises(ValueError, match="not a Prometheus duration"):
            duration_seconds(junk)


def test_scale_expression_divides_windows_steps_and_offsets() -> None:
    """Ranges, subquery steps and offsets shrink by the speed, with a floor; strings stay."""
    expr = 'rate(x{a=~"[0-9]+"}[5m]) + max_over_time(y[1h:1m]) offset 30m + z[1d] offset -15m'
    assert scale_expression(expr, 60, 4) == (
        'rate(x{a=~"[0-9]+"}[5s]) + max_over_time(y[60s:1s]) offset 30s + z[1440s] offset -15s'
    )
    assert scale_expression("deriv(x[5m])", 60, 20) == "deriv(x[20s])"
    assert scale_expression("deriv(x[90s])", 60, 1) == "deriv(x[2s])"  # rounded up
    assert scale_expression("x[0s] offset 0m", 60, 20) == "x[0s] offset 0m"


def test_scaled_rules_keep_window_and_offset_equal_and_pass_promtool(tmp_path: Path) -> None:
    """The demo's scaled copy: every `for` over the speed, stall window == offset, promtool OK."""
    document = load_yaml(RULE_FILE.read_text(encoding="utf-8"))
    scaled = scale_rule_durations(document, 60, 20)
    rules = {
        rule.get("alert") or rule["record"]: rule
        for group in scaled["groups"]
        for rule in group["rules"]
    }
    assert rules["DialNexaCampaignPaused"]["for"] == "60s"
    assert rules["DialNexaCampaignStalled"]["for"] == "15s"
    stalled = rules["DialNexaCampaignStalled"]["expr"]
    windows = re.findall(r"\[(\w+)\]", stalled)
    offsets = re.findall(r"offset (\w+)", stalled)
    assert windows[:2] == ["20s", "20s"]  # 15m / 60 = 15s, raised to four 5s scrapes
    assert offsets == ["20s"]
    assert "[1440s]" in stalled  # the name look-back: 1d / 60
    assert recording_rule_names() <= set(rules)
    for rule in rules.values():
        for found in re.findall(r"\[(\w+)(?::\w*)?\]|offset (\w+)", rule["expr"]):
            literal = found[0] or found[1]
            assert literal.endswith("s"), literal
    assert scaled["groups"][0]["name"] == document["groups"][0]["name"]
    path = tmp_path / "scaled.rules.yml"
    path.write_text(yaml.safe_dump(scaled, sort_keys=False), encoding="utf-8")
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(ValueError, match="speed"):
        scale_rule_durations(document, 0, 20)


# --- configuration ---------------------------------------------------------------------------


def test_render_config_scrapes_the_target_with_the_rules() -> None:
    """The config has the intervals, one job with the target, the rule files; https skips verify."""
    text = render_config(
        targets=["127.0.0.1:10027"],
        rule_files=[Path("/etc/prometheus/rules.yml")],
        scrape_interval_seconds=5,
        evaluation_interval_seconds=5,
    )
    config = load_yaml(text)
    assert config["global"] == {
        "scrape_interval": "5s",
        "scrape_timeout": "5s",
        "evaluation_interval": "5s",
    }
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "dialnexa-exporter"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:10027"]}]
    assert "tls_config" not in job
    secure = load_yaml(
        render_config(
            targets=["localhost:1"],
            rule_files=[],
            scrape_interval_seconds=1,
            evaluation_interval_seconds=1,
            scheme="https",
        )
    )
    assert secure["scrape_configs"][0]["scheme"] == "https"
    assert secure["scrape_configs"][0]["tls_config"] == {"insecure_skip_verify": True}
    assert "alerting" not in config


def test_render_config_sends_alerts_to_the_alertmanagers_given() -> None:
    """With Alertmanager addresses, the config has one static alerting target list."""
    config = load_yaml(
        render_config(
            targets=["127.0.0.1:10027"],
            rule_files=[],
            scrape_interval_seconds=5,
            evaluation_interval_seconds=5,
            alertmanagers=["127.0.0.1:9093"],
        )
    )
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]
    }


def test_local_url_maps_wildcards_to_loopback() -> None:
    """A wildcard listen address is reached on loopback; IPv6 hosts get brackets."""
    assert local_url("127.0.0.1:9090") == "http://127.0.0.1:9090"
    assert local_url(":9090") == "http://127.0.0.1:9090"
    assert local_url("0.0.0.0:9090") == "http://127.0.0.1:9090"
    assert local_url("[::]:9090") == "http://[::1]:9090"
    assert local_url("[::1]:9091") == "http://[::1]:9091"


# --- the context manager the demo uses, in process -------------------------------------------


async def test_disabled_prometheus_does_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --prometheus nothing is looked up, started or printed."""

    def which(name: str) -> str | None:
        raise AssertionError("looked up a binary although disabled")

    async with optional_demo_prometheus(
        False,
        listen_address="127.0.0.1:1",
        exporter_url="http://127.0.0.1:2",
        speed=60,
        which=which,
    ) as session:
        await session.start()
        assert session.running is None
    assert capsys.readouterr().out == ""


async def test_missing_binary_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """No prometheus on PATH: one line saying so, and the demo body still runs."""
    ran = False
    async with optional_demo_prometheus(
        True,
        listen_address="127.0.0.1:1",
        exporter_url="http://127.0.0.1:2",
        speed=60,
        which=lambda name: None,
    ) as session:
        await session.start()
        ran = True
        assert session.running is None
    assert ran
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "not started" in out
    assert "prometheus" in out


@pytest.mark.e2e
async def test_port_in_use_is_one_line_and_leaves_no_directory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Prometheus cannot bind: one line with its reason, the demo goes on, temp dir removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with optional_demo_prometheus(
            True,
            listen_address=f"127.0.0.1:{port}",
            exporter_url="http://127.0.0.1:1",
            speed=60,
        ) as session:
            await session.start()
            assert session.running is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "not started" in out
    assert "address already in use" in out
    assert entries(tmp_path) == []


@pytest.mark.e2e
async def test_started_prometheus_loads_the_rules_and_is_removed_on_exit(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    start_simulator: StartSim,
    start_exporter: StartExporter,
) -> None:
    """In process: ready, every rule loaded, alerts sent to the demo's Alertmanager, both URLs
    printed; processes, directories and ports gone after.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"]))
    port = free_port()
    async with optional_demo_prometheus(
        True,
        listen_address=f"127.0.0.1:{port}",
        exporter_url=exporter.url.rstrip("/"),
        speed=60,
    ) as session:
        await session.start()
        running = session.running
        assert running is not None
        assert running.workdir.parent == tmp_path
        api = PrometheusAPI(running.url)
        groups = await asyncio.to_thread(api.rule_groups)
        names = {rule["name"] for group in groups for rule in group["rules"]}
        canonical = load_yaml(RULE_FILE.read_text(encoding="utf-8"))
        assert names == {
            rule.get("alert") or rule.get("record")
            for group in canonical["groups"]
            for rule in group["rules"]
        }
        alertmanager = session.alertmanager
        assert alertmanager is not None
        assert sorted(entries(tmp_path)) == sorted(
            [running.workdir.name, alertmanager.server.workdir.name]
        )
        await wait_for(
            lambda: asyncio.to_thread(lambda: bool(active_alertmanagers(api))),
            within=30,
            what="Prometheus to know the demo's Alertmanager",
        )
        assert active_alertmanagers(api) == [f"{alertmanager.url}/api/v2/alerts"]
        processes = [running.process, alertmanager.server.process]
        am_port = int(alertmanager.url.rsplit(":", 1)[1])
    assert all(process.returncode is not None for process in processes)
    assert not port_is_open(port)
    assert not port_is_open(am_port)
    assert entries(tmp_path) == []
    out = capsys.readouterr().out
    assert re.search(rf"Prometheus: http://127\.0\.0\.1:{port}/(classic/)?alerts ", out), out
    assert f"  Alertmanager: http://127.0.0.1:{am_port} (" in out


def active_alertmanagers(api: PrometheusAPI) -> list[str]:
    """URLs of the Alertmanagers a Prometheus sends its alerts to."""
    return [am["url"] for am in api.get("/api/v1/alertmanagers")["activeAlertmanagers"]]


@pytest.mark.e2e
async def test_missing_alertmanager_is_one_line_and_prometheus_runs_alone(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """No Alertmanager binary: one line says so, Prometheus runs without alerting targets."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    port = free_port()

    def which(name: str) -> str | None:
        return None if name in BINARIES else shutil.which(name)

    async with optional_demo_prometheus(
        True,
        listen_address=f"127.0.0.1:{port}",
        exporter_url="http://127.0.0.1:1",
        speed=60,
        which=which,
    ) as session:
        await session.start()
        assert session.running is not None
        assert session.alertmanager is None
        assert len(entries(tmp_path)) == 1
        assert active_alertmanagers(PrometheusAPI(session.running.url)) == []
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[1] == (
        "  Alertmanager: not started, no `prometheus-alertmanager` on PATH (Debian/Ubuntu: "
        "apt install prometheus-alertmanager); alerts show in Prometheus only."
    )
    assert entries(tmp_path) == []


# --- the demo command, as a process ----------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


async def _read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    """Read lines into ``seen`` until one matches ``pattern``."""
    while True:
        line = (await stream.readline()).decode()
        assert line, "output ended early:\n" + "".join(seen)
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match


async def _stop(process: asyncio.subprocess.Process) -> None:
    """End a demo a failed test leaves running: SIGTERM first, so that it stops the Prometheus
    and Alertmanager it started (they run in sessions of their own and would outlive a SIGKILL).
    """
    if process.returncode is not None:
        return
    process.terminate()
    try:
        async with asyncio.timeout(20):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def _start_demo(
    tmp: Path, *extra: str, path: str | None = None
) -> asyncio.subprocess.Process:
    """`dialnexa-exporter demo` as a process with its temporary files under ``tmp``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DIALNEXA_")}
    env["TMPDIR"] = str(tmp)
    if path is not None:
        env["PATH"] = path
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "demo",
        "--listen-address",
        "127.0.0.1:0",
        *extra,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


@pytest.mark.e2e
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
async def test_demo_with_prometheus_scrapes_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """demo --prometheus: ready, the exporter target up; a signal stops both, temp dir gone."""
    port = free_port()
    process = await _start_demo(
        tmp_path, "--prometheus", "--prometheus-listen-address", f"127.0.0.1:{port}"
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            exporter_url = (await _read_until(process.stdout, r"Open (http://\S+)/ ", seen))[1]
            prom_url = (await _read_until(process.stdout, r"Prometheus: (http://\S+)", seen))[1]
        assert prom_url.startswith(f"http://127.0.0.1:{port}/")
        assert "alerts" in prom_url
        api = PrometheusAPI(f"http://127.0.0.1:{port}")
        assert await asyncio.to_thread(api.is_ready)
        am_url = (await _read_until(process.stdout, r"Alertmanager: (http://\S+) ", seen))[1]
        assert len(entries(tmp_path)) == 2  # Prometheus' and Alertmanager's own directories

        def scraped() -> list[dict[str, Any]] | None:
            targets = api.targets()
            return targets if [t["health"] for t in targets] == ["up"] else None

        (target,) = await wait_for(  # scrapes every 5 s
            scraped,
            30,
            "the demo's exporter scraped",
            interval=0.25,
            in_thread=True,
        )
        assert target["labels"]["job"] == "dialnexa-exporter"
        assert target["scrapeUrl"] == f"{exporter_url}/metrics"
        build = await asyncio.to_thread(api.query, "dialnexa_exporter_build_info")
        assert build
        process.send_signal(stop_signal)
        async with asyncio.timeout(20):
            code = await process.wait()
    finally:
        await _stop(process)
    assert code == 0
    assert entries(tmp_path) == []
    assert not port_is_open(port)
    assert not port_is_open(int(am_url.rsplit(":", 1)[1]))
    assert _processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
async def test_demo_without_prometheus_on_path_runs_anyway(tmp_path: Path) -> None:
    """demo --prometheus with no binary on PATH: one line, then the exporter serves as usual."""
    empty = tmp_path / "bin"
    empty.mkdir()
    process = await _start_demo(tmp_path, "--prometheus", path=str(empty))
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            exporter_url = (await _read_until(process.stdout, r"Open (http://\S+)/ ", seen))[1]
            await _read_until(process.stdout, r"Prometheus: not started", seen)
        assert "no `prometheus` on PATH" in seen[-1]
        host, _, port = exporter_url.removeprefix("http://").rpartition(":")
        assert port_is_open(int(port), host)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await process.wait()
    finally:
        await _stop(process)
    assert code == 0
    assert entries(tmp_path) == [empty.name]


@pytest.mark.e2e
async def test_a_port_taken_before_alertmanager_binds_it_is_traded_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The free port the demo picked for Alertmanager is taken before Alertmanager binds it:
    the demo tries another port and Alertmanager runs there (with three pytest workers the
    race is real)."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port, spare_port = taken.getsockname()[1], free_port()
    ports = iter([taken_port, spare_port])
    monkeypatch.setattr(demo_prometheus, "free_loopback_port", lambda: next(ports))
    session = DemoPrometheusSession(True, listen_address="unused", exporter_url="unused", speed=60)
    try:
        line = await session._start_alertmanager()
        assert session.alertmanager is not None, line
        assert session.alertmanager.url == f"http://127.0.0.1:{spare_port}"
        assert "not started" not in line
    finally:
        taken.close()
        await session.close()


async def test_a_start_failing_otherwise_is_not_tried_again(tmp_path: Path) -> None:
    """An Alertmanager that fails for another reason than a taken port is tried once: the
    demo says why and goes on without it."""
    calls = tmp_path / "calls"
    binary = tmp_path / "alertmanager"
    binary.write_text(f"#!/bin/sh\necho run >> {calls}\necho 'bad flag' >&2\nexit 3\n")
    binary.chmod(0o755)
    session = DemoPrometheusSession(
        True, listen_address="unused", exporter_url="unused", speed=60,
        which=lambda name: str(binary),
    )  # fmt: skip
    line = await session._start_alertmanager()
    assert "Alertmanager: not started (alertmanager exited with status 3" in line
    assert calls.read_text().count("run") == 1
    assert session.alertmanager is None
