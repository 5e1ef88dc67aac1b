"""A local Prometheus for the demo: scrape config, time-scaled rule copy, and the session that
starts it with the demo's Alertmanager.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml

from exporter.config import parse_listen_address
from exporter.demo.alertmanager import BINARIES, DemoAlertmanager, start_demo_alertmanager
from exporter.demo.process import DemoProcess, ServerStartError, duration_seconds, launch

DEFAULT_LISTEN_ADDRESS = "127.0.0.1:9090"
JOB_NAME = "dialnexa-exporter"
SCRAPE_INTERVAL_SECONDS = 5
RULES_FILE_NAME = "dialnexa-exporter.rules.yml"
# Grafana's $__rate_interval reasoning: a window needs about four scrapes to always hold two.
WINDOW_SCRAPES = 4

_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_RANGE = re.compile(rf"\[(\s*)({_DURATION})(\s*)(?::(\s*)({_DURATION})?(\s*))?\]")
_OFFSET = re.compile(rf"\b(offset\s+-?)({_DURATION})\b")
_DURATION_KEYS = ("for", "keep_firing_for")


def scaled_window_seconds(seconds: float, speed: float) -> int:
    """A span of simulated time as the demo's rules scale a window: divided by ``speed``,
    rounded up to whole seconds, never below WINDOW_SCRAPES scrape intervals."""
    return max(WINDOW_SCRAPES * SCRAPE_INTERVAL_SECONDS, math.ceil(seconds / speed))


def packaged_rules_text() -> str:
    """The canonical rule file as shipped inside the package."""
    return resources.files("exporter").joinpath("rules", RULES_FILE_NAME).read_text("utf-8")


def _scaled(text: str, speed: float, minimum: int) -> str:
    seconds = duration_seconds(text)
    if seconds == 0:
        return text
    return f"{max(minimum, math.ceil(seconds / speed))}s"


def scale_expression(expr: str, speed: float, min_window_seconds: int) -> str:
    """``expr`` with every range window, subquery step and offset divided by ``speed``.

    Windows and offsets share one rounding (up to whole seconds, at least
    ``min_window_seconds``), so a rule comparing ``x[15m]`` with ``x offset 15m`` keeps
    comparing equal spans.
    """

    def window(match: re.Match[str]) -> str:
        lead, rng, mid, colon_space, step, tail = match.groups()
        text = f"[{lead}{_scaled(rng, speed, min_window_seconds)}{mid}"
        if colon_space is not None:
            text += ":" + colon_space
            if step is not None:
                text += _scaled(step, speed, 1)
            text += tail or ""
        return text + "]"

    def offset(match: re.Match[str]) -> str:
        return match.group(1) + _scaled(match.group(2), speed, min_window_seconds)

    return _OFFSET.sub(offset, _RANGE.sub(window, expr))


def scale_rule_durations(
    document: Mapping[str, Any], speed: float, min_window_seconds: int
) -> dict[str, Any]:
    """A copy of a rule file whose ``for`` durations, windows and offsets are divided by ``speed``.

    The rule file keeps every duration a plain literal for exactly this: rules written for
    real time then judge a simulation running ``speed`` times faster (or a test in a hurry).
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    groups = []
    for group in document["groups"]:
        rules = []
        for rule in group["rules"]:
            copy = dict(rule)
            copy["expr"] = scale_expression(str(rule["expr"]), speed, min_window_seconds)
            for key in _DURATION_KEYS:
                if key in copy:
                    copy[key] = _scaled(str(copy[key]), speed, 1)
            rules.append(copy)
        groups.append({**group, "rules": rules})
    return {**document, "groups": groups}


def render_config(
    *,
    targets: Sequence[str],
    rule_files: Sequence[Path],
    scrape_interval_seconds: float,
    evaluation_interval_seconds: float,
    job: str = JOB_NAME,
    scheme: str = "http",
    alertmanagers: Sequence[str] = (),
) -> str:
    """A prometheus.yml scraping ``targets`` as ``job``, loading ``rule_files`` and sending its
    alerts to ``alertmanagers`` (host:port each).
    """
    scrape: dict[str, Any] = {
        "job_name": job,
        "scheme": scheme,
        "static_configs": [{"targets": list(targets)}],
    }
    if scheme == "https":
        # The demo's exporter may use a self-signed certificate from its web config.
        scrape["tls_config"] = {"insecure_skip_verify": True}
    config = {
        "global": {
            "scrape_interval": f"{scrape_interval_seconds:g}s",
            "scrape_timeout": f"{scrape_interval_seconds:g}s",
            "evaluation_interval": f"{evaluation_interval_seconds:g}s",
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [scrape],
    }
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [*alertmanagers]}]}]
        }
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_command(
    binary: str, config_file: Path, storage_dir: Path, listen_address: str, log_level: str = "warn"
) -> list[str]:
    """The argv that runs ``binary`` with one config, its own storage and a listen address."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={storage_dir}",
        f"--web.listen-address={listen_address}",
        f"--log.level={log_level}",
    ]


def local_url(listen_address: str) -> str:
    """The http URL at which a server listening on ``listen_address`` is reached locally."""
    host, port = parse_listen_address(listen_address)
    if host in (None, "0.0.0.0"):  # noqa: S104 - mapping a wildcard to loopback, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def alerts_page(url: str) -> str:
    """URL of a Prometheus' alerts page: /alerts, or /classic/alerts where only that UI ships."""
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for path in ("/alerts", "/classic/alerts"):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url + path) as response:
                    if response.status == 200:
                        return url + path
    return url + "/"


