"""Fault matrix: every hostile upstream behaviour against one running exporter, row by row.

All rows run at once in one scenario (one exporter per API-wide fault, one shared exporter for
the per-campaign faults): a healthy phase, then every fault switched on while a sampler records
each failure and the next fetch time the poller chose, then the clock is jumped past
STALE_AFTER. The tests below assert on that evidence, one test per row.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter import loops
from exporter.api.fields import FieldKind
from exporter.api.models import RECORD_FIELDS
from exporter.config import load_settings
from exporter.demo.simulator import Fault, FaultKind, SimCampaign, Simulator, retry_after_date
from exporter.polling.poller import Poller
from exporter.web.server import POLLER, create_app
from tests.fault_tables import (
    CONTROL,
    MATRIX,
    NUMERIC_FIELDS,
    Event,
    Evidence,
    Row,
    Schedule,
    Scope,
    Series,
)
from tests.helpers import API_KEY, OffsetClock, Samples, parse_samples, serve, wait_for

POLL = 0.1  # poll interval of every exporter in the scenario
STALE_AFTER = 600.0  # reached by jumping the injected clock, never by waiting
COALESCE = 0.1 * POLL  # a round may take a campaign this much before it is due
EPS = 1e-3  # float slack when comparing monotonic readings
MAX_SCRAPE_SECONDS = 1.0  # /metrics must answer within this while the API misbehaves
CREATED_AT = "2024-05-01T09:00:00.000Z"

TIMESTAMP_FIELDS: dict[str, str] = {
    field.json or field.attr: str(field.metric)
    for field in RECORD_FIELDS
    if field.kind is FieldKind.TIMESTAMP
}
SCALES = {field.json or field.attr: field.scale for field in RECORD_FIELDS}
STATES = ("draft", "active", "running", "paused", "completed", "cancelled", "unknown")
INFO_LABELS = tuple(field.attr for field in RECORD_FIELDS if field.kind is FieldKind.TEXT)

# Rows whose observed behaviour contradicts docs/failures.md: kept failing on purpose.
KNOWN_BUGS: dict[str, str] = {}


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path of a JSON document, or None."""
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


# The campaign id each row runs under (the control row's is CONTROL).
CIDS = {
    row.id: (CONTROL if row.id == "healthy-control" else f"cmp_{n:02d}")
    for n, row in enumerate(MATRIX)
}


