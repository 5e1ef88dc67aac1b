"""The poller: rounds, workers, outcomes applied, publication, readiness; driven by a fake
clock and a hand-written fetcher (no network, no sleeps)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.api.client import ConnectionFailedError, HTTPStatusError
from exporter.api.models import Campaign, parse_campaign
from exporter.config import Settings, load_settings
from exporter.polling import poller as poller_module
from exporter.polling.poller import Poller
from exporter.polling.state import Snapshot
from tests.helpers import FakeClock, wait_for


class ScriptedFetcher:
    """Answers each campaign from a table: a record document or an exception to raise."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.after: dict[str, Any] = {}  # answers of the campaigns held by an Event
        self.calls: list[str] = []

    async def fetch_changed(
        self, campaign_id: str, digest: int | None
    ) -> tuple[Campaign | None, int]:
        """Return or raise what the table says; no record when the document is unchanged."""
        self.calls.append(campaign_id)
        answer = self.answers[campaign_id]
        if isinstance(answer, asyncio.Event):  # hang until the test sets it, then answer
            await answer.wait()
            answer = self.after[campaign_id]
        if isinstance(answer, BaseException):
            raise answer
        body_digest = hash(json.dumps(answer, sort_keys=True))
        if body_digest == digest:
            return None, body_digest
        return parse_campaign(answer, campaign_id), body_digest


def make_settings(**overrides: Any) -> Settings:
    """Settings with a 10 s interval unless overridden."""
    flags: dict[str, Any] = {
        "api_url": "http://127.0.0.1:1/v1",
        "api_key": SecretStr("k"),
        "campaign_ids": ["cmp_a"],
        "poll_interval_seconds": 10,
        "stale_after_seconds": 100,
        "terminal_poll_interval_seconds": 600,
    }
    flags.update(overrides)
    return load_settings(flags)


_HARNESSES: list[Harness] = []
_TASKS: list[asyncio.Task[None]] = []


@pytest.fixture(autouse=True)
async def _stop_pollers() -> AsyncIterator[None]:
    """Stop the running pollers and the fetch workers of every harness a test made."""
    yield
    while _TASKS:
        task = _TASKS.pop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    while _HARNESSES:
        await _HARNESSES.pop().poller.stop_workers()


class Harness:
    """A poller wired to the fake clock and fetcher, keeping every published snapshot."""

    def __init__(self, campaigns: list[str], **overrides: Any) -> None:
        _HARNESSES.append(self)
        self.clock = FakeClock()
        self.fetcher = ScriptedFetcher()
        self.published: list[Snapshot] = []
        self.poller = Poller(
            make_settings(campaign_ids=campaigns, **overrides),
            self.fetcher,
            self.sink,
            campaign_ids=campaigns,
            clock=self.clock,
            rng=random.Random(7),
        )

    async def sink(self, snapshot: Snapshot) -> None:
        """Keep the snapshot."""
        self.published.append(snapshot)

    async def running(self) -> asyncio.Task[None]:
        """Start ``poller.run()`` (stopped by the fixture) and wait until it sleeps on the clock."""
        task = asyncio.create_task(self.poller.run())
        _TASKS.append(task)
        await wait_for(lambda: self.clock.waiting >= 2, what="poller and publisher waiting")
        return task

    def view(self, campaign_id: str) -> Any:
        """The campaign's view in a fresh snapshot."""
        snapshot = self.poller.build_snapshot()
        return next(v for v in snapshot.campaigns if v.campaign_id == campaign_id)


ACTIVE = {"id": "cmp_a", "status": "active", "total_leads": 10, "pending_calls": 4}


async def test_first_round_fetches_everything_and_marks_ready() -> None:
    """The first round fetches every campaign, publishes, and the snapshot is ready."""
    harness = Harness(["cmp_a", "cmp_b"])
    harness.fetcher.answers = {"cmp_a": ACTIVE, "cmp_b": dict(ACTIVE, id="cmp_b")}
    assert await harness.poller.poll_once()
    assert sorted(harness.fetcher.calls) == ["cmp_a", "cmp_b"]
    assert harness.published[-1].ready
    assert all(v.up for v in harness.published[-1].campaigns)
    assert not await harness.poller.poll_once()  # nothing due until the interval passes


async def test_success_schedules_next_fetch_within_jittered_interval() -> None:
    """After a success the next fetch is 90-100% of the interval away."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = ACTIVE
    await harness.poller.poll_once()
    assert 9.0 <= harness.poller.next_fetch_in("cmp_a") <= 10.0
    harness.clock.now += 10
    assert await harness.poller.poll_once()
    assert harness.fetcher.calls == ["cmp_a", "cmp_a"]


async def test_terminal_campaigns_use_the_terminal_interval() -> None:
    """Completed and cancelled campaigns are refetched only every terminal interval."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = dict(ACTIVE, status="completed")
    await harness.poller.poll_once()
    assert 540.0 <= harness.poller.next_fetch_in("cmp_a") <= 600.0


