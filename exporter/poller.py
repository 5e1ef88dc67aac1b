"""Polls every campaign on its schedule, turns failures into reasons, and publishes snapshots."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from exporter.client import (
    ConnectionFailedError,
    FetchError,
    HTTPStatusError,
    InvalidResponseError,
    RequestTimeoutError,
)
from exporter.config import Settings
from exporter.models import Campaign
from exporter.state import (
    DURATION_BUCKETS,
    CampaignView,
    HistogramData,
    Snapshot,
)

log = logging.getLogger(__name__)

# A round also takes campaigns due within this fraction of the poll interval, so that
# per-campaign jitter does not split every round into many tiny ones.
COALESCE_FRACTION = 0.1
# While fetch results come in, a snapshot is published at most this often (seconds); the end
# of a round publishes at once.
PUBLISH_EVERY_SECONDS = 5.0
# Campaigns queued per step of the dispatcher: a round of ten thousand is queued in slices so
# that the event loop keeps serving scrapes meanwhile.
DISPATCH_SLICE = 1000
# Longest wait honoured from a Retry-After header (seconds).
MAX_RETRY_AFTER_SECONDS = 3600.0


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives as the
    event is set, which left a cancelled task running forever at shutdown.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for scheduling."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary, never-decreasing origin."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds from an arbitrary, never-decreasing origin."""
        return time.monotonic()


class CampaignFetcher(Protocol):
    """Anything that fetches one campaign record or raises a FetchError."""

    async def fetch_changed(
        self, campaign_id: str, digest: bytes | None
    ) -> tuple[Campaign | None, bytes]:
        """Fetch one campaign: no record when its body still has ``digest``, else the new one."""


def error_reason(error: BaseException) -> str:
    """The bounded ``reason`` label for a failed fetch."""
    if isinstance(error, HTTPStatusError):
        status = error.status
        if status == 401:
            return "unauthorized"
        if status == 403:
            return "forbidden"
        if status == 404:
            return "not_found"
        if status == 429:
            return "rate_limited"
        if status >= 500:
            return "server_error"
        if 400 <= status < 500:
            return "client_error"
        return "invalid_response"
    if isinstance(error, RequestTimeoutError):
        return "timeout"
    if isinstance(error, ConnectionFailedError):
        return "connection"
    return "invalid_response"