# How many free ports the demo's Alertmanager is tried on before the demo goes without it.
PORT_ATTEMPTS = 3


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server started on it may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_demo_prometheus(
    binary: str,
    *,
    listen_address: str,
    exporter_url: str,
    speed: float,
    alertmanager_url: str | None = None,
    ready_seconds: float = 30.0,
) -> DemoProcess:
    """Start Prometheus in a new temporary directory, scraping the exporter with the rules loaded
    and, given ``alertmanager_url``, sending its alerts there.

    Rule durations are divided by the demo's ``speed`` so that the alerts judge simulated time.
    """
    target = urlsplit(exporter_url)
    workdir = Path(tempfile.mkdtemp(prefix="dialnexa-demo-prometheus-"))
    try:
        rules = scale_rule_durations(
            yaml.safe_load(packaged_rules_text()),
            speed,
            WINDOW_SCRAPES * SCRAPE_INTERVAL_SECONDS,
        )
        rules_file = workdir / RULES_FILE_NAME
        rules_file.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        config_file = workdir / "prometheus.yml"
        config_file.write_text(
            render_config(
                targets=[target.netloc],
                rule_files=[rules_file],
                scrape_interval_seconds=SCRAPE_INTERVAL_SECONDS,
                evaluation_interval_seconds=SCRAPE_INTERVAL_SECONDS,
                scheme=target.scheme or "http",
                alertmanagers=[urlsplit(alertmanager_url).netloc] if alertmanager_url else [],
            ),
            encoding="utf-8",
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    argv = prometheus_command(binary, config_file, workdir / "data", listen_address)
    # launch() removes the directory itself when the start fails.
    return await launch("prometheus", argv, workdir, local_url(listen_address), ready_seconds)


class DemoPrometheusSession:
    """The demo's optional Prometheus, with an Alertmanager when one is installed: started once
    the demo handles signals, stopped on exit.

    A missing binary or a failed start is one printed line; the demo goes on without it.
    """

    def __init__(
        self,
        enabled: bool,
        *,
        listen_address: str,
        exporter_url: str,
        speed: float,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.enabled = enabled
        self.listen_address = listen_address
        self.exporter_url = exporter_url
        self.speed = speed
        self._which = which
        self.running: DemoProcess | None = None
        self.alertmanager: DemoAlertmanager | None = None

    async def start(self) -> None:
        """Start Alertmanager (if installed), then Prometheus, and print where they are."""
        if not self.enabled or self.running is not None:
            return
        binary = self._which("prometheus")
        if binary is None:
            print(
                "  Prometheus: not started, no `prometheus` on PATH (Debian/Ubuntu: apt install "
                "prometheus); the demo runs without it.",
                flush=True,
            )
            return
        # Alertmanager first: Prometheus' configuration names it.
        alertmanager_line = await self._start_alertmanager()
        try:
            self.running = await start_demo_prometheus(
                binary,
                listen_address=self.listen_address,
                exporter_url=self.exporter_url,
                speed=self.speed,
                alertmanager_url=self.alertmanager.url if self.alertmanager else None,
            )
        except (ServerStartError, OSError) as exc:
            print(f"  Prometheus: not started ({exc}); the demo runs without it.", flush=True)
            await self.close()
            return
        page = await alerts_page(self.running.url)
        print(
            f"  Prometheus: {page} (scraping the exporter every {SCRAPE_INTERVAL_SECONDS}s; "
            f"rule durations divided by {self.speed:g} to follow simulated time)",
            flush=True,
        )
        print(alertmanager_line, flush=True)

    async def _start_alertmanager(self) -> str:
        """Start the demo's Alertmanager if a binary is found; the line telling how it went."""
        binary = next(filter(None, map(self._which, BINARIES)), None)
        if binary is None:
            return (
                "  Alertmanager: not started, no `prometheus-alertmanager` on PATH (Debian/Ubuntu: "
                "apt install prometheus-alertmanager); alerts show in Prometheus only."
            )
        try:
            self.alertmanager = await self._alertmanager_on_a_free_port(binary)
        except (ServerStartError, OSError) as exc:
            return f"  Alertmanager: not started ({exc}); alerts show in Prometheus only."
        return (
            f"  Alertmanager: {self.alertmanager.url} (the project's routing and inhibitions; "
            "each notification prints here as it arrives, within a few minutes)"
        )

    async def _alertmanager_on_a_free_port(self, binary: str) -> DemoAlertmanager:
        """Alertmanager on a free loopback port; the port may be taken between our look and
        its bind, so another one is tried then (anything else fails at once)."""
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return await start_demo_alertmanager(
                    binary, listen_address=f"127.0.0.1:{free_loopback_port()}", speed=self.speed
                )
            except (ServerStartError, OSError) as exc:
                if "address already in use" not in str(exc):
                    raise
        return await start_demo_alertmanager(
            binary, listen_address=f"127.0.0.1:{free_loopback_port()}", speed=self.speed
        )

    async def close(self) -> None:
        """Stop Prometheus, then Alertmanager, each if it runs, and remove their directories."""
        running, self.running = self.running, None
        alertmanager, self.alertmanager = self.alertmanager, None
        try:
            if running is not None:
                await running.stop()
        finally:
            if alertmanager is not None:
                await alertmanager.stop()


@contextlib.asynccontextmanager
async def optional_demo_prometheus(
    enabled: bool,
    *,
    listen_address: str,
    exporter_url: str,
    speed: float,
    which: Callable[[str], str | None] = shutil.which,
) -> AsyncIterator[DemoPrometheusSession]:
    """A DemoPrometheusSession that is always closed on exit; the caller calls ``start()``.

    The demo passes ``start`` to its signal loop, so that a signal arriving while Prometheus
    starts still stops both in order.
    """
    session = DemoPrometheusSession(
        enabled, listen_address=listen_address, exporter_url=exporter_url, speed=speed, which=which
    )
    try:
        yield session
    finally:
        await session.close()