async def test_completed_campaign_is_not_stale_between_its_rare_fetches() -> None:
    """A completed campaign keeps its data between terminal-interval fetches, however long."""
    harness = Harness(["cmp_a"], stale_after_seconds=100)
    harness.fetcher.answers["cmp_a"] = dict(ACTIVE, status="completed", pending_calls=0)
    await harness.poller.poll_once()
    harness.clock.now += 530  # far past STALE_AFTER, before the next (terminal) fetch is due
    assert not await harness.poller.poll_once()
    assert harness.view("cmp_a").record is not None
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(503)
    harness.clock.now += harness.poller.next_fetch_in("cmp_a")
    assert await harness.poller.poll_once()
    assert harness.view("cmp_a").record is not None  # failing, but not yet stale
    harness.clock.now = 1000.0 + 700  # STALE_AFTER past the terminal interval
    assert harness.view("cmp_a").record is None


async def test_reopened_campaign_goes_stale_on_the_active_schedule() -> None:
    """A completed campaign that becomes active again loses the terminal grace period: when
    its fetches then fail, its data goes after STALE_AFTER, not STALE_AFTER + terminal."""
    harness = Harness(["cmp_a"], stale_after_seconds=100, poll_interval_seconds=10)
    harness.fetcher.answers["cmp_a"] = dict(ACTIVE, status="completed")
    await harness.poller.poll_once()
    harness.fetcher.answers["cmp_a"] = ACTIVE  # reopened
    harness.clock.now += harness.poller.next_fetch_in("cmp_a")
    assert await harness.poller.poll_once()
    reopened_at = harness.clock.now
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(503)
    while harness.clock.now < reopened_at + 99:
        harness.clock.now = min(reopened_at + 99, harness.clock.now + 9)
        await harness.poller.poll_once()
    assert harness.view("cmp_a").record is not None  # failing for 99 s: kept
    harness.clock.now = reopened_at + 100
    assert harness.view("cmp_a").record is None  # STALE_AFTER: dropped, no terminal grace


async def test_a_large_round_is_dispatched_whole_in_slices() -> None:
    """A round bigger than one dispatch slice still fetches every campaign exactly once and
    counts as one round."""
    ids = [f"cmp_{n:04d}" for n in range(2500)]
    harness = Harness(ids)
    harness.fetcher.answers = {cid: dict(ACTIVE, id=cid) for cid in ids}
    assert await harness.poller.poll_once()
    assert sorted(harness.fetcher.calls) == ids
    assert harness.published[-1].ready
    assert len(harness.published) == 1


async def test_failure_keeps_last_values_until_stale_then_drops_them() -> None:
    """campaign_up goes 0 at once; the data stays until STALE_AFTER and then disappears."""
    harness = Harness(["cmp_a"], stale_after_seconds=100)
    harness.fetcher.answers["cmp_a"] = ACTIVE
    await harness.poller.poll_once()
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(503)
    harness.clock.now += 10
    await harness.poller.poll_once()
    view = harness.view("cmp_a")
    assert not view.up
    assert view.record is not None
    assert view.record.pending_calls == 4
    assert dict(view.errors) == {"server_error": 1}
    harness.clock.now += 89  # 99 s after the success
    assert harness.view("cmp_a").record is not None
    harness.clock.now += 1
    assert harness.view("cmp_a").record is None
    assert harness.view("cmp_a").last_success == 1_700_001_000.0


async def test_not_found_drops_data_at_once() -> None:
    """A 404 removes the campaign's data immediately, long before it would go stale."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = ACTIVE
    await harness.poller.poll_once()
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(404)
    harness.clock.now += 10
    await harness.poller.poll_once()
    view = harness.view("cmp_a")
    assert view.record is None
    assert not view.up
    assert dict(view.errors) == {"not_found": 1}


async def test_repeated_failures_back_off() -> None:
    """Each further failure pushes the next attempt out exponentially."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = ConnectionFailedError("refused")
    waits = []
    for _ in range(4):
        await harness.poller.poll_once()
        wait = harness.poller.next_fetch_in("cmp_a")
        waits.append(wait)
        harness.clock.now += wait
    assert waits[0] >= 10.0
    assert all(later > earlier for earlier, later in itertools.pairwise(waits))
    assert waits[3] >= 80.0
    assert dict(harness.view("cmp_a").errors) == {"connection": 4}


