"""Polls every campaign on its schedule through a pool of workers, and publishes snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from exporter.api.client import FetchError, InvalidResponseError
from exporter.api.models import TERMINAL_STATUSES, Campaign
from exporter.clock import Clock, SystemClock
from exporter.config import Settings, campaign_count
from exporter.polling.due_queue import DueQueue
from exporter.polling.outcome import (
    FAILURE_JITTER,
    SUCCESS_JITTER,
    SuccessTiming,
    drops_data,
    error_reason,
    next_due_after_success,
    poll_interval,
    retry_after_failure,
    stale_limit,
)
from exporter.polling.staleness import StalenessTracker
from exporter.polling.state import CampaignState, Snapshot, snapshot_of

log = logging.getLogger("exporter.poller")

# A round also takes campaigns due within this fraction of the poll interval, so that
# per-campaign jitter does not split every round into many tiny ones.
COALESCE_FRACTION = 0.1
# While fetch results come in, a snapshot is published at most this often (seconds); the end
# of a round publishes at once.
PUBLISH_EVERY_SECONDS = 5.0
# Campaigns queued per step of the dispatcher, and campaigns added per step of a reload: ten
# thousand are handled in slices so that the event loop keeps serving scrapes meanwhile.
DISPATCH_SLICE = 1000
RELOAD_SLICE = 5000


class CampaignFetcher(Protocol):
    """Anything that fetches one campaign record or raises a FetchError."""

    async def fetch_changed(
        self, campaign_id: str, digest: int | None
    ) -> tuple[Campaign | None, int]:
        """Fetch one campaign: no record when its body still has ``digest``, else the new one."""


SnapshotSink = Callable[[Snapshot], Awaitable[None]]


@dataclass(slots=True)
class Batch:
    """The campaigns dispatched together: one poll round."""

    started: float
    horizon: float  # campaigns due by then belong to this round
    remaining: int = 0  # queued or in flight
    size: int = 0
    sealed: bool = False  # every campaign of the round is queued
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Publisher:
    """Hands snapshots to the sink: at once when asked (a round ended, the list changed), and
    during a long round PUBLISH_EVERY_SECONDS after the first result not yet published."""

    def __init__(self, build: Callable[[], Snapshot], sink: SnapshotSink, clock: Clock) -> None:
        self._build = build
        self._sink = sink
        self._clock = clock
        self._lock = asyncio.Lock()
        self._now = asyncio.Event()
        self._dirty_since: float | None = None  # first result not yet published (monotonic)

    def request(self) -> None:
        """Publish as soon as the publisher runs."""
        self._now.set()

    def note_result(self) -> None:
        """A fetch result came in; it is published within PUBLISH_EVERY_SECONDS."""
        if self._dirty_since is None:
            self._dirty_since = self._clock.monotonic()

    def _overdue_in(self) -> float:
        if self._dirty_since is None:
            return PUBLISH_EVERY_SECONDS
        return self._dirty_since + PUBLISH_EVERY_SECONDS - self._clock.monotonic()

    async def run(self) -> None:
        """Publish whenever asked or overdue, until cancelled."""
        while True:
            await self._clock.wait(self._now, max(0.0, self._overdue_in()))
            if self._now.is_set() or (self._dirty_since is not None and self._overdue_in() <= 0):
                self._now.clear()
                await self.publish()

    async def publish(self) -> None:
        """Build a snapshot and hand it to the sink; a failing sink keeps the previous page."""
        async with self._lock:
            self._dirty_since = None
            try:
                await self._sink(self._build())
            except asyncio.CancelledError:
                raise
            except Exception:  # a rendering bug must not stop polling; the last page stays up
                log.exception("publishing metrics failed; still serving the previous ones")


class CampaignList:
    """The campaigns polled, by id; a new list keeps the state of the campaigns it keeps."""

    def __init__(self, due: DueQueue, staleness: StalenessTracker) -> None:
        self.states: dict[str, CampaignState] = {}
        self.added = self.removed = 0  # by the latest replace
        self._due = due
        self._staleness = staleness

    def planned_rate(self, settings: Settings) -> float:
        """Requests per second the schedule plans: each campaign once per its interval."""
        return sum(1.0 / poll_interval(s.record, settings) for s in self.states.values())

    def replace(self, campaign_ids: Iterable[str], now: float) -> Iterator[None]:
        """Switch to ``campaign_ids``, yielding between slices of RELOAD_SLICE campaigns.

        New campaigns are due at ``now``; removed ones are marked so that the workers and the
        queues let go of them, and the queues drop their entries at once (their memory too).
        """
        old = self.states
        states: dict[str, CampaignState] = {}
        added: list[CampaignState] = []
        for count, cid in enumerate(dict.fromkeys(campaign_ids), start=1):
            state = old.get(cid)
            if state is None:
                state = CampaignState(cid, next_due=now)
                added.append(state)
            states[cid] = state
            if count % RELOAD_SLICE == 0:
                yield
        removed = [state for cid, state in old.items() if cid not in states]
        for state in removed:
            state.removed = True
        self.states = states
        self.added, self.removed = len(added), len(removed)
        if removed:
            self._due.compact()
            self._staleness.compact()
        for start in range(0, len(added), RELOAD_SLICE):
            for state in added[start : start + RELOAD_SLICE]:
                self._due.schedule(state)
            yield


class RoundRunner:
    """A fixed pool of workers fetching, round by round, the campaigns the due queue hands out.

    A round (a Batch) takes every campaign due by its horizon, queued DISPATCH_SLICE at a time;
    it ends when the last of them is fetched, whatever order the workers finish in. A worker
    puts each campaign back into the due queue once its fetch has set the next due time.
    """

    def __init__(
        self,
        due: DueQueue,
        clock: Clock,
        *,
        concurrency: int,
        coalesce_seconds: float,
        fetcher: CampaignFetcher,
        succeeded: Callable[[CampaignState, Campaign | None, int, float], None],
        failed: Callable[[CampaignState, Exception], None],
        round_done: Callable[[Batch], None],
    ) -> None:
        self._due = due
        self._clock = clock
        self._concurrency = concurrency
        self._coalesce_seconds = coalesce_seconds
        self._fetcher = fetcher
        self._succeeded = succeeded
        self._failed = failed
        self._round_done = round_done
        # Campaigns queued for the workers, and set while there are any: a deque, not an
        # asyncio.Queue, whose put and get cost a microsecond a fetch in Python.
        self._queued: deque[tuple[CampaignState, Batch]] = deque()
        self._work = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def start_workers(self) -> None:
        """Start the worker pool (once)."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._worker(), name="dialnexa-fetch-worker")
                for _ in range(self._concurrency)
            ]

    async def stop_workers(self) -> None:
        """Cancel the workers and wait for them (in-flight fetches are abandoned)."""
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def dispatch(self, *, first: bool) -> Batch | None:
        """Start a round with the campaigns due now; None when none is (unless ``first``: an
        empty first round still ends, so that an exporter without campaigns becomes ready)."""
        now = self._clock.monotonic()
        batch = Batch(started=now, horizon=now + self._coalesce_seconds)
        self.fill(batch, finish_empty=first)
        if batch.size == 0 and not first:
            return None
        return batch

    async def seal(self, batch: Batch) -> None:
        """Queue the rest of ``batch`` a slice at a time, letting the event loop run between."""
        while not batch.sealed:
            await asyncio.sleep(0)
            self.fill(batch)

    def fill(self, batch: Batch, finish_empty: bool = True) -> None:
        """Queue up to DISPATCH_SLICE more campaigns of ``batch``; seal it when none is left."""
        states, more = self._due.take(batch.horizon, self._clock.monotonic(), DISPATCH_SLICE)
        for state in states:
            state.queued = True
            self._queued.append((state, batch))
        if states:
            self._work.set()
        batch.size += len(states)
        batch.remaining += len(states)
        batch.sealed = not more
        if batch.sealed and batch.remaining == 0 and (batch.size or finish_empty):
            self._end(batch)

    async def _worker(self) -> None:
        """Fetch the queued campaigns one after another and hand each outcome over. The fetch
        is awaited here, not in a coroutine of its own: this is the path of every request."""
        queued, work, fetch = self._queued, self._work, self._fetcher.fetch_changed
        while True:
            if not queued:
                work.clear()
                await work.wait()  # every idle worker wakes at a fill; those too late wait again
                continue
            state, batch = queued.popleft()
            try:
                if not state.removed:
                    known = state.digest if state.record is not None else None
                    try:
                        fetched, digest = await fetch(state.campaign_id, known)
                    except Exception as exc:  # FetchError, or a bug: polling goes on
                        self._failed(state, exc)
                    else:
                        self._succeeded(state, fetched, digest, batch.started)
            finally:
                state.queued = False
                if not state.removed:
                    self._due.schedule(state)
                batch.remaining -= 1
                if batch.remaining == 0 and batch.sealed:
                    self._end(batch)

    def _end(self, batch: Batch) -> None:
        batch.done.set()
        self._round_done(batch)