# --- the scenario -----------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sampler:
    """Watches pollers without awaiting between reading a change and its next fetch time."""

    def __init__(self, clock: OffsetClock, pollers: dict[str, Poller]) -> None:
        self._clock = clock
        self._pollers = pollers
        self.events: dict[str, list[Event]] = {cid: [] for cid in pollers}
        self._last: dict[str, tuple[int, float | None]] = {}
        self._stamp = clock.monotonic()

    def sample(self) -> None:
        """Record every change since the previous sample (synchronous: the loop cannot move)."""
        now = self._clock.monotonic()
        views = {}
        for poller in set(self._pollers.values()):
            for view in poller.build_snapshot().campaigns:
                views[view.campaign_id] = view
        for cid, poller in self._pollers.items():
            view = views[cid]
            failures = sum(count for _, count in view.errors)
            previous = self._last.get(cid)
            self._last[cid] = (failures, view.last_success)
            if previous is None:
                continue
            changed_failure = failures > previous[0]
            changed_success = view.last_success != previous[1]
            if changed_failure or changed_success:
                before = self._clock.monotonic()
                next_in = poller.next_fetch_in(cid)
                after = self._clock.monotonic()
                self.events[cid].append(
                    Event(
                        failure=changed_failure,
                        failures=failures,
                        after=self._stamp,
                        seen=now,
                        next_due_low=before + next_in,
                        next_due_high=after + next_in,
                        kept=view.record is not None,
                    )
                )
        self._stamp = now

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every couple of milliseconds until ``stop`` is set."""
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.002)


def goal_reached(row: Row, events: list[Event]) -> bool:
    """Enough has been seen of a row to judge its schedule."""
    failures = sum(e.failure for e in events)
    successes = len(events) - failures
    # Either way round, so that a row behaving wrongly is judged instead of timing out.
    needed = 1 if row.outcome.schedule is Schedule.RETRY_AFTER else 3
    return failures >= needed or successes >= 3


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[TestServer]:
    """Serve ``app`` on a loopback port for the duration of the block."""
    server = await serve(app)
    try:
        yield server
    finally:
        await server.close()


async def run_scenario() -> Evidence:
    """Run every row at once and collect the evidence."""
    evidence = Evidence()
    clock = OffsetClock()
    hits = evidence.other_host_hits

    async def other_handler(request: web.Request) -> web.Response:
        hits.append((request.path, request.headers.get("Authorization")))
        return web.json_response({"id": "whatever"})

    other_app = web.Application()
    other_app.router.add_get("/{tail:.*}", other_handler)

    def sim_campaign(cid: str) -> SimCampaign:
        return SimCampaign(cid, f"Campaign {cid}", 1000, 5, created_at=CREATED_AT)

    by_scope: dict[Scope, list[Row]] = {}
    for row in MATRIX:
        by_scope.setdefault(row.scope, []).append(row)
        evidence.scope_of[CIDS[row.id]] = row.scope.value
    main_ids = [CIDS[r.id] for r in by_scope[Scope.CAMPAIGN]]
    sim = Simulator([sim_campaign(c) for c in main_ids], api_key=API_KEY, speed=0.0)
    down_ids = [CIDS[r.id] for r in by_scope.get(Scope.API_STOPS, [])]
    down_sim = Simulator([sim_campaign(c) for c in down_ids], api_key=API_KEY, speed=0.0)

    async with (
        serving(other_app) as other,
        serving(sim.app()) as sim_server,
        aiohttp.ClientSession() as scraper,
    ):
        down_server = await serve(down_sim.app())
        urls = {
            Scope.CAMPAIGN: str(sim_server.make_url("/v1")),
            Scope.API_STOPS: str(down_server.make_url("/v1")),
            Scope.CLOSED_PORT: f"http://127.0.0.1:{closed_port()}/v1",
            Scope.DNS: "http://dialnexa-api.invalid/v1",
        }
        servers: dict[Scope, TestServer] = {}
        try:
            for scope, rows in by_scope.items():
                settings = load_settings(
                    {
                        "api_url": urls[scope],
                        "api_key": SecretStr(API_KEY),
                        "campaign_ids": [CIDS[r.id] for r in rows],
                        "poll_interval_seconds": POLL,
                        "request_timeout_seconds": 1.0,
                        "stale_after_seconds": STALE_AFTER,
                        "max_concurrency": 10,
                        "listen_address": "127.0.0.1:0",
                    }
                )
                servers[scope] = await serve(create_app(settings, clock=clock))
            await drive(
                evidence, clock, sim, down_server, servers, scraper, other, sim_server, by_scope
            )
        finally:
            for server in servers.values():
                await server.close()
            await down_server.close()
    evidence.sim_requests = dict(sim.stats.by_campaign)
    evidence.huge_bytes_sent = sim.stats.huge_bytes_sent
    evidence.sim_in_flight_at_end = sim.stats.in_flight
    return evidence


async def scrape(session: aiohttp.ClientSession, server: TestServer, evidence: Evidence) -> Samples:
    """One timed, uncompressed /metrics scrape, parsed."""
    started = time.monotonic()
    async with session.get(
        server.make_url("/metrics"), headers={"Accept-Encoding": "identity"}
    ) as response:
        assert response.status == 200
        text = await response.text()
    evidence.scrape_seconds.append(time.monotonic() - started)
    return parse_samples(text)


async def wait_scrapes(
    session: aiohttp.ClientSession,
    servers: dict[Scope, TestServer],
    evidence: Evidence,
    predicate: Callable[[Scope, Samples], bool],
    what: str,
    within: float = 10.0,
) -> dict[Scope, Samples]:
    """Scrape every exporter until ``predicate`` holds for each; note a timeout, never hang."""
    latest: dict[Scope, Samples] = {}
    pending = set(servers)

    async def settled() -> bool:
        for scope in list(pending):
            latest[scope] = await scrape(session, servers[scope], evidence)
            if predicate(scope, latest[scope]):
                pending.discard(scope)
        return not pending

    try:
        await wait_for(settled, within, what)
    except AssertionError:
        evidence.timed_out.append(f"{what}: {sorted(s.value for s in pending)}")
    return latest


def campaign_up(samples: Samples, cid: str) -> float | None:
    """campaign_up of one campaign."""
    return samples.get(("dialnexa_exporter_campaign_up", frozenset({("campaign_id", cid)})))


async def drive(
    evidence: Evidence,
    clock: OffsetClock,
    sim: Simulator,
    down_server: TestServer,
    servers: dict[Scope, TestServer],
    scraper: aiohttp.ClientSession,
    other: TestServer,
    sim_server: TestServer,
    by_scope: dict[Scope, list[Row]],
) -> None:
    """The scenario's phases: healthy, faults on and sampled, then past STALE_AFTER."""
    healthy_scopes = {Scope.CAMPAIGN, Scope.API_STOPS}

    def settled(scope: Scope, samples: Samples) -> bool:
        want = 1.0 if scope in healthy_scopes else 0.0
        return all(campaign_up(samples, CIDS[r.id]) == want for r in by_scope[scope])

    healthy = await wait_scrapes(scraper, servers, evidence, settled, "healthy phase")
    pollers = {
        CIDS[r.id]: servers[scope].app[POLLER] for scope, rows in by_scope.items() for r in rows
    }
    sampler = Sampler(clock, pollers)
    sampler.sample()
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))

    sim_port = sim_server.port
    locations = {
        "{other}": str(other.make_url("/v1/campaigns/elsewhere")),
        "{localhost}": f"http://localhost:{sim_port}/v1/campaigns/{{cid}}_elsewhere",
        "{https}": f"https://127.0.0.1:{sim_port}/v1/campaigns/{{cid}}_elsewhere",
    }
    evidence.installed_at = clock.monotonic()
    for row in by_scope[Scope.CAMPAIGN]:
        cid = CIDS[row.id]
        fault = row.fault
        if fault is not None and fault.kind is FaultKind.REDIRECT:
            location = locations[fault.location].replace("{cid}", cid)
            fault = Fault(FaultKind.REDIRECT, status=fault.status, location=location)
        if fault is not None and fault.kind is FaultKind.HUGE:
            evidence.huge_campaigns.append(cid)
        if row.retry_after_date is not None:
            header = retry_after_date(row.retry_after_date, now=clock.time())
            fault = Fault(FaultKind.RATE_LIMIT, retry_after=header)
        if fault is not None:
            sim.set_fault(fault, cid)
        if row.mutate is not None:
            document = row.mutate(sim.current_record(cid))
            evidence.documents[cid] = document
            sim.set_raw(cid, document)
        if row.delete:
            sim.remove(cid)
    await down_server.close()

    def unmet() -> list[str]:
        return [r.id for r in MATRIX if not goal_reached(r, sampler.events[CIDS[r.id]])]

    try:
        await wait_for(lambda: not unmet(), 10.0, "the sampling goals")
    except AssertionError:
        evidence.timed_out.append(f"sampling goals of {unmet()}")
    failing = {scope: await scrape(scraper, server, evidence) for scope, server in servers.items()}
    stop.set()
    await sampling
    evidence.events = sampler.events

    async def past(jump: float, what: str) -> dict[Scope, Samples]:
        clock.offset += jump
        moment = clock.time()
        for server in servers.values():
            poller = server.app[POLLER]
            poller.set_campaigns(poller.campaign_ids)  # wake it: everything is due after a jump
        return await wait_scrapes(
            scraper,
            servers,
            evidence,
            lambda _, s: (
                (s.get(("dialnexa_exporter_last_poll_timestamp_seconds", frozenset())) or 0)
                > moment
            ),
            what,
        )

    before_stale = await past(STALE_AFTER - 30.0, "a round just before STALE_AFTER")
    after_stale = await past(60.0, "a round after STALE_AFTER")
    for scope, server in servers.items():
        phases = {
            "healthy": healthy,
            "failing": failing,
            "before_stale": before_stale,
            "after_stale": after_stale,
        }
        evidence.scrapes[scope.value] = {name: samples[scope] for name, samples in phases.items()}
        async with scraper.get(server.make_url("/healthz")) as response:
            evidence.healthz[scope.value] = response.status


