"""What the exporter knows of each campaign: the poller's mutable per-campaign state, and the
immutable views and snapshots it publishes for the server to render."""

from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Collection
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

from exporter import __version__
from exporter.api.models import Campaign
from exporter.polling.progress import (
    DEFAULT_MAX_GAP_SECONDS,
    Progress,
    first_progress,
    next_progress,
)

_NEXT_DUE = attrgetter("next_due")


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
    fresh_until: float | None = None  # monotonic time its data goes stale; None: none shown
    progress: Progress | None = None  # how its completed calls move; None without data


@dataclass(slots=True)
class CampaignState:
    """The poller's working state for one campaign; only the poller's parts change it."""

    campaign_id: str
    next_due: float  # monotonic time of the next fetch
    record: Campaign | None = None
    digest: int | None = None  # hash of the body ``record`` was parsed from
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
    fresh_until: float | None = None  # monotonic time its data goes stale
    progress: Progress | None = None
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
            self.fresh_until if self.record is not None else None,
            self.progress,
        )
        return self.view

    def succeeded(
        self,
        record: Campaign,
        wall: float,
        mono: float,
        fresh_for: float = math.inf,
        max_gap: float = DEFAULT_MAX_GAP_SECONDS,
    ) -> None:
        """A fetch returned ``record`` at ``wall`` (Unix) / ``mono`` (monotonic) time; its data
        stays fresh for ``fresh_for`` seconds; a pace is measured over gaps up to ``max_gap``
        seconds between moves of its completed calls."""
        if record is not self.record:
            # A body unchanged since the last fetch keeps its record, and with it its progress.
            previous = self.progress
            self.progress = (
                first_progress(record, wall)
                if previous is None
                else next_progress(previous, record, wall, max_gap)
            )
            self.record = record
        self.up = True
        self.failures = 0
        self.failing_since = self.last_error = None
        self.last_success = self.last_attempt = wall
        self.last_success_mono = mono
        self.fresh_until = mono + fresh_for
        self.make_view()

    def went_stale(self) -> None:
        """Its data is past its deadline: dropped, and the campaign no longer up (its last
        fetch may have succeeded, but what it fetched is too old to count)."""
        self.record = None
        self.progress = None
        self.up = False
        self.fresh_until = None
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
            self.fresh_until = None
            self.progress = None
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
    # Polling lag (Unix times): scrapes subtract them from their own time, so the lag grows
    # even when no snapshot is published any more (a wedged poller).
    oldest_due: float | None = None  # when the campaign longest due became due
    oldest_data: float | None = None  # last success of the least recent data shown
    fresh_until: float | None = None  # monotonic time the first data shown goes stale

    @property
    def campaigns_configured(self) -> int:
        """Campaigns being polled."""
        return len(self.campaigns)

    def lag(self, now: float) -> PollingLag:
        """How far behind polling is at Unix time ``now``, judged from this snapshot."""
        overdue = None if self.oldest_due is None else max(0.0, now - self.oldest_due)
        age = None if self.oldest_data is None else max(0.0, now - self.oldest_data)
        return PollingLag(overdue, age)

    def without_stale_data(self, now: float) -> Snapshot:
        """This snapshot with the data past its deadline at monotonic ``now`` dropped (and its
        campaigns no longer up), as the poller would have published it."""
        views = tuple(
            view._replace(record=None, up=False, fresh_until=None)
            if view.fresh_until is not None and view.fresh_until <= now
            else view
            for view in self.campaigns
        )
        oldest, deadline = data_bounds(views)
        return dataclasses.replace(self, campaigns=views, oldest_data=oldest, fresh_until=deadline)


class PollingLag(NamedTuple):
    """How far behind polling is: the exporter-wide lag series, read at scrape time."""

    overdue_seconds: float | None  # the longest any campaign has waited past its due time
    oldest_data_age_seconds: float | None  # age of the least recent data shown


def data_bounds(views: tuple[CampaignView, ...]) -> tuple[float | None, float | None]:
    """Unix time of the least recent successful fetch whose data is shown, and the monotonic
    time at which the first data shown goes stale.

    One plain loop: at ten thousand campaigns it costs about as much as making the views'
    tuple, where a min() over a generator per figure costs three times that.
    """
    oldest = deadline = math.inf
    for view in views:
        until = view.fresh_until  # set exactly while the data is shown
        if until is not None:
            if until < deadline:
                deadline = until
            fetched = view.last_success
            if fetched is not None and fetched < oldest:
                oldest = fetched
    return (None if oldest == math.inf else oldest), (None if deadline == math.inf else deadline)


def snapshot_of(
    states: Collection[CampaignState],
    wall_offset: float,
    *,
    last_poll_timestamp: float | None,
    poll_duration: float | None,
    ready: bool,
) -> Snapshot:
    """A snapshot of ``states`` and the latest round; ``wall_offset`` turns monotonic times
    into Unix times."""
    views = tuple(state.current_view() for state in states)
    # A campaign being fetched keeps its past due time until the fetch ends: a fetch that
    # hangs, or waits for the API budget, counts as overdue.
    due = min(map(_NEXT_DUE, states), default=None)
    oldest, deadline = data_bounds(views)
    return Snapshot(
        campaigns=views,
        last_poll_timestamp=last_poll_timestamp,
        poll_duration=poll_duration,
        ready=ready,
        oldest_due=None if due is None else due + wall_offset,
        oldest_data=oldest,
        fresh_until=deadline,
    )