def backoff_delay(failures: int, interval: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: the interval doubled per failure, capped, then +0-25%."""
    cap = max(interval, min(10 * interval, 600.0))
    base = min(cap, interval * 2.0 ** max(0, failures - 1))
    return min(cap, base * rng.uniform(1.0, 1.25))


class TokenBucket:
    """Caps the request rate: ``rate`` tokens per second, bursts of at most ``burst``."""

    def __init__(self, rate: float, clock: Clock, burst: float | None = None) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._clock = clock
        self._stamp = clock.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait until one request may start."""
        async with self._lock:  # first come, first served
            self._refill()
            while self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens -= 1.0


@dataclass(slots=True)
class _CampaignState:
    campaign_id: str
    next_due: float
    record: Campaign | None = None
    digest: bytes | None = None  # of the body ``record`` was parsed from
    up: bool = False
    last_success: float | None = None
    last_success_mono: float | None = None
    failures: int = 0
    not_before: float = 0.0  # a Retry-After deadline: never pulled forward by coalescing
    queued: bool = False  # waiting for or held by a worker
    errors: tuple[tuple[str, int], ...] = ()  # failed fetches by reason, sorted by reason
    due_seq: int = -1  # sequence number of this campaign's live entry in the due heap
    stale_at: float | None = None  # deadline of its live entry in the stale heap
    view: CampaignView | None = None

    def make_view(self) -> CampaignView:
        self.view = CampaignView(
            campaign_id=self.campaign_id,
            record=self.record,
            up=self.up,
            last_success=self.last_success,
            errors=self.errors,
        )
        return self.view


@dataclass(slots=True)
class _Batch:
    """The campaigns dispatched together: one poll round."""

    started: float
    horizon: float  # campaigns due by then belong to this round
    remaining: int = 0  # queued or in flight
    size: int = 0
    sealed: bool = False  # every campaign of the round is queued
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RequestStats:
    """API request counters and duration histogram; the client reports into it."""

    def __init__(self) -> None:
        self._by_code: dict[str, int] = {}
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._sum = 0.0

    def observe_request(self, code: str, duration: float) -> None:
        """Count one request and its duration."""
        self._by_code[code] = self._by_code.get(code, 0) + 1
        self._buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self._sum += duration

    def requests_by_code(self) -> tuple[tuple[str, int], ...]:
        """Counts per status code, sorted by code."""
        return tuple(sorted(self._by_code.items()))

    def histogram(self) -> HistogramData:
        """Cumulative histogram of durations."""
        cumulative: list[int] = []
        running = 0
        for count in self._buckets:
            running += count
            cumulative.append(running)
        return HistogramData(buckets=tuple(cumulative), total=self._sum)


SnapshotSink = Callable[[Snapshot], Awaitable[None]]


class Poller:
    """Schedules fetches (interval, jitter, backoff, Retry-After) and publishes snapshots."""

    def __init__(
        self,
        settings: Settings,
        fetcher: CampaignFetcher,
        sink: SnapshotSink,
        *,
        campaign_ids: Iterable[str],
        stats: RequestStats | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        process_text: Callable[[], str] | None = None,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._sink = sink
        self._stats = stats or RequestStats()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._process_text = process_text or (lambda: "")
        self._states: dict[str, _CampaignState] = {}
        self._wake = asyncio.Event()
        self._ready = False
        self._last_round_end: float | None = None
        self._last_round_duration: float | None = None
        self._reload_success = True
        self._reload_timestamp: float | None = self._clock.time()
        self._publish_lock = asyncio.Lock()
        self._publish_now = asyncio.Event()
        self._dirty_since: float | None = None  # first result not yet published (monotonic)
        self._queue: asyncio.Queue[tuple[_CampaignState, _Batch]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._planned_wakeup = 0.0
        self._first_batch: _Batch | None = None  # readiness: every campaign tried once
        # Heaps with lazy deletion, so that nothing on the polling path walks every campaign:
        # (when due, sequence, campaign) for campaigns waiting for their next fetch, and
        # (when its data goes stale, sequence, campaign) for campaigns whose data is shown.
        self._due: list[tuple[float, int, _CampaignState]] = []
        self._stale: list[tuple[float, int, _CampaignState]] = []
        self._seq = itertools.count()
        self.set_campaigns(campaign_ids)

    @property
    def campaign_ids(self) -> tuple[str, ...]:
        """Campaigns currently polled."""
        return tuple(self._states)

    def set_campaigns(self, campaign_ids: Iterable[str]) -> None:
        """Replace the campaign list; kept campaigns keep their state, new ones are due now."""
        now = self._clock.monotonic()
        wanted = list(dict.fromkeys(campaign_ids))
        old = self._states
        states: dict[str, _CampaignState] = {}
        for cid in wanted:
            state = old.get(cid)
            if state is None:
                state = _CampaignState(cid, next_due=now)
                self._schedule(state)
            states[cid] = state
        self._states = states
        self._publish_now.set()
        self._wake.set()

    def note_reload(self, success: bool) -> None:
        """Record the outcome of a configuration reload for the exporter's own metrics."""
        self._reload_success = success
        if success:
            self._reload_timestamp = self._clock.time()
        self._publish_now.set()
        self._wake.set()

    def _interval_for(self, state: _CampaignState) -> float:
        if state.record is not None and state.record.is_terminal:
            return self._settings.terminal_poll_interval_seconds
        return self._settings.poll_interval_seconds

    async def run(self) -> None:
        """Poll until cancelled: dispatch due campaigns to the workers, publish as results come."""
        self._ensure_workers()
        publisher = asyncio.create_task(self._publisher(), name="dialnexa-publisher")
        try:
            while True:
                self._wake.clear()
                batch = self._dispatch()
                while batch is not None and not batch.sealed:
                    await asyncio.sleep(0)
                    self._fill(batch)
                if self._expire_stale():
                    self._publish_now.set()
                self._planned_wakeup = self._next_wakeup()
                delay = self._planned_wakeup - self._clock.monotonic()
                if delay > 0:
                    await _wait_event(self._wake, delay)
                else:
                    await asyncio.sleep(0)  # never hog the loop, whatever the schedule says
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            await self.stop_workers()

    async def poll_once(self) -> bool:
        """Fetch the campaigns that are due now, wait for them and publish; False if none were."""
        self._ensure_workers()
        batch = self._dispatch()
        if batch is None:
            return False
        while not batch.sealed:
            await asyncio.sleep(0)
            self._fill(batch)
        await batch.done.wait()
        await self._publish()
        return True

    async def stop_workers(self) -> None:
        """Cancel the fetch workers and wait for them (in-flight fetches are abandoned)."""
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _ensure_workers(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._worker(), name="dialnexa-fetch-worker")
                for _ in range(self._settings.max_concurrency)
            ]

    def _schedule(self, state: _CampaignState) -> None:
        """(Re)enter a campaign in the due heap at its next fetch time."""
        state.due_seq = seq = next(self._seq)
        heapq.heappush(self._due, (max(state.next_due, state.not_before), seq, state))

    def _live_due(self, entry: tuple[float, int, _CampaignState]) -> bool:
        _, seq, state = entry
        return (
            state.due_seq == seq
            and not state.queued
            and self._states.get(state.campaign_id) is state  # not removed by a reload
        )

    def _dispatch(self) -> _Batch | None:
        """Start a round with the campaigns due now; None when none is (after the first round).

        Only the first DISPATCH_SLICE campaigns are queued here; ``_fill`` queues the rest.
        """
        now = self._clock.monotonic()
        horizon = now + COALESCE_FRACTION * self._settings.poll_interval_seconds
        batch = _Batch(started=now, horizon=horizon)
        first = self._first_batch is None
        if first:
            self._first_batch = batch  # with no campaign at all, an empty round makes us ready
        self._fill(batch, finish_empty=first)
        if batch.size == 0 and not first:
            return None
        return batch

    def _fill(self, batch: _Batch, finish_empty: bool = True) -> None:
        """Queue up to DISPATCH_SLICE more campaigns of ``batch``; seal it when none is left."""
        now = self._clock.monotonic()
        heap = self._due
        held: list[_CampaignState] = []
        taken = 0
        while heap and heap[0][0] <= batch.horizon and taken < DISPATCH_SLICE:
            entry = heapq.heappop(heap)
            if not self._live_due(entry):
                continue
            state = entry[2]
            if state.not_before > now:  # a Retry-After deadline is never pulled forward
                held.append(state)
                continue
            state.queued = True
            self._queue.put_nowait((state, batch))
            taken += 1
        batch.size += taken
        batch.remaining += taken
        batch.sealed = not (heap and heap[0][0] <= batch.horizon)
        for state in held:
            self._schedule(state)
        if batch.sealed and batch.remaining == 0 and (batch.size or finish_empty):
            self._finish(batch)

    async def _worker(self) -> None:
        while True:
            state, batch = await self._queue.get()
            try:
                if self._states.get(state.campaign_id) is state:  # not removed by a reload
                    await self._fetch(state, batch.started)
                    if self._dirty_since is None:
                        self._dirty_since = time.monotonic()
                    if state.next_due < self._planned_wakeup:
                        self._wake.set()
            finally:
                state.queued = False
                if self._states.get(state.campaign_id) is state:
                    self._schedule(state)
                batch.remaining -= 1
                if batch.remaining == 0 and batch.sealed:
                    self._finish(batch)

    def _finish(self, batch: _Batch) -> None:
        self._last_round_duration = self._clock.monotonic() - batch.started
        self._last_round_end = self._clock.time()
        if not self._ready and batch is self._first_batch:
            self._ready = True
            log.info("first poll round done: %d campaigns", len(self._states))
        batch.done.set()
        self._publish_now.set()
        self._wake.set()

    async def _publisher(self) -> None:
        """Publish at once when a round ends; during a long round, PUBLISH_EVERY_SECONDS after
        the first result not yet published (a short round is published once, at its end)."""
        while True:
            wait = PUBLISH_EVERY_SECONDS
            if self._dirty_since is not None:
                wait = max(0.0, self._dirty_since + PUBLISH_EVERY_SECONDS - time.monotonic())
            await _wait_event(self._publish_now, wait)
            overdue = (
                self._dirty_since is not None
                and time.monotonic() - self._dirty_since >= PUBLISH_EVERY_SECONDS
            )
            if self._publish_now.is_set() or overdue:
                self._publish_now.clear()
                await self._publish()

    def next_fetch_in(self, campaign_id: str) -> float:
        """Seconds until ``campaign_id`` is fetched again (negative when overdue)."""
        return self._states[campaign_id].next_due - self._clock.monotonic()

    def _stale_limit(self, state: _CampaignState) -> float:
        """Seconds without a success after which a campaign's data is dropped.

        A completed or cancelled campaign is only fetched every terminal interval, so its data
        is kept that much longer: it is not stale merely because nobody asked.
        """
        stale_after = self._settings.stale_after_seconds
        if state.record is not None and state.record.is_terminal:
            return stale_after + self._settings.terminal_poll_interval_seconds
        return stale_after

    def _next_wakeup(self) -> float:
        """Earliest moment something is due: a fetch, or a campaign's data going stale."""
        due, stale = self._due, self._stale
        while due and not self._live_due(due[0]):
            heapq.heappop(due)
        while stale and stale[0][2].stale_at != stale[0][0]:
            heapq.heappop(stale)
        candidates = [heap[0][0] for heap in (due, stale) if heap]
        return min(candidates, default=self._clock.monotonic() + 60.0)

    def _track_staleness(self, state: _CampaignState) -> None:
        """Make sure the stale heap holds this campaign no later than its data's deadline."""
        if state.record is None or state.last_success_mono is None:
            return
        deadline = state.last_success_mono + self._stale_limit(state)
        if state.stale_at is None or deadline < state.stale_at:
            state.stale_at = deadline
            heapq.heappush(self._stale, (deadline, next(self._seq), state))

    async def _fetch(self, state: _CampaignState, round_started: float) -> None:
        try:
            known = state.digest if state.record is not None else None
            fetched, digest = await self._fetcher.fetch_changed(state.campaign_id, known)
        except asyncio.CancelledError:
            raise
        except FetchError as exc:
            self._on_failure(state, exc)
        except Exception as exc:  # the one broad catch: an unexpected bug must not stop polling
            log.exception("unexpected error fetching campaign %s", state.campaign_id)
            self._on_failure(state, InvalidResponseError(type(exc).__name__))
        else:
            if fetched is not None:
                state.digest = digest
            record = fetched or state.record  # no record: the body is the one it was parsed from
            assert record is not None  # without a record no digest was offered to match
            self._on_success(state, record, round_started)

    def _on_success(self, state: _CampaignState, record: Campaign, round_started: float) -> None:
        if not state.up and state.failures:
            log.info(
                "campaign %s recovered after %d failed fetches", state.campaign_id, state.failures
            )
        if record is not state.record:
            state.record = record  # a body unchanged since the last fetch keeps its record
        state.up = True
        state.failures = 0
        state.last_success = self._clock.time()
        state.last_success_mono = self._clock.monotonic()
        # Counted from the round's start, not this fetch's: the campaigns of a round stay due
        # together (within the coalescing window), so a round stays one round.
        state.next_due = round_started + self._interval_for(state) * self._rng.uniform(0.9, 1.0)
        self._track_staleness(state)
        state.make_view()

    def _on_failure(self, state: _CampaignState, error: FetchError) -> None:
        reason = error_reason(error)
        counts = dict(state.errors)
        counts[reason] = counts.get(reason, 0) + 1
        state.errors = tuple(sorted(counts.items()))
        state.failures += 1
        was_up = state.up
        state.up = False
        if reason == "not_found" and state.record is not None:
            log.warning(
                "campaign %s no longer exists (404): dropping its series", state.campaign_id
            )
            state.record = None
        retry_after = error.retry_after if isinstance(error, HTTPStatusError) else None
        if retry_after is not None and retry_after > 0:
            delay = min(retry_after, MAX_RETRY_AFTER_SECONDS)
            state.not_before = self._clock.monotonic() + delay
        else:
            delay = backoff_delay(state.failures, self._interval_for(state), self._rng)
        state.next_due = self._clock.monotonic() + delay
        level = logging.WARNING if was_up or state.failures == 1 else logging.DEBUG
        log.log(
            level,
            "fetch of campaign %s failed (%s: %s); next try in %.1fs",
            state.campaign_id,
            reason,
            error,
            delay,
        )
        state.make_view()

    def _expire_stale(self) -> bool:
        """Drop the data of campaigns without a success for STALE_AFTER; True if any went."""
        changed = False
        now = self._clock.monotonic()
        heap = self._stale
        while heap and heap[0][0] <= now:
            deadline, _, state = heapq.heappop(heap)
            if state.stale_at != deadline:
                continue  # superseded by an earlier entry
            state.stale_at = None
            if self._states.get(state.campaign_id) is not state:
                continue  # removed by a reload
            if state.record is None or state.last_success_mono is None:
                continue  # already dropped (404)
            if now - state.last_success_mono < self._stale_limit(state):
                self._track_staleness(state)  # fetched since: a later deadline
                continue
            log.warning(
                "campaign %s: no successful fetch for %.0fs, dropping its series",
                state.campaign_id,
                now - state.last_success_mono,
            )
            state.record = None
            state.make_view()
            changed = True
        return changed

    def build_snapshot(self) -> Snapshot:
        """The current state as an immutable snapshot."""
        self._expire_stale()
        views = tuple(
            state.view if state.view is not None else state.make_view()
            for state in self._states.values()
        )
        return Snapshot(
            campaigns=views,
            requests_by_code=self._stats.requests_by_code(),
            request_durations=self._stats.histogram(),
            campaigns_configured=len(self._states),
            last_poll_timestamp=self._last_round_end,
            poll_duration=self._last_round_duration,
            ready=self._ready,
            shard_index=self._settings.effective_shard_index,
            shard_count=self._settings.shard_count,
            config_reload_success=self._reload_success,
            config_reload_timestamp=self._reload_timestamp,
            process_text=self._process_text(),
        )

    async def _publish(self) -> None:
        async with self._publish_lock:
            self._dirty_since = None
            try:
                await self._sink(self.build_snapshot())
            except asyncio.CancelledError:
                raise
            except Exception:  # a rendering bug must not stop polling; the last page stays up
                log.exception("publishing metrics failed; still serving the previous ones")
