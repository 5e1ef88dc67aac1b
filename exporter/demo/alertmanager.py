"""The demo's Alertmanager: the canonical routing, every receiver printing to the terminal."""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from exporter.demo.process import DemoProcess, duration_seconds, launch

ALERTMANAGER_FILE_NAME = "alertmanager.yml"
# Debian's name for the binary first, then the upstream release's.
BINARIES = ("prometheus-alertmanager", "alertmanager")
NOTIFY_PATH = "/notify"
TIMING_KEYS = ("group_wait", "group_interval", "repeat_interval")
# A notification of a large group is a few hundred bytes per alert; a megabyte is thousands of
# alerts, and anything larger is not Alertmanager talking.
MAX_NOTIFICATION_BYTES = 1024 * 1024
# Lines printed for one notification before the rest is summed up in one more line.
MAX_PRINTED_ALERTS = 20
# Characters of one label or annotation shown; a runbook URL fits, a pasted essay does not.
MAX_FIELD_CHARS = 200
# Seconds the receiver waits, when the demo stops, for a request still being read: a client that
# sent half a request must not hold Ctrl+C for aiohttp's default minute.
RECEIVER_SHUTDOWN_SECONDS = 2.0


def packaged_alertmanager_text() -> str:
    """The canonical Alertmanager configuration as shipped inside the package."""
    return resources.files("exporter").joinpath("rules", ALERTMANAGER_FILE_NAME).read_text("utf-8")


def scale_route_timings(route: Mapping[str, Any], speed: float) -> dict[str, Any]:
    """A copy of a route tree whose group_wait/group_interval/repeat_interval are over ``speed``.

    Whole seconds, at least one: the demo's simulated time passes ``speed`` times faster.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    scaled: dict[str, Any] = dict(route)
    for key in TIMING_KEYS:
        if key in scaled:
            scaled[key] = f"{max(1, math.ceil(duration_seconds(str(scaled[key])) / speed))}s"
    if "routes" in scaled:
        scaled["routes"] = [scale_route_timings(child, speed) for child in scaled["routes"]]
    return scaled


def with_webhook_receivers(document: Mapping[str, Any], url: str) -> dict[str, Any]:
    """A copy of a configuration whose every receiver posts to ``url`` (resolutions too)."""
    config = copy.deepcopy(dict(document))
    config["receivers"] = [
        {"name": receiver["name"], "webhook_configs": [{"url": url, "send_resolved": True}]}
        for receiver in config["receivers"]
    ]
    return config


def demo_config(document: Mapping[str, Any], url: str, speed: float) -> dict[str, Any]:
    """The canonical configuration for the demo: webhook receivers, timings over ``speed``."""
    config = with_webhook_receivers(document, url)
    config["route"] = scale_route_timings(config["route"], speed)
    return config


def alertmanager_command(
    binary: str, config_file: Path, storage_dir: Path, listen_address: str
) -> list[str]:
    """The argv that runs one Alertmanager alone (no cluster) with its own storage."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={storage_dir}",
        f"--web.listen-address={listen_address}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]


# --- notifications ----------------------------------------------------------------------------


class NotifiedAlert(BaseModel):
    """One alert of a webhook notification: what a person needs is in labels and annotations."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: str
    labels: dict[str, str]
    annotations: dict[str, str] = {}


class Notification(BaseModel):
    """A webhook notification of Alertmanager (the fields the demo and the tests read)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    receiver: str
    status: str
    alerts: list[NotifiedAlert]


