"""Reloading the configuration on a file change or SIGHUP: coalesced, parsed off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.clock import Clock
from exporter.config import ConfigError, campaign_count, campaigns_for_shard, load_settings

log = logging.getLogger("exporter.reloader")

# How often the YAML config file is checked for changes (seconds).
CONFIG_CHECK_SECONDS = 5.0

# Installs a new campaign list; returns how many campaigns it added and removed.
ApplyCampaigns = Callable[[tuple[str, ...]], Awaitable[tuple[int, int]]]


@dataclass(slots=True)
class ReloadStatus:
    """Outcome of the latest configuration load, for the exporter's own metrics and its
    status page."""

    last_success_timestamp: float
    last_reload_successful: bool = True
    rejected_since: float | None = None  # first rejected reload since the last success
    rejected_error: str = ""  # the latest rejection's one-line message (never a secret)


class ConfigReloader:
    """Re-reads the configuration and hands the new campaign list on; keeps the ReloadStatus.

    Requests are coalesced: however many SIGHUPs or file changes arrive during a reload, one
    more reload follows it, not one per request. Reading and validating the file runs in a
    worker thread, so a large file never stalls the event loop; a file that does not validate
    (or is too large, see exporter.config) is logged once and the running list stays.
    """

    def __init__(
        self,
        flags: Mapping[str, Any],
        path: Path | None,
        apply: ApplyCampaigns,
        status: ReloadStatus,
        clock: Clock,
    ) -> None:
        self._flags = dict(flags)
        self._path = path
        self._apply = apply
        self.status = status
        self._clock = clock
        self._requested = asyncio.Event()
        self._signature = self._stat()
        self.reloads = 0  # reloads run, successful or not

    def _stat(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def changed(self) -> bool:
        """True when the config file differs from the last one read."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        return True

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler): cheap, and merged with any pending request."""
        self._requested.set()

    async def run(self, check_every: float | None = None) -> None:
        """Reload when asked or when the file changed (checked every ``check_every`` seconds,
        CONFIG_CHECK_SECONDS by default)."""
        while True:
            await self._clock.wait(self._requested, check_every or CONFIG_CHECK_SECONDS)
            if self._requested.is_set() or self.changed():
                self._requested.clear()
                await self.reload()

    async def reload(self) -> bool:
        """Load settings again; on error keep the running list and log one line."""
        self.reloads += 1
        self._signature = self._stat()
        try:
            settings = await asyncio.to_thread(load_settings, self._flags)
            campaigns = await asyncio.to_thread(campaigns_for_shard, settings)
        except ConfigError as exc:
            log.error("configuration reload rejected, keeping the running one: %s", exc)
            self._rejected(str(exc))
            return False
        added, removed = await self._apply(campaigns)
        status = self.status
        status.last_reload_successful = True
        status.last_success_timestamp = self._clock.time()
        status.rejected_since, status.rejected_error = None, ""
        log.info(
            "configuration reloaded: %s (%d added, %d removed)",
            campaign_count(len(campaigns)),
            added,
            removed,
        )
        return True

    def _rejected(self, error: str) -> None:
        status = self.status
        status.last_reload_successful = False
        if status.rejected_since is None:
            status.rejected_since = self._clock.time()
        status.rejected_error = error.splitlines()[0] if error else "rejected"