@pytest.fixture(scope="module")
def evidence() -> Iterator[Evidence]:
    """Run the scenario once for the whole module, on the default event loop."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("DIALNEXA_")]:
            patch.delenv(name)
        yield loops.run(run_scenario(), "auto")


# --- expectations -----------------------------------------------------------------------


def campaign_data(
    samples: Samples, cid: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every dialnexa_campaign_* sample of one campaign."""
    return {
        key: val
        for key, val in samples.items()
        if key[0].startswith("dialnexa_campaign_") and ("campaign_id", cid) in key[1]
    }


def reasons_counted(samples: Samples, cid: str) -> frozenset[str]:
    """Reasons with a non-zero error count for one campaign."""
    return frozenset(
        dict(labels)["reason"]
        for (name, labels), val in samples.items()
        if name == "dialnexa_exporter_campaign_errors_total"
        and ("campaign_id", cid) in labels
        and val > 0
    )


def iso_seconds(text: str) -> float:
    """Unix time of an ISO 8601 string."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def assert_shows_document(samples: Samples, cid: str, document: dict[str, Any]) -> None:
    """The campaign's data series are exactly what ``document`` says (absent where null)."""
    data = campaign_data(samples, cid)
    only_id = frozenset({("campaign_id", cid)})
    expected: dict[str, float] = {}
    for path, metric in {**NUMERIC_FIELDS, **TIMESTAMP_FIELDS}.items():
        raw = lookup(document, path)
        if raw is None:
            continue
        if path in TIMESTAMP_FIELDS:
            expected[metric] = iso_seconds(raw)
        else:
            expected[metric] = raw * SCALES[path]
    shown = {name: val for (name, labels), val in data.items() if labels == only_id}
    assert shown == expected
    status = document.get("status")
    statuses = {
        dict(labels)["status"]: val
        for (name, labels), val in data.items()
        if name == "dialnexa_campaign_status"
    }
    if status is None:
        assert statuses == {}
    else:
        state = status.strip().lower()
        state = state if state in STATES else "unknown"
        assert statuses == {s: float(s == state) for s in STATES}
    info = [dict(labels) for (name, labels) in data if name == "dialnexa_campaign_info"]
    assert info == [{"campaign_id": cid, **{k: document.get(k) or "" for k in INFO_LABELS}}]