async def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After schedules the next attempt exactly that far out."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(429, retry_after=120.0)
    await harness.poller.poll_once()
    assert harness.poller.next_fetch_in("cmp_a") == 120.0
    harness.clock.now += 119
    assert not await harness.poller.poll_once()
    harness.clock.now += 1
    assert await harness.poller.poll_once()
    assert harness.fetcher.calls == ["cmp_a", "cmp_a"]


async def test_unexpected_exception_is_counted_and_survived() -> None:
    """A bug-shaped exception from the fetcher is counted as invalid_response; polling goes on."""
    harness = Harness(["cmp_a", "cmp_b"])
    harness.fetcher.answers = {
        "cmp_a": ZeroDivisionError("boom"),
        "cmp_b": dict(ACTIVE, id="cmp_b"),
    }
    await harness.poller.poll_once()
    assert dict(harness.view("cmp_a").errors) == {"invalid_response": 1}
    assert harness.view("cmp_b").up


async def test_unchanged_record_keeps_its_identity() -> None:
    """An identical body is not parsed again and replaces nothing, so the renderer can reuse
    its cached lines; a changed body replaces the record."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = ACTIVE
    await harness.poller.poll_once()
    first = harness.view("cmp_a").record
    harness.clock.now += 10
    await harness.poller.poll_once()
    assert harness.view("cmp_a").record is first
    harness.fetcher.answers["cmp_a"] = dict(ACTIVE, pending_calls=3)
    harness.clock.now += 10
    await harness.poller.poll_once()
    assert harness.view("cmp_a").record is not first
    assert harness.view("cmp_a").record.pending_calls == 3


async def test_set_campaigns_keeps_state_of_kept_ones() -> None:
    """Changing the list adds new campaigns as due, drops removed ones, keeps the others."""
    harness = Harness(["cmp_a", "cmp_b"])
    harness.fetcher.answers = {
        "cmp_a": ACTIVE,
        "cmp_b": dict(ACTIVE, id="cmp_b"),
        "cmp_c": dict(ACTIVE, id="cmp_c"),
    }
    await harness.poller.poll_once()
    kept = harness.view("cmp_a")
    harness.poller.set_campaigns(["cmp_a", "cmp_c"])
    assert harness.poller.campaign_ids == ("cmp_a", "cmp_c")
    await harness.poller.poll_once()
    assert harness.fetcher.calls[-1] == "cmp_c"
    snapshot = harness.poller.build_snapshot()
    assert [v.campaign_id for v in snapshot.campaigns] == ["cmp_a", "cmp_c"]
    assert snapshot.campaigns[0] is kept


async def test_views_say_when_and_why_a_campaign_is_failing() -> None:
    """A failure records the attempt, the start of the failing run and its reason; a later
    failure keeps the start; a success clears both."""
    harness = Harness(["cmp_a"])
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(503)
    await harness.poller.poll_once()
    first = harness.view("cmp_a")
    assert (first.last_error, first.failing_since, first.last_attempt) == (
        "server_error",
        harness.clock.time(),
        harness.clock.time(),
    )
    harness.clock.advance(harness.poller.next_fetch_in("cmp_a"))
    harness.fetcher.answers["cmp_a"] = HTTPStatusError(403)
    await harness.poller.poll_once()
    second = harness.view("cmp_a")
    assert second.last_error == "forbidden"
    assert second.failing_since == first.failing_since
    assert second.last_attempt == harness.clock.time() > first.last_attempt
    harness.clock.advance(harness.poller.next_fetch_in("cmp_a"))
    harness.fetcher.answers["cmp_a"] = ACTIVE
    await harness.poller.poll_once()
    healed = harness.view("cmp_a")
    assert (healed.up, healed.last_error, healed.failing_since) == (True, None, None)
    assert healed.last_attempt == healed.last_success == harness.clock.time()


async def test_the_fake_clock_drives_publication_during_a_long_round() -> None:
    """While a round waits for a hanging fetch, a result that comes in is published once
    PUBLISH_EVERY_SECONDS pass on the injected clock, not before."""
    harness = Harness(["cmp_a", "cmp_b"])
    slow, hang = asyncio.Event(), asyncio.Event()
    harness.fetcher.answers = {"cmp_a": slow, "cmp_b": hang}
    harness.fetcher.after = {"cmp_a": ACTIVE, "cmp_b": dict(ACTIVE, id="cmp_b")}
    await harness.running()
    await wait_for(lambda: bool(harness.published), what="the start-up publication")

    def shows_a() -> bool:
        return any(s.campaigns[0].up for s in harness.published)

    slow.set()
    await wait_for(lambda: harness.view("cmp_a").up, what="cmp_a fetched")
    harness.clock.advance(poller_module.PUBLISH_EVERY_SECONDS - 0.5)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not shows_a()  # the round is not over, and not enough time has passed
    harness.clock.advance(0.5)
    await wait_for(shows_a, within=2.0, what="publication on the fake clock (not 5 real s)")
    ups = {v.campaign_id: v.up for v in harness.published[-1].campaigns}
    assert ups == {"cmp_a": True, "cmp_b": False}
    assert not harness.published[-1].ready
    hang.set()
    await wait_for(lambda: harness.published[-1].ready, what="end of the round published")


async def test_readiness_is_given_up_waiting_for_after_one_request_timeout() -> None:
    """With every fetch hanging, the exporter turns ready one request timeout (plus its
    resolution) after polling began, and not before."""
    harness = Harness(["cmp_a"], request_timeout_seconds=10)
    harness.fetcher.answers["cmp_a"] = asyncio.Event()
    await harness.running()
    harness.clock.advance(10.9)
    await asyncio.sleep(0)
    assert not any(s.ready for s in harness.published)
    harness.clock.advance(0.1)  # 10 s + a tenth of it
    await wait_for(lambda: any(s.ready for s in harness.published), what="ready published")


async def test_a_reload_replaces_the_list_in_slices_and_reports_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """replace_campaigns yields to the loop between slices, counts what changed, and the
    removed campaigns' queue entries are gone at once."""
    monkeypatch.setattr(poller_module, "RELOAD_SLICE", 3)
    ids = [f"cmp_{n}" for n in range(10)]
    harness = Harness(ids)
    others_ran = 0

    async def other() -> None:
        nonlocal others_ran
        while True:
            others_ran += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    try:
        changes = await harness.poller.replace_campaigns([*ids[5:], "cmp_new1", "cmp_new2"])
    finally:
        task.cancel()
    assert changes == (2, 5)
    assert others_ran >= 3  # the event loop ran between slices
    assert harness.poller.campaign_ids == (*ids[5:], "cmp_new1", "cmp_new2")
    assert len(harness.poller._due) == 7


