"""What the exporter knows of each campaign: the poller's mutable per-campaign state, and the
immutable views and snapshots it publishes for the server to render."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import NamedTuple

from exporter import __version__
from exporter.api.models import Campaign


class CampaignView(NamedTuple):
    """One campaign as the exporter reports it; ``record`` is None when its data is not shown.

    A named tuple: one is made per fetch, and it is the cheapest immutable record to make.
    Times are Unix times.
    """

    campaign_id: str
    record: Campaign | None
    up: bool
    last_success: float | None
    errors: tuple[tuple[str, int], ...] = ()  # failed fetches by reason, sorted by reason
    last_attempt: float | None = None  # when the latest fetch ended, success or not
    failing_since: float | None = None  # first failure of the current run of failures
    last_error: str | None = None  # reason of the latest failure, while failing


@dataclass(slots=True)
class CampaignState:
    """The poller's working state for one campaign; only the poller's parts change it."""

    campaign_id: str
    next_due: float  # monotonic time of the next fetch
    record: Campaign | None = None
    digest: bytes | None = None  # of the body ``record`` was parsed from
    up: bool = False
    last_success: float | None = None
    last_success_mono: float | None = None
    last_attempt: float | None = None
    failing_since: float | None = None
    last_error: str | None = None
    failures: int = 0  # consecutive
    not_before: float = 0.0  # a Retry-After deadline: never pulled forward by coalescing
    queued: bool = False  # waiting for or held by a worker
    removed: bool = False  # dropped from the configuration by a reload
    errors: tuple[tuple[str, int], ...] = ()
    due_seq: int = -1  # sequence number of its live entry in the due queue
    stale_at: float | None = None  # deadline of its live entry in the staleness tracker
    view: CampaignView | None = None

    def make_view(self) -> CampaignView:
        """Freeze the current state into a view (kept until the state changes again)."""
        self.view = CampaignView(
            self.campaign_id,
            self.record,
            self.up,
            self.last_success,
            self.errors,
            self.last_attempt,
            self.failing_since,
            self.last_error,
        )
        return self.view

    def succeeded(self, record: Campaign, wall: float, mono: float) -> None:
        """A fetch returned ``record`` at ``wall`` (Unix) / ``mono`` (monotonic) time."""
        if record is not self.record:
            self.record = record  # a body unchanged since the last fetch keeps its record
        self.up = True
        self.failures = 0
        self.failing_since = self.last_error = None
        self.last_success = self.last_attempt = wall
        self.last_success_mono = mono
        self.make_view()

    def failed(self, reason: str, wall: float, *, drop_data: bool) -> None:
        """A fetch failed for ``reason`` at ``wall``; ``drop_data`` when the campaign is gone."""
        counts = dict(self.errors)
        counts[reason] = counts.get(reason, 0) + 1
        self.errors = tuple(sorted(counts.items()))
        self.failures += 1
        self.up = False
        self.last_attempt = wall
        if self.failing_since is None:
            self.failing_since = wall
        self.last_error = reason
        if drop_data:
            self.record = None
        self.make_view()

    def current_view(self) -> CampaignView:
        """The latest view, made now if none was yet."""
        return self.view if self.view is not None else self.make_view()


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """Versions of the exporter and of the Python running it, and the event loop it runs on."""

    version: str = __version__
    python_version: str = field(default_factory=platform.python_version)
    event_loop: str = "asyncio"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The campaigns as of one instant, with the poll round they come from; never mutated."""

    campaigns: tuple[CampaignView, ...] = ()
    last_poll_timestamp: float | None = None  # when the latest round finished
    poll_duration: float | None = None  # how long it took
    ready: bool = False  # the first round is done (or was given up waiting for)

    @property
    def campaigns_configured(self) -> int:
        """Campaigns being polled."""
        return len(self.campaigns)
