"""Immutable snapshots of what the exporter knows, swapped atomically for the server to render."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import NamedTuple

from exporter import __version__
from exporter.models import Campaign

# Upper bounds of the API request duration histogram, in seconds.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ERROR_REASONS: tuple[str, ...] = (
    "timeout",
    "connection",
    "unauthorized",
    "forbidden",
    "not_found",
    "rate_limited",
    "server_error",
    "client_error",
    "invalid_response",
)


class CampaignView(NamedTuple):
    """One campaign as the exporter reports it; ``record`` is None when its data is not shown.

    A named tuple: one is made per fetch, and it is the cheapest immutable record to make.
    """

    campaign_id: str
    record: Campaign | None
    up: bool
    last_success: float | None
    errors: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class HistogramData:
    """Cumulative bucket counts (same order as ``DURATION_BUCKETS``, then +Inf), sum and count."""

    buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    total: float = 0.0

    @property
    def count(self) -> int:
        """Observations in all."""
        return self.buckets[-1]


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """Version of the exporter and of Python running it."""

    version: str = __version__
    python_version: str = field(default_factory=platform.python_version)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``/metrics`` shows, as of one instant; never mutated after publication."""

    campaigns: tuple[CampaignView, ...] = ()
    requests_by_code: tuple[tuple[str, int], ...] = ()
    request_durations: HistogramData = HistogramData()
    build: BuildInfo = field(default_factory=BuildInfo)
    campaigns_configured: int = 0
    last_poll_timestamp: float | None = None
    poll_duration: float | None = None
    ready: bool = False
    shard_index: int = 0
    shard_count: int = 1
    config_reload_success: bool = True
    config_reload_timestamp: float | None = None
    process_text: str = ""
