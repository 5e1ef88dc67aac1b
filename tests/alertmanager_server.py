"""A real Alertmanager for tests: its process on loopback, its HTTP API, a webhook it posts to.

The process is started with the demo's own ``launch`` (same argv as the demo, clustering off,
storage in the test's directory); the webhook sink is the demo's receiver app recording every
notification instead of printing it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from exporter.demo.alertmanager import (
    ALERTMANAGER_FILE_NAME,
    BINARIES,
    NOTIFY_PATH,
    Notification,
    NotifiedAlert,
    alertmanager_command,
    receiver_app,
)
from exporter.demo.process import DemoProcess, ServerStartError, launch
from tests.prometheus_server import free_port

# Ports are picked free and then bound by Alertmanager: another process may take one in between.
_START_ATTEMPTS = 3


def alertmanager_binary() -> str:
    """Path of the Alertmanager binary, or a test failure saying how to get it."""
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail("no Alertmanager on PATH: install the Debian package `prometheus-alertmanager`")


@dataclass
class RunningAlertmanager:
    """An Alertmanager started here, and its v2 API."""

    server: DemoProcess

    @property
    def url(self) -> str:
        """Base URL of the UI and API."""
        return self.server.url

    @property
    def address(self) -> str:
        """host:port, as Prometheus' alerting configuration names it."""
        return self.url.removeprefix("http://")

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with its status (active, suppressed, inhibitedBy)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v2/alerts") as response,
        ):
            assert response.status == 200, await response.text()
            alerts: list[dict[str, Any]] = await response.json()
            return alerts

    async def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Send alerts as Prometheus would (POST /api/v2/alerts)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v2/alerts", json=list(alerts)) as response,
        ):
            assert response.status == 200, await response.text()

    async def stop(self) -> None:
        """Stop the process and remove its directory."""
        await self.server.stop()


async def start_alertmanager(
    workdir: Path, config: Mapping[str, Any], *, ready_within: float = 30.0
) -> RunningAlertmanager:
    """Write ``config`` and start Alertmanager on a free loopback port; the caller stops it."""
    binary = alertmanager_binary()
    for attempt in range(1, _START_ATTEMPTS + 1):
        directory = workdir / f"alertmanager-{attempt}"
        directory.mkdir(parents=True)
        config_file = directory / ALERTMANAGER_FILE_NAME
        config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        address = f"127.0.0.1:{free_port()}"
        argv = alertmanager_command(binary, config_file, directory / "data", address)
        try:
            server = await launch(
                "alertmanager", argv, directory, f"http://{address}", ready_within
            )
        except ServerStartError as exc:
            if attempt < _START_ATTEMPTS and "address already in use" in str(exc):
                continue
            raise
        return RunningAlertmanager(server)
    raise AssertionError("unreachable")  # the last attempt returns or raises


@dataclass
class WebhookSink:
    """Records every notification Alertmanager posts to it, in arrival order."""

    notifications: list[Notification] = field(default_factory=list)
    server: TestServer | None = None

    async def start(self) -> None:
        """Serve the receiver on a loopback port."""
        self.server = TestServer(receiver_app(self.notifications.append), host="127.0.0.1", port=0)
        await self.server.start_server()

    @property
    def url(self) -> str:
        """The URL to put in a webhook_configs entry."""
        assert self.server is not None, "start() first"
        return str(self.server.make_url(NOTIFY_PATH))

    async def close(self) -> None:
        """Stop serving."""
        if self.server is not None:
            await self.server.close()

    def received(self, since: int = 0) -> Iterator[tuple[Notification, NotifiedAlert]]:
        """(notification, alert) for every alert of every notification from index ``since``."""
        for notification in self.notifications[since:]:
            for alert in notification.alerts:
                yield notification, alert
