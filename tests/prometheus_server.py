"""A real Prometheus for tests and benchmarks: its process on loopback and its HTTP API.

Everything here blocks (subprocess, urllib), so that synchronous callers such as the benchmark
can use it directly; async tests whose exporter runs in their own event loop call it through
``asyncio.to_thread`` so that the loop keeps serving scrapes meanwhile. The prometheus.yml itself
comes from ``exporter.demo.prometheus.render_config``, the same shape the demo uses.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.demo.prometheus import prometheus_command
from tests.helpers import wait_for_blocking

# Ports are picked free and then bound by Prometheus: another process may take one in between.
_START_ATTEMPTS = 3


class PrometheusAPIError(Exception):
    """The HTTP API answered with an error, or not with JSON."""


def prometheus_binary() -> str:
    """Path of the prometheus binary; RuntimeError with the install hint when it is missing."""
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError(
            "prometheus not on PATH: install the Debian package `prometheus` (tests/run.sh does)"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def sample_values(result: Sequence[Mapping[str, Any]]) -> list[float]:
    """Every sample value of an instant vector or range matrix result, as floats."""
    values: list[float] = []
    for series in result:
        if "value" in series:
            values.append(float(series["value"][1]))
        values.extend(float(point[1]) for point in series.get("values", []))
    return values


@dataclass
class PrometheusAPI:
    """The HTTP API of a Prometheus at ``url`` (any Prometheus: ours, the demo's)."""

    url: str

    def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """GET an API path; returns its `data`, PrometheusAPIError when status is not success."""
        query = urllib.parse.urlencode(list(params))
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback http
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise PrometheusAPIError(f"{path}: not JSON: {body[:200]!r}") from exc
        if document.get("status") != "success":
            raise PrometheusAPIError(f"{path} {dict(params)}: {document}")
        return document["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; a scalar or string result comes back as one unlabelled sample."""
        params = [("query", expr)]
        if at is not None:
            params.append(("time", f"{at:.3f}"))
        data = self.get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query (what Grafana sends for a time series panel)."""
        params = [
            ("query", expr),
            ("start", f"{start:.3f}"),
            ("end", f"{end:.3f}"),
            ("step", f"{step:g}"),
        ]
        result: list[dict[str, Any]] = self.get("/api/v1/query_range", params)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert."""
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["alerts"]
        return alerts

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets."""
        targets: list[dict[str, Any]] = self.get("/api/v1/targets")["activeTargets"]
        return targets

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups, each with its rules."""
        groups: list[dict[str, Any]] = self.get("/api/v1/rules")["groups"]
        return groups

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of ``label`` on the series matching ``match`` (Grafana's label_values)."""
        values: list[str] = self.get(f"/api/v1/label/{label}/values", [("match[]", match)])
        return values

    def is_ready(self) -> bool:
        """Whether /-/ready answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False


@dataclass
class PrometheusServer(PrometheusAPI):
    """A Prometheus process started here, with its own directory, on a loopback port."""

    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr."""
        return self.workdir / "prometheus.log"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, within: float = 30.0) -> None:
        """Block until ready; RuntimeError with the log tail if it exits or takes too long."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            return self.is_ready()

        try:
            wait_for_blocking(ready, within, "prometheus to be ready")
        except AssertionError as exc:
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from exc

    def reload(self) -> None:
        """Have Prometheus read its configuration and rule files again (SIGHUP)."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Terminate the process and wait; kill it when it takes longer than ``grace_seconds``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace_seconds)


def start_prometheus(
    workdir: Path, config_text: str, *, ready_within: float = 30.0
) -> PrometheusServer:
    """Write ``config_text`` to workdir/prometheus.yml, start Prometheus on a free loopback port
    with storage in workdir/data, and wait until it is ready. The caller stops it (``stop()``).
    """
    binary = prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(config_text, encoding="utf-8")
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = free_port()
        argv = prometheus_command(
            binary, config_file, workdir / "data", f"127.0.0.1:{port}", log_level="info"
        )
        with (workdir / "prometheus.log").open("wb") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        server = PrometheusServer(f"http://127.0.0.1:{port}", process, workdir)
        try:
            server.wait_ready(ready_within)
        except RuntimeError:
            server.stop()
            if attempt < _START_ATTEMPTS and "address already in use" in server.log_tail():
                continue
            raise
        return server
    raise AssertionError("unreachable")  # the last attempt returns or raises


def write_rules(workdir: Path, name: str, document: Mapping[str, Any]) -> Path:
    """Write a rule file document as YAML into ``workdir``; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False), encoding="utf-8")
    return path