class Readiness:
    """When the exporter counts as ready (/readyz 200): once its first round is done, or once
    one request timeout (plus the timeout's resolution) has passed since that round began,
    whichever comes first. After a timeout the exporter has news to tell (fetches timing out,
    campaigns not fetched yet), and a rollout should not wait for a hanging API."""

    def __init__(self, request_timeout: float) -> None:
        self._grace = request_timeout + min(1.0, request_timeout / 10)
        self.ready = False
        self.deadline: float | None = None  # set when the first round starts
        self.first: Batch | None = None

    def started(self, batch: Batch | None, now: float) -> None:
        """The first round began at ``now``."""
        self.first = batch
        self.deadline = now + self._grace

    def round_done(self, batch: Batch, campaigns: int) -> None:
        """A round ended; the first one makes the exporter ready."""
        if not self.ready and (self.first is None or batch is self.first):
            self.ready = True
            log.info("first poll round done: %s", campaign_count(campaigns))

    def give_up_waiting(self, now: float) -> bool:
        """True when the deadline passed just now, making the exporter ready."""
        if self.ready or self.deadline is None or now < self.deadline:
            return False
        self.ready = True
        log.warning(
            "first poll round still running after the request timeout; ready anyway "
            "(campaigns not fetched yet show campaign_up 0 until their first fetch)"
        )
        return True