def backoff_bounds(failures: int) -> tuple[float, float]:
    """docs/failures.md: the interval doubled per consecutive failure, +0-25% jitter, 10x cap."""
    cap = max(POLL, min(10 * POLL, 600.0))
    base = min(cap, POLL * 2.0 ** (failures - 1))
    return base, min(cap, base * 1.25)


def assert_due_between(event: Event, earliest: float, latest: float) -> None:
    """The next fetch time the poller chose lies within [earliest, latest]."""
    assert event.next_due_high >= earliest - EPS, (event, earliest, latest)
    assert event.next_due_low <= latest + EPS, (event, earliest, latest)


def assert_schedule(row: Row, events: list[Event], installed_at: float) -> None:
    """Every next fetch time the poller chose matches the row's schedule, and was honoured.

    A change is processed between two samples (``after`` < t < ``seen``), so a delay d chosen
    then gives a next fetch time within [after + d, seen + d].
    """
    schedule = row.outcome.schedule
    relevant = [e for e in events if e.failure == (row.outcome.up == 0)]
    assert relevant, "no fetch outcome of this campaign was seen"
    for event in relevant:
        if schedule is Schedule.BACKOFF:
            low, high = backoff_bounds(event.failures)
            assert_due_between(event, event.after + low, event.seen + high)
        elif schedule is Schedule.RETRY_AFTER and row.retry_after_seconds is not None:
            wait = row.retry_after_seconds
            assert_due_between(event, event.after + wait, event.seen + wait)
        elif schedule is Schedule.RETRY_AFTER:
            assert row.retry_after_date is not None
            # An HTTP date has whole seconds: it names a moment up to 1 s before the target.
            wait = row.retry_after_date
            assert_due_between(event, installed_at + wait - 1, event.seen + wait)
        else:
            # After a success: one poll interval minus up to 10% jitter, from the fetch's start.
            assert_due_between(event, -math.inf, event.seen + POLL)
    if schedule is Schedule.RETRY_AFTER:
        assert len(relevant) == 1, "fetched again before Retry-After was over"
    for earlier, later in itertools.pairwise(relevant):
        # Never fetched before its time (a round may take it COALESCE early).
        assert later.seen >= earlier.next_due_low - COALESCE - EPS, (earlier, later)
    if schedule is Schedule.BACKOFF:
        assert max(e.failures for e in relevant) >= 3, "backoff never reached a third failure"


def params() -> list[Any]:
    """The matrix as pytest params, known bugs marked strict xfail."""
    out = []
    for row in MATRIX:
        marks = (
            [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[row.id])]
            if row.id in KNOWN_BUGS
            else []
        )
        out.append(pytest.param(row, id=row.id, marks=marks))
    return out