async def test_data_dropped_as_stale_is_not_up() -> None:
    """No fetch for STALE_AFTER (polling held, whatever the reason): the data goes and the
    view is no longer up, although the last fetch had succeeded."""
    harness = Harness(["cmp_a"], stale_after_seconds=100)
    harness.fetcher.answers["cmp_a"] = ACTIVE
    await harness.poller.poll_once()
    assert harness.view("cmp_a").up
    harness.clock.now += 99
    assert harness.view("cmp_a").up
    harness.clock.now += 1
    view = harness.view("cmp_a")
    assert view.record is None
    assert not view.up
    assert view.last_error is None  # not a failure: nothing was fetched


async def test_snapshots_say_when_the_oldest_due_campaign_was_due_and_the_oldest_data() -> None:
    """A snapshot carries the Unix time the most overdue campaign fell due (its fetch hanging
    keeps it there) and the time of the least recent data shown."""
    harness = Harness(["cmp_a", "cmp_b"])
    harness.fetcher.answers = {"cmp_a": ACTIVE, "cmp_b": dict(ACTIVE, id="cmp_b")}
    started = harness.clock.time()
    await harness.poller.poll_once()
    snapshot = harness.poller.build_snapshot()
    assert snapshot.oldest_data == started
    assert snapshot.oldest_due is not None
    assert started + 9 <= snapshot.oldest_due <= started + 10
    due = snapshot.oldest_due
    hang = asyncio.Event()
    harness.fetcher.answers["cmp_a"] = hang
    harness.fetcher.after["cmp_a"] = ACTIVE
    await harness.running()
    harness.clock.advance(10)
    await wait_for(lambda: "cmp_a" in harness.fetcher.calls[2:], what="the hanging fetch")
    harness.clock.advance(50)
    snapshot = harness.poller.build_snapshot()
    assert snapshot.oldest_due is not None
    assert snapshot.oldest_due <= due + 1  # still due: its fetch never finished
    assert snapshot.oldest_data == started  # cmp_a's data, 60 s old
    hang.set()


async def test_the_planned_rate_follows_each_campaigns_interval() -> None:
    """Before the first round every campaign counts at the poll interval; after it, a terminal
    campaign counts at the terminal interval (summed when read, not at every round's end)."""
    harness = Harness(["cmp_a", "cmp_done"])
    harness.fetcher.answers = {
        "cmp_a": ACTIVE,
        "cmp_done": dict(ACTIVE, id="cmp_done", status="completed"),
    }
    assert harness.poller.planned_rate == pytest.approx(2 / 10)
    await harness.running()
    await wait_for(lambda: bool(harness.published), what="the first round published")
    assert harness.poller.planned_rate == pytest.approx(1 / 10 + 1 / 600)