def printable(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` safe for a terminal line: control and format characters escaped, length capped.

    Label values come from the API (campaign names): an escape sequence or a bidi override in
    one must not reach the terminal as such.
    """
    escaped = "".join(char if char.isprintable() else _escape(char) for char in text[:limit])
    return escaped + ("…" if len(text) > limit else "")


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _subject(labels: Mapping[str, str]) -> str:
    campaign = labels.get("campaign_id")
    if campaign is not None:
        name = labels.get("name")
        quoted = f'"{printable(name)}" ' if name else ""
        return f"campaign {quoted}({printable(campaign)})"
    if "instance" in labels:
        return f"exporter {printable(labels['instance'])}"
    if "job" in labels:
        return f"job {printable(labels['job'])}"
    return "all exporters"


def alert_line(alert: NotifiedAlert) -> str:
    """One terminal line: firing or resolved, alert, severity, campaign name and id, runbook."""
    labels = alert.labels
    line = (
        f"  Alert {printable(alert.status.upper(), 16)}: "
        f"{printable(labels.get('alertname', 'unnamed'))}"
        f" ({printable(labels.get('severity', 'no severity'))}), {_subject(labels)}"
    )
    runbook = alert.annotations.get("runbook_url")
    if runbook:
        line += f"; runbook {printable(runbook)}"
    return line


def notification_lines(notification: Notification) -> list[str]:
    """The lines the demo prints for one notification: one per alert, at most a screenful."""
    lines = [alert_line(alert) for alert in notification.alerts[:MAX_PRINTED_ALERTS]]
    hidden = len(notification.alerts) - MAX_PRINTED_ALERTS
    if hidden > 0:
        lines.append(f"  ... and {hidden} more alerts in this notification")
    return lines


def receiver_app(on_notification: Callable[[Notification], None]) -> web.Application:
    """An app taking Alertmanager's webhook POSTs at NOTIFY_PATH and handing each one over.

    Anything that is not a notification is refused with 400 (413 above the size cap), and
    nothing of it is printed.
    """

    async def notify(request: web.Request) -> web.Response:
        try:
            notification = Notification.model_validate_json(await request.read())
        except ValidationError:
            return web.Response(status=400, text="not an Alertmanager notification\n")
        on_notification(notification)
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_NOTIFICATION_BYTES)
    app.router.add_post(NOTIFY_PATH, notify)
    return app


def print_notification(notification: Notification) -> None:
    """Print a notification's lines to the terminal at once."""
    for line in notification_lines(notification):
        print(line, flush=True)


# --- the demo's Alertmanager ------------------------------------------------------------------


@dataclass
class DemoAlertmanager:
    """The Alertmanager process and the receiver it posts to, started and stopped together."""

    receiver: web.AppRunner
    server: DemoProcess

    @property
    def url(self) -> str:
        """Where Alertmanager's UI and API answer."""
        return self.server.url

    async def stop(self) -> None:
        """Stop Alertmanager first (so that it sends nothing more), then the receiver."""
        try:
            await self.server.stop()
        finally:
            await self.receiver.cleanup()


async def start_demo_alertmanager(
    binary: str,
    *,
    listen_address: str,
    speed: float,
    on_notification: Callable[[Notification], None] = print_notification,
    ready_seconds: float = 30.0,
) -> DemoAlertmanager:
    """Start the receiver on a loopback port, then Alertmanager with the canonical routing.

    Every receiver of the canonical file posts to the demo's receiver, and the route timings are
    divided by the demo's ``speed``. ServerStartError or OSError when something cannot start.
    """
    receiver = web.AppRunner(
        receiver_app(on_notification),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=RECEIVER_SHUTDOWN_SECONDS,
    )
    await receiver.setup()
    try:
        await web.TCPSite(receiver, "127.0.0.1", 0).start()
        host, port = receiver.addresses[0][:2]
        config = demo_config(
            yaml.safe_load(packaged_alertmanager_text()),
            f"http://{host}:{port}{NOTIFY_PATH}",
            speed,
        )
        workdir = Path(tempfile.mkdtemp(prefix="dialnexa-demo-alertmanager-"))
        try:
            config_file = workdir / ALERTMANAGER_FILE_NAME
            config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        argv = alertmanager_command(binary, config_file, workdir / "data", listen_address)
        # launch() removes the directory itself when the start fails.
        server = await launch(
            "alertmanager", argv, workdir, f"http://{listen_address}", ready_seconds
        )
    except BaseException:
        await receiver.cleanup()
        raise
    return DemoAlertmanager(receiver, server)