@pytest.mark.parametrize("row", params())
def test_fault_row(evidence: Evidence, row: Row) -> None:
    """One row: campaign_up, reason, data kept/dropped/updated, next fetch time, still serving."""
    cid = CIDS[row.id]
    outcome = row.outcome
    scope = evidence.scope_of[cid]
    assert not evidence.timed_out, evidence.timed_out
    healthy = evidence.scrape(cid, "healthy")
    failing = evidence.scrape(cid, "failing")
    before_stale = evidence.scrape(cid, "before_stale")
    after_stale = evidence.scrape(cid, "after_stale")

    assert campaign_up(failing, cid) == outcome.up
    assert reasons_counted(failing, cid) == outcome.reasons
    assert reasons_counted(after_stale, cid) == outcome.reasons
    events = evidence.events[cid]
    if outcome.series is Series.KEPT:
        assert campaign_data(failing, cid) == campaign_data(healthy, cid)
        assert campaign_data(before_stale, cid) == campaign_data(healthy, cid)
        assert campaign_data(after_stale, cid) == {}
        assert all(e.kept == bool(campaign_data(healthy, cid)) for e in events)
    elif outcome.series is Series.DROPPED:
        assert campaign_data(healthy, cid) != {}
        assert campaign_data(failing, cid) == {}
        # Every failure drops the data at once; a success seen just after the switch is a
        # request the API answered before the campaign went away, so it may still carry data.
        assert not any(e.kept for e in events if e.failure)
    else:
        document = evidence.documents.get(cid)
        if document is None:  # no mutation: the healthy record, unchanged (speed 0)
            assert campaign_data(failing, cid) == campaign_data(healthy, cid)
            assert "dialnexa_campaign_total_leads" in {
                name for name, _ in campaign_data(failing, cid)
            }
        else:
            assert_shows_document(failing, cid, document)
        assert campaign_data(after_stale, cid) == campaign_data(failing, cid)
    assert campaign_up(after_stale, cid) == outcome.up
    assert_schedule(row, events, evidence.installed_at)
    if row.check is not None:
        row.check(evidence, cid)
    # The process survived it and kept answering fast.
    assert evidence.healthz[scope] == 200
    assert max(evidence.scrape_seconds) < MAX_SCRAPE_SECONDS


def test_every_numeric_field_has_every_wrong_type() -> None:
    """Each numeric field gets "lots", a list, null, a negative number and a numeric string."""
    ids = {row.id for row in MATRIX}
    for path in NUMERIC_FIELDS:
        for label in ("lots", "list", "null", "negative", "numeric-string"):
            assert f"{path}={label}" in ids
    assert len(ids) == len(MATRIX)
    assert len(set(CIDS.values())) == len(MATRIX)


def test_backoff_bounds_match_the_readme_formula() -> None:
    """The expected-backoff helper follows docs/failures.md: doubling, +25% jitter, 10x cap."""
    assert backoff_bounds(1) == (POLL, POLL * 1.25)
    assert backoff_bounds(2) == (2 * POLL, 2.5 * POLL)
    assert backoff_bounds(20) == (10 * POLL, 10 * POLL)
    assert math.isclose(backoff_bounds(4)[1], 10 * POLL)


async def test_lone_surrogate_in_a_text_field_neither_stops_polling_nor_freezes_metrics() -> None:
    """A name holding the JSON escape "\\ud800" is refused or rendered; polling goes on."""
    sim = Simulator(
        [SimCampaign("cmp_bad", "Bad", 1000, 5), SimCampaign("cmp_ok", "Ok", 1000, 5)],
        api_key=API_KEY,
        speed=0.0,
    )
    async with serving(sim.app()) as upstream, aiohttp.ClientSession() as scraper:
        settings = load_settings(
            {
                "api_url": str(upstream.make_url("/v1")),
                "api_key": SecretStr(API_KEY),
                "campaign_ids": ["cmp_bad", "cmp_ok"],
                "poll_interval_seconds": 0.05,
                "listen_address": "127.0.0.1:0",
            }
        )
        exporter = await serve(create_app(settings))
        evidence = Evidence()
        try:
            healthy = await wait_scrapes(
                scraper,
                {Scope.CAMPAIGN: exporter},
                evidence,
                lambda _, s: campaign_up(s, "cmp_ok") == 1.0,
                "healthy",
            )
            assert campaign_up(healthy[Scope.CAMPAIGN], "cmp_bad") == 1.0
            # json.dumps writes the lone surrogate as the escape \ud800: valid JSON syntax.
            sim.set_raw("cmp_bad", {**sim.current_record("cmp_bad"), "name": "bad \ud800 name"})
            fetched = sim.stats.by_campaign["cmp_ok"]
            moved = await wait_scrapes(
                scraper,
                {Scope.CAMPAIGN: exporter},
                evidence,
                lambda _, s: (
                    sim.stats.by_campaign["cmp_ok"] >= fetched + 5
                    and campaign_up(s, "cmp_bad") is not None
                    and (
                        reasons_counted(s, "cmp_bad") == {"invalid_response"}
                        or any(
                            dict(labels).get("name", "").startswith("bad ")
                            for (name, labels) in s
                            if name == "dialnexa_campaign_info"
                        )
                    )
                ),
                "polling to go on and the bad record to be refused or shown",
                within=5.0,
            )
            assert not evidence.timed_out, evidence.timed_out
            assert campaign_up(moved[Scope.CAMPAIGN], "cmp_ok") == 1.0
        finally:
            await exporter.close()