class Poller:
    """Dispatches due campaigns to a fixed pool of workers, one round at a time, and applies
    each outcome (reason, backoff, Retry-After, next fetch) to the campaign's state."""

    def __init__(
        self,
        settings: Settings,
        fetcher: CampaignFetcher,
        sink: SnapshotSink,
        *,
        campaign_ids: Iterable[str],
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._due = DueQueue()
        self._staleness = StalenessTracker(lambda record: stale_limit(record, settings))
        self._timing = SuccessTiming.of(settings)
        self._campaigns = CampaignList(self._due, self._staleness)
        self._publisher = Publisher(self.build_snapshot, sink, self._clock)
        self._rounds = RoundRunner(
            self._due,
            self._clock,
            concurrency=settings.max_concurrency,
            coalesce_seconds=COALESCE_FRACTION * settings.poll_interval_seconds,
            fetcher=fetcher,
            succeeded=self._fetched,
            failed=self._fetch_failed,
            round_done=self._round_done,
        )
        self._wake = asyncio.Event()
        self._planned_wakeup = 0.0
        self._readiness = Readiness(settings.request_timeout_seconds)
        self._last_round_end: float | None = None
        self._last_round_duration: float | None = None
        self.set_campaigns(campaign_ids)
        self._planned_rate: float | None = None  # summed when read

    @property
    def planned_rate(self) -> float:
        """Requests per second the schedule plans: each campaign once per its interval (as of
        the latest round; before the first, every campaign at the poll interval)."""
        if self._planned_rate is None:  # summed when read: at each round's end it cost 15%
            self._planned_rate = self._campaigns.planned_rate(self._settings)
        return self._planned_rate

    @property
    def campaign_ids(self) -> tuple[str, ...]:
        """Campaigns currently polled."""
        return tuple(self._campaigns.states)

    def set_campaigns(self, campaign_ids: Iterable[str]) -> None:
        """Replace the campaign list; kept campaigns keep their state, new ones are due now."""
        for _ in self._campaigns.replace(campaign_ids, self._clock.monotonic()):
            pass
        self._listed()

    async def replace_campaigns(self, campaign_ids: Iterable[str]) -> tuple[int, int]:
        """set_campaigns in slices, yielding to the event loop between them (for reloads);
        returns how many campaigns were added and removed."""
        for _ in self._campaigns.replace(campaign_ids, self._clock.monotonic()):
            await asyncio.sleep(0)
        self._listed()
        return self._campaigns.added, self._campaigns.removed

    def _listed(self) -> None:
        self._publisher.request()
        self._wake.set()

    def next_fetch_in(self, campaign_id: str) -> float:
        """Seconds until ``campaign_id`` is fetched again (negative when overdue)."""
        return self._campaigns.states[campaign_id].next_due - self._clock.monotonic()

    def build_snapshot(self) -> Snapshot:
        """The current state as an immutable snapshot (stale data dropped first)."""
        now = self._clock.monotonic()
        self._staleness.expire(now)
        return snapshot_of(
            self._campaigns.states.values(),
            self._clock.time() - now,
            last_poll_timestamp=self._last_round_end,
            poll_duration=self._last_round_duration,
            ready=self._readiness.ready,
        )

    async def run(self) -> None:
        """Poll until cancelled: dispatch due campaigns to the workers, publish as results come."""
        self._rounds.start_workers()
        publisher = asyncio.create_task(self._publisher.run(), name="dialnexa-publisher")
        try:
            while True:
                self._wake.clear()
                batch = self._dispatch()
                if batch is not None:
                    await self._rounds.seal(batch)
                now = self._clock.monotonic()
                if self._staleness.expire(now) or self._readiness.give_up_waiting(now):
                    self._publisher.request()
                self._planned_wakeup = self._next_wakeup()
                delay = self._planned_wakeup - self._clock.monotonic()
                if delay > 0:
                    await self._clock.wait(self._wake, delay)
                else:
                    await asyncio.sleep(0)  # never hog the loop, whatever the schedule says
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            await self.stop_workers()

    async def poll_once(self) -> bool:
        """Fetch the campaigns that are due now, wait for them and publish; False if none were."""
        self._rounds.start_workers()
        batch = self._dispatch()
        if batch is None:
            return False
        await self._rounds.seal(batch)
        await batch.done.wait()
        await self._publisher.publish()
        return True

    async def stop_workers(self) -> None:
        """Cancel the fetch workers and wait for them (in-flight fetches are abandoned)."""
        await self._rounds.stop_workers()

    def _dispatch(self) -> Batch | None:
        """Start a round with the campaigns due now (the first one arms the readiness limit)."""
        first = self._readiness.deadline is None
        batch = self._rounds.dispatch(first=first)
        if first:
            self._readiness.started(batch, self._clock.monotonic())
        return batch

    def _round_done(self, batch: Batch) -> None:
        self._last_round_duration = self._clock.monotonic() - batch.started
        self._last_round_end = self._clock.time()
        self._planned_rate = None  # summed again when next read
        self._readiness.round_done(batch, len(self._campaigns.states))
        self._publisher.request()
        self._wake.set()

    def _next_wakeup(self) -> float:
        """Earliest moment something is due: a fetch, data going stale, readiness given up."""
        candidates = [self._due.next_due(), self._staleness.next_deadline()]
        if not self._readiness.ready:
            candidates.append(self._readiness.deadline)
        times = [when for when in candidates if when is not None]
        return min(times, default=self._clock.monotonic() + 60.0)

    def _fetched(
        self, state: CampaignState, fetched: Campaign | None, digest: int, round_started: float
    ) -> None:
        """A fetch succeeded: ``fetched`` is None when the body is the one already parsed."""
        if fetched is not None:
            state.digest = digest
        record = fetched or state.record
        assert record is not None  # without a record no digest was offered to match
        self._on_success(state, record, round_started)
        self._settled(state)

    def _fetch_failed(self, state: CampaignState, exc: Exception) -> None:
        """A fetch raised ``exc``: a FetchError, or a bug, which must not stop polling."""
        if not isinstance(exc, FetchError):
            log.error("unexpected error fetching campaign %s", state.campaign_id, exc_info=exc)
            exc = InvalidResponseError(type(exc).__name__)
        self._on_failure(state, exc)
        self._settled(state)

    def _settled(self, state: CampaignState) -> None:
        self._publisher.note_result()
        if state.next_due < self._planned_wakeup:
            self._wake.set()

    def _on_success(self, state: CampaignState, record: Campaign, round_started: float) -> None:
        if not state.up and state.failures:
            log.info(
                "campaign %s recovered after %d failed fetches", state.campaign_id, state.failures
            )
        timing, terminal = self._timing, record.status in TERMINAL_STATUSES
        now, fresh_for = self._clock.monotonic(), timing.fresh_for[terminal]
        state.succeeded(record, self._clock.time(), now, fresh_for, timing.max_gap)
        jitter = self._rng.uniform(*SUCCESS_JITTER)
        state.next_due = next_due_after_success(round_started, timing.interval[terminal], jitter)
        self._staleness.track(state)

    def _on_failure(self, state: CampaignState, error: FetchError) -> None:
        reason = error_reason(error)
        was_up = state.up
        if drops_data(reason) and state.record is not None:
            log.warning("campaign %s is gone (404): dropping its series", state.campaign_id)
        state.failed(reason.value, self._clock.time(), drop_data=drops_data(reason))
        interval = poll_interval(state.record, self._settings)
        retry = retry_after_failure(
            error, state.failures, interval, self._rng.uniform(*FAILURE_JITTER)
        )
        now = self._clock.monotonic()
        if retry.hard:
            state.not_before = now + retry.delay
        state.next_due = now + retry.delay
        log.log(
            logging.WARNING if was_up or state.failures == 1 else logging.DEBUG,
            "fetch of campaign %s failed (%s: %s); next try in %.1fs",
            state.campaign_id,
            reason.value,
            error,
            retry.delay,
        )
