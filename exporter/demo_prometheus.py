"""A local Prometheus for the demo: scrape config, time-scaled rule copy, process lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import yaml

from exporter.config import parse_listen_address

DEFAULT_LISTEN_ADDRESS = "127.0.0.1:9090"
JOB_NAME = "dialnexa-exporter"
SCRAPE_INTERVAL_SECONDS = 5
RULES_FILE_NAME = "dialnexa-exporter.rules.yml"
# Grafana's $__rate_interval reasoning: a window needs about four scrapes to always hold two.
WINDOW_SCRAPES = 4

_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}
_RANGE = re.compile(rf"\[(\s*)({_DURATION})(\s*)(?::(\s*)({_DURATION})?(\s*))?\]")
_OFFSET = re.compile(rf"\b(offset\s+-?)({_DURATION})\b")
_DURATION_KEYS = ("for", "keep_firing_for")


class PrometheusStartError(Exception):
    """Prometheus exited or did not become ready; the message says why."""


def packaged_rules_text() -> str:
    """The canonical rule file as shipped inside the package."""
    return resources.files("exporter").joinpath("rules", RULES_FILE_NAME).read_text("utf-8")


def duration_seconds(text: str) -> float:
    """A Prometheus duration literal (``1h30m``, ``15m``, ``500ms``) in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


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
) -> str:
    """A prometheus.yml scraping ``targets`` as ``job`` and loading ``rule_files``."""
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


def _last_log_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text("utf-8", "replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


@dataclass
class DemoPrometheus:
    """A Prometheus process started for the demo and the temporary directory it owns."""

    process: asyncio.subprocess.Process
    workdir: Path
    url: str
    log_file: IO[bytes]

    @property
    def log_path(self) -> Path:
        """Where Prometheus writes its log (inside the temporary directory)."""
        return self.workdir / "prometheus.log"

    async def wait_ready(self) -> None:
        """Wait until /-/ready answers 200; PrometheusStartError if Prometheus exits first."""
        client_timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                if self.process.returncode is not None:
                    raise PrometheusStartError(
                        f"prometheus exited with status {self.process.returncode}: "
                        + _last_log_line(self.log_path)
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def alerts_page(self) -> str:
        """URL of the alerts page: /alerts, or /classic/alerts where only the classic UI ships."""
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for path in ("/alerts", "/classic/alerts"):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + path) as response:
                        if response.status == 200:
                            return self.url + path
        return self.url + "/"

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Terminate Prometheus (killed after ``grace_seconds``) and remove its directory."""
        try:
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.terminate()
                try:
                    await asyncio.wait_for(self.process.wait(), grace_seconds)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                    await self.process.wait()
        finally:
            # Also reached when cancelled mid-stop: never leave the process or the files behind.
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            self.log_file.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


async def start_demo_prometheus(
    binary: str,
    *,
    listen_address: str,
    exporter_url: str,
    speed: float,
    ready_seconds: float = 30.0,
) -> DemoPrometheus:
    """Start Prometheus in a new temporary directory, scraping the exporter with the rules loaded.

    Rule durations are divided by the demo's ``speed`` so that the alerts judge simulated time.
    """
    target = urlsplit(exporter_url)
    workdir = Path(tempfile.mkdtemp(prefix="dialnexa-demo-prometheus-"))
    log_file: IO[bytes] | None = None
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
            ),
            encoding="utf-8",
        )
        log_file = (workdir / "prometheus.log").open("wb")
        argv = prometheus_command(binary, config_file, workdir / "data", listen_address)
        # A session of its own: Ctrl+C reaches the demo only, which then stops Prometheus in order.
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    except BaseException:
        if log_file is not None:
            log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    running = DemoPrometheus(process, workdir, local_url(listen_address), log_file)
    try:
        try:
            async with asyncio.timeout(ready_seconds):
                await running.wait_ready()
        except TimeoutError:
            raise PrometheusStartError(
                f"prometheus not ready after {ready_seconds:g}s: "
                + _last_log_line(running.log_path)
            ) from None
    except BaseException:
        await running.stop()
        raise
    return running


class DemoPrometheusSession:
    """The demo's optional Prometheus: started once the demo handles signals, stopped on exit.

    A missing binary or a failed start is one printed line; the demo goes on without Prometheus.
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
        self.running: DemoPrometheus | None = None

    async def start(self) -> None:
        """Start Prometheus if enabled and installed, and print where it is (or why not)."""
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
        try:
            self.running = await start_demo_prometheus(
                binary,
                listen_address=self.listen_address,
                exporter_url=self.exporter_url,
                speed=self.speed,
            )
        except (PrometheusStartError, OSError) as exc:
            print(f"  Prometheus: not started ({exc}); the demo runs without it.", flush=True)
            return
        page = await self.running.alerts_page()
        print(
            f"  Prometheus: {page} (scraping the exporter every {SCRAPE_INTERVAL_SECONDS}s; "
            f"rule durations divided by {self.speed:g} to follow simulated time)",
            flush=True,
        )

    async def close(self) -> None:
        """Stop Prometheus, if it runs, and remove its temporary directory."""
        running, self.running = self.running, None
        if running is not None:
            await running.stop()


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
