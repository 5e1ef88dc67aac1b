"""Poller scheduling with an injected clock and a hand-written fetcher: no network, no sleeps."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.client import (
    ConnectionFailedError,
    FetchError,
    HTTPStatusError,
    InvalidResponseError,
    RequestTimeoutError,
)
from exporter.config import Settings, load_settings
from exporter.models import Campaign, parse_campaign
from exporter.poller import Poller, RequestStats, TokenBucket, backoff_delay, error_reason
from exporter.state import Snapshot


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        """Wall time: a fixed epoch plus the monotonic offset."""
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        """Monotonic time."""
        return self.now


class ScriptedFetcher:
    """Answers each campaign from a table: a record document or an exception to raise."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls: list[str] = []

    async def fetch_changed(
        self, campaign_id: str, digest: bytes | None
    ) -> tuple[Campaign | None, bytes]:
        """Return or raise what the table says; no record when the document is unchanged."""
        self.calls.append(campaign_id)
        answer = self.answers[campaign_id]
        if isinstance(answer, BaseException):
            raise answer
        body_digest = json.dumps(answer, sort_keys=True).encode()
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


@pytest.fixture(autouse=True)
async def _stop_pollers() -> AsyncIterator[None]:
    """Stop the fetch workers of every harness a test made."""
    yield
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
            stats=RequestStats(),
            clock=self.clock,
            rng=random.Random(7),
        )

    async def sink(self, snapshot: Snapshot) -> None:
        """Keep the snapshot."""
        self.published.append(snapshot)

    def view(self, campaign_id: str) -> Any:
        """The campaign's view in a fresh snapshot."""
        snapshot = self.poller.build_snapshot()
        return next(v for v in snapshot.campaigns if v.campaign_id == campaign_id)


ACTIVE = {"id": "cmp_a", "status": "active", "total_leads": 10, "pending_calls": 4}


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RequestTimeoutError("t"), "timeout"),
        (ConnectionFailedError("c"), "connection"),
        (HTTPStatusError(401), "unauthorized"),
        (HTTPStatusError(403), "forbidden"),
        (HTTPStatusError(404), "not_found"),
        (HTTPStatusError(429), "rate_limited"),
        (HTTPStatusError(500), "server_error"),
        (HTTPStatusError(503), "server_error"),
        (HTTPStatusError(400), "client_error"),
        (HTTPStatusError(410), "client_error"),
        (HTTPStatusError(304), "invalid_response"),
        (InvalidResponseError("x"), "invalid_response"),
        (FetchError("other"), "invalid_response"),
    ],
)
def test_error_reasons_are_the_fixed_set(error: FetchError, reason: str) -> None:
    """Each typed error maps to its documented reason label."""
    assert error_reason(error) == reason


def test_backoff_grows_exponentially_and_is_capped() -> None:
    """Delays double per failure (plus up to 25% jitter), never below the interval, capped."""
    rng = random.Random(1)
    delays = [backoff_delay(n, 10.0, rng) for n in range(1, 10)]
    for failures, delay in enumerate(delays, start=1):
        base = min(100.0, 10.0 * 2 ** (failures - 1))
        assert base <= delay <= min(100.0, base * 1.25)
    assert delays[-1] == 100.0
    assert backoff_delay(50, 30.0, rng) <= 300.0


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


async def test_token_bucket_spaces_requests() -> None:
    """With no burst left, the bucket makes a caller wait 1/rate seconds (real clock, tiny)."""
    clock = FakeClock()
    bucket = TokenBucket(rate=1000.0, clock=clock, burst=1.0)
    await bucket.acquire()
    # The fake clock never moves, so a second token can only come from time passing;
    # the bucket must therefore keep waiting: prove it by racing it against a short deadline.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bucket.acquire(), timeout=0.05)
