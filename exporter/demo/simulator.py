"""A fake DialNexa API (aiohttp app): moving campaigns, the real auth and error shapes, faults."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from exporter.api.models import RECORD_FIELDS, record_document

log = logging.getLogger("exporter.simulator")

# What the simulator sends for a declared field its script does not set.
EXAMPLES: dict[str, Any] = {field.attr: field.example for field in RECORD_FIELDS}
# The fields the API page's first example ("running") lacks.
LEGACY_ABSENT = ("total_leads", "completed_calls", "pending_calls")

# Average simulated seconds one line needs per call: a campaign makes
# max_concurrent_calls / CALL_SECONDS calls per simulated second.
CALL_SECONDS = 60.0


class FaultKind(enum.StrEnum):
    """What a faulty answer looks like."""

    STATUS = "status"  # an error status with the API's JSON error body
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After (seconds or HTTP date)
    SLOW = "slow"  # wait `delay` seconds before answering
    DRIP = "drip"  # headers at once, then the body one byte every `delay` seconds
    BAD_JSON = "bad_json"
    EMPTY = "empty"
    HTML = "html"
    ARRAY = "array"
    WRONG_ID = "wrong_id"  # the record of another campaign
    REDIRECT = "redirect"  # 302/307 to `location`
    HUGE = "huge"  # `size` bytes; with Content-Length unless `chunked`
    BODY = "body"  # exactly `body` with status 200
    DISCONNECT = "disconnect"  # close the connection without an answer


@dataclass(frozen=True)
class Fault:
    """One fault mode; the fields that matter depend on ``kind``."""

    kind: FaultKind
    status: int = 500
    delay: float = 0.0
    retry_after: str | None = None
    location: str = ""
    size: int = 50 * 1024 * 1024
    chunked: bool = False
    body: bytes = b""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build a fault from the admin endpoint's JSON."""
        values = dict(data)
        values.pop("campaign_id", None)
        kind = FaultKind(values.pop("kind"))
        if "body" in values:
            values["body"] = str(values["body"]).encode("utf-8")
        return cls(kind=kind, **values)


@dataclass
class SimCampaign:
    """A campaign whose counters move with simulated time, following a small script."""

    id: str
    name: str
    total_leads: int
    max_concurrent_calls: int
    status: str = "active"
    organization_id: str = "org_sim"
    agent_id: str = "agt_sim"
    from_phone_number: str = "+912234567890"
    created_at: str = "2024-05-01T09:00:00.000Z"
    scheduled_at: float | None = None  # simulated second at which a draft starts
    pause_at: float | None = None  # fraction of leads done at which it pauses
    resume_after: float = 1800.0  # simulated seconds it stays paused
    stall_at: float | None = None  # fraction of leads done at which it stops progressing
    legacy_shape: bool = False  # the API page's first example: "running", no counters
    text_tail: str = ""  # appended to every text field when sent (long records, shared)
    retry_config: dict[str, int] | None = field(
        default_factory=lambda: {"max_retries": 3, "retry_interval_minutes": 120}
    )
    completed: float = 0.0
    clock: float = 0.0
    stalled: bool = False
    resume_at: float | None = None

    @property
    def rate(self) -> float:
        """Calls completed per simulated second while dialling."""
        return self.max_concurrent_calls / CALL_SECONDS

    def advance(self, now: float) -> None:
        """Move the campaign forward to simulated time ``now``."""
        while self.clock < now:
            if self.status == "draft":
                if self.scheduled_at is not None and now >= self.scheduled_at:
                    self.clock = max(self.clock, self.scheduled_at)
                    self.status = "running" if self.legacy_shape else "active"
                    continue
                break
            if self.status == "paused":
                if self.resume_at is not None and now >= self.resume_at:
                    self.clock = max(self.clock, self.resume_at)
                    self.status = "running" if self.legacy_shape else "active"
                    self.resume_at = None
                    continue
                break
            if self.status not in ("active", "running") or self.stalled or self.rate <= 0:
                break
            target = float(self.total_leads)
            event = "complete"
            if self.pause_at is not None and self.completed < self.pause_at * self.total_leads:
                target, event = self.pause_at * self.total_leads, "pause"
            if self.stall_at is not None and self.stall_at * self.total_leads < target:
                target, event = self.stall_at * self.total_leads, "stall"
            reach = self.clock + (target - self.completed) / self.rate
            if reach > now:
                self.completed += (now - self.clock) * self.rate
                break
            self.completed = target
            self.clock = reach
            if event == "pause":
                self.status = "paused"
                self.pause_at = None
                self.resume_at = reach + self.resume_after
            elif event == "stall":
                self.stalled = True
            else:
                self.status = "completed"
        self.clock = max(self.clock, now)

    def record(self, wall_of: Callable[[float], float]) -> dict[str, Any]:
        """The JSON record the API returns right now: what the script sets, and each other
        declared field's example value."""
        done = min(self.total_leads, int(self.completed))
        values: dict[str, Any] = dict(EXAMPLES)
        tail = self.text_tail
        values.update(
            name=self.name + tail,
            organization_id=self.organization_id + tail,
            agent_id=self.agent_id + tail,
            from_phone_number=self.from_phone_number + tail,
            status=self.status,
            max_concurrent_calls=self.max_concurrent_calls,
            scheduled_at=None,
            created_at=self.created_at,
            total_leads=self.total_leads,
            completed_calls=done,
            pending_calls=self.total_leads - done,
        )
        if self.retry_config is not None:
            values.update(self.retry_config)
        if self.scheduled_at is not None:
            when = datetime.fromtimestamp(wall_of(self.scheduled_at), UTC)
            values["scheduled_at"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.legacy_shape:
            for name in LEGACY_ABSENT:
                del values[name]
        document = {"id": self.id, **record_document(values)}
        if self.retry_config is None:
            document["retry_config"] = None
        return document


def demo_campaigns() -> list[SimCampaign]:
    """The demo's handful: progressing, pausing, stalling, completing, scheduled, legacy shape."""
    ist = timezone(timedelta(hours=5, minutes=30))
    return [
        SimCampaign(
            "cmp_demo_progress", "Q2 Lead Re-engagement", 3000, 10, agent_id="agt_k7m2nq9xw4p8"
        ),
        SimCampaign(
            "cmp_demo_pause",
            "Renewal Reminders",
            1200,
            5,
            pause_at=0.25,
            resume_after=5400.0,  # longer than DialNexaCampaignPaused's hour, so it fires
            created_at=datetime(2024, 6, 3, 14, 30, tzinfo=ist).isoformat(),
        ),
        SimCampaign("cmp_demo_stall", "Payment Follow-up", 800, 4, stall_at=0.4),
        SimCampaign("cmp_demo_complete", "Webinar Invites", 200, 5),
        SimCampaign(
            "cmp_demo_scheduled",
            "Festive Offers",
            600,
            3,
            status="draft",
            scheduled_at=1200.0,
        ),
        SimCampaign(
            "cmp_demo_legacy",
            'Survey "Müller" \\ São Paulo',
            900,
            5,
            status="running",
            legacy_shape=True,
            organization_id="org_xyz",
        ),
    ]


# Characters of long texts: mostly astral (4 bytes in UTF-8 and in the exporter's memory, 12 in
# escaped JSON), some from the BMP, and what the text format must escape or a terminal obeys:
# 85, 10 and 5 in 100 of the alphabet.
_LONG_TEXT_ALPHABET = (
    [chr(code) for code in range(0x1F300, 0x1FAFF, 2)]
    + [chr(code) for code in range(0x20000, 0x20000 + 1024 * 4, 4)]
    + [chr(code) for code in range(0x0400, 0x04FF)]
    + list('"\\\n\r\t\x1b\x00') * 15
)
# Characters at the start of each long text that differ between campaigns (more than the
# exporter's cap keeps); the rest of the text is one tail all campaigns share.
LONG_TEXT_DISTINCT = 300


def long_text(rng: random.Random, length: int) -> str:
    """``length`` random characters of the long-text alphabet."""
    return "".join(rng.choices(_LONG_TEXT_ALPHABET, k=length))


def load_campaigns(count: int, seed: int = 1, text_length: int = 0) -> list[SimCampaign]:
    """``count`` campaigns in a realistic mix of states, the same for the same seed.

    With ``text_length``, every text field (name, agent, phone, organization) is that many
    random characters, distinct per campaign for its first LONG_TEXT_DISTINCT: records far
    longer than the exporter keeps, for measuring it at its caps.
    """
    rng = random.Random(seed)
    mix = (
        ("active", 0.6),
        ("running", 0.1),
        ("paused", 0.1),
        ("completed", 0.12),
        ("cancelled", 0.03),
        ("draft", 0.05),
    )
    states = [name for name, _ in mix]
    weights = [weight for _, weight in mix]
    campaigns = []
    for number in range(count):
        status = rng.choices(states, weights)[0]
        total = rng.randrange(100, 20000)
        campaign = SimCampaign(
            id=f"cmp_load_{number:06d}",
            name=f"Load campaign {number}",
            total_leads=total,
            max_concurrent_calls=rng.randrange(1, 50),
            status=status,
            agent_id=f"agt_{rng.randrange(16**8):08x}",
            from_phone_number=f"+91{rng.randrange(10**9, 10**10)}",
            completed=total if status == "completed" else rng.uniform(0, total),
        )
        campaigns.append(campaign)
    if text_length > 0:
        _lengthen_texts(campaigns, seed, text_length)
    return campaigns


def _lengthen_texts(campaigns: list[SimCampaign], seed: int, length: int) -> None:
    text_rng = random.Random(f"long text {seed}")
    distinct = min(length, LONG_TEXT_DISTINCT)
    tail = long_text(text_rng, length - distinct)
    for campaign in campaigns:
        campaign.name = long_text(text_rng, distinct)
        campaign.agent_id = long_text(text_rng, distinct)
        campaign.from_phone_number = long_text(text_rng, distinct)
        campaign.organization_id = long_text(text_rng, distinct)
        campaign.text_tail = tail


@dataclass
class RateLimitPolicy:
    """A request budget per window, announced in rate-limit headers on every API answer.

    ``style``: ``x`` sends X-RateLimit-Limit/-Remaining/-Reset, ``ietf`` the draft's
    RateLimit-Limit/-Remaining/-Reset, ``structured`` the draft's RateLimit field (with
    RateLimit-Policy). ``reset``: ``delta`` (seconds from now) or ``epoch`` (Unix time).
    Once the window's budget is spent, requests get 429 with Retry-After until it resets.
    """

    limit: int
    window: float  # seconds of the simulator's clock
    style: str = "x"
    reset: str = "delta"
    used: int = 0
    window_start: float = 0.0
    lowest_remaining: int | None = None  # the least budget ever left (tests read it)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RateLimitPolicy:
        """Build a policy from the admin endpoint's JSON."""
        policy = cls(
            limit=int(data["limit"]),
            window=float(data["window"]),
            style=str(data.get("style", "x")),
            reset=str(data.get("reset", "delta")),
        )
        if policy.style not in ("x", "ietf", "structured") or policy.reset not in (
            "delta",
            "epoch",
        ):
            raise ValueError("style must be x, ietf or structured; reset delta or epoch")
        return policy

    def roll(self, now: float) -> None:
        """Start a new window when the current one is over."""
        if now >= self.window_start + self.window:
            elapsed = (now - self.window_start) // self.window
            self.window_start += elapsed * self.window
            self.used = 0

    def headers(self, now: float, wall: float) -> dict[str, str]:
        """The headers announcing the budget at ``now`` (monotonic) / ``wall`` (Unix time)."""
        remaining = max(0, self.limit - self.used)
        delta = max(0.0, self.window_start + self.window - now)
        reset = str(int(wall + delta)) if self.reset == "epoch" else str(int(delta + 0.999))
        if self.style == "structured":
            return {
                "RateLimit": f'"default";r={remaining};t={int(delta + 0.999)}',
                "RateLimit-Policy": f'"default";q={self.limit};w={int(self.window)}',
            }
        prefix = "X-RateLimit-" if self.style == "x" else "RateLimit-"
        return {
            prefix + "Limit": str(self.limit),
            prefix + "Remaining": str(remaining),
            prefix + "Reset": reset,
        }


@dataclass
class SimulatorStats:
    """What the simulator saw: for tests and the benchmark."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_campaign: dict[str, int] = field(default_factory=dict)
    user_agents: set[str] = field(default_factory=set)
    # Bytes of HUGE bodies the client accepted: proves a capped read hangs up early.
    huge_bytes_sent: int = 0


class Simulator:
    """State of the fake API: campaigns, faults, accepted key and simulated clock."""

    def __init__(
        self,
        campaigns: Iterable[SimCampaign] = (),
        *,
        api_key: str = "demo-key",
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.speed = speed
        self.campaigns: dict[str, SimCampaign] = {c.id: c for c in campaigns}
        self.raw_records: dict[str, Any] = {}
        self.faults: dict[str | None, Fault] = {}
        self.rate_limit: RateLimitPolicy | None = None
        self.stats = SimulatorStats()
        self._monotonic = monotonic
        self._wall_time = wall_time
        self._start_mono = monotonic()
        self._start_wall = wall_time()

    def sim_now(self) -> float:
        """Simulated seconds since the simulator started."""
        return (self._monotonic() - self._start_mono) * self.speed

    def wall_of(self, sim_seconds: float) -> float:
        """Unix time at which simulated second ``sim_seconds`` falls."""
        return self._start_wall + sim_seconds / self.speed

    def set_fault(self, fault: Fault | None, campaign_id: str | None = None) -> None:
        """Switch a fault on for one campaign, or for every request when ``campaign_id`` is None."""
        if fault is None:
            self.faults.pop(campaign_id, None)
        else:
            self.faults[campaign_id] = fault

    def clear_faults(self) -> None:
        """Answer normally again."""
        self.faults.clear()

    def set_rate_limit(self, policy: RateLimitPolicy | None) -> None:
        """Announce (and enforce) a request budget from now on; None: no rate limit."""
        if policy is not None:
            policy.window_start = self._monotonic()
        self.rate_limit = policy

    def spend(self, requests: int) -> None:
        """Spend budget as another client of the same key would (the customer's dialer)."""
        if self.rate_limit is not None:
            self.rate_limit.roll(self._monotonic())
            self.rate_limit.used += requests

    def _budget_headers(self) -> dict[str, str]:
        policy = self.rate_limit
        if policy is None:
            return {}
        return policy.headers(self._monotonic(), self._wall_time())

    def set_raw(self, campaign_id: str, document: Any) -> None:
        """Serve ``document`` (any JSON value) for ``campaign_id`` instead of a moving campaign."""
        self.raw_records[campaign_id] = document

    def remove(self, campaign_id: str) -> None:
        """Delete a campaign: from now on it answers 404."""
        self.campaigns.pop(campaign_id, None)
        self.raw_records.pop(campaign_id, None)

    def current_record(self, campaign_id: str) -> Any:
        """The document the API would return for ``campaign_id`` now, or None if unknown."""
        if campaign_id in self.raw_records:
            return self.raw_records[campaign_id]
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            return None
        campaign.advance(self.sim_now())
        return campaign.record(self.wall_of)

    def app(self) -> web.Application:
        """The aiohttp application serving the API and the admin endpoints."""
        app = web.Application()
        app.router.add_get("/v1/campaigns/{campaign_id}", self._get_campaign)
        app.router.add_post("/_simulator/faults", self._post_fault)
        app.router.add_delete("/_simulator/faults", self._delete_faults)
        app.router.add_get("/_simulator/stats", self._get_stats)
        app.router.add_post("/_simulator/rate_limit", self._post_rate_limit)
        app.on_response_prepare.append(self._announce_budget)
        return app

    async def _announce_budget(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/v1/"):
            response.headers.update(self._budget_headers())

    async def _post_rate_limit(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.set_rate_limit(RateLimitPolicy.from_json(data) if data else None)
        return web.json_response({"ok": True})

    async def _get_campaign(self, request: web.Request) -> web.StreamResponse:
        campaign_id = request.match_info["campaign_id"]
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        stats.by_campaign[campaign_id] = stats.by_campaign.get(campaign_id, 0) + 1
        stats.user_agents.add(request.headers.get("User-Agent", ""))
        try:
            return await self._answer(request, campaign_id)
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request, campaign_id: str) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "unauthorized", "Missing or invalid API key.")
        policy = self.rate_limit
        if policy is not None:
            policy.roll(self._monotonic())
            if policy.used >= policy.limit:
                response = _error(429, "rate_limited", "Too many requests.")
                wait = policy.window_start + policy.window - self._monotonic()
                response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                return response
            policy.used += 1
            left = policy.limit - policy.used
            if policy.lowest_remaining is None or left < policy.lowest_remaining:
                policy.lowest_remaining = left
        fault = self.faults.get(campaign_id) or self.faults.get(None)
        if fault is not None:
            answer = await self._faulty(request, campaign_id, fault)
            if answer is not None:
                return answer
        document = self.current_record(campaign_id)
        if document is None:
            return _error(404, "not_found", "Campaign not found.")
        return web.json_response(document)

    async def _faulty(
        self, request: web.Request, campaign_id: str, fault: Fault
    ) -> web.StreamResponse | None:
        kind = fault.kind
        if kind is FaultKind.SLOW:
            await asyncio.sleep(fault.delay)
            return None
        if kind is FaultKind.STATUS:
            return _error(fault.status, f"http_{fault.status}", "Simulated failure.")
        if kind is FaultKind.RATE_LIMIT:
            response = _error(429, "rate_limited", "Too many requests.")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        if kind is FaultKind.BAD_JSON:
            return web.Response(body=b'{"id": "' + campaign_id.encode() + b'", "name": ')
        if kind is FaultKind.EMPTY:
            return web.Response(body=b"", content_type="application/json")
        if kind is FaultKind.HTML:
            page = "<html><body>Bad gateway</body></html>"
            return web.Response(text=page, content_type="text/html")
        if kind is FaultKind.ARRAY:
            return web.json_response([self.current_record(campaign_id)])
        if kind is FaultKind.WRONG_ID:
            other = dict(self.current_record(campaign_id) or {})
            other["id"] = campaign_id + "_other"
            return web.json_response(other)
        if kind is FaultKind.REDIRECT:
            return web.Response(status=fault.status, headers={"Location": fault.location})
        if kind is FaultKind.BODY:
            return web.Response(body=fault.body, content_type="application/json")
        if kind is FaultKind.DRIP:
            return await _drip(request, json.dumps(self.current_record(campaign_id)), fault.delay)
        if kind is FaultKind.HUGE:
            return await _huge(request, fault.size, fault.chunked, self.stats)
        if kind is FaultKind.DISCONNECT:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPInternalServerError
        raise AssertionError(f"unhandled fault {kind}")

    async def _post_fault(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.set_fault(Fault.from_json(data), data.get("campaign_id"))
        return web.json_response({"ok": True})

    async def _delete_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.stats.requests,
                "in_flight": self.stats.in_flight,
                "max_in_flight": self.stats.max_in_flight,
                "campaigns": len(self.campaigns) + len(self.raw_records),
            }
        )


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _drip(request: web.Request, text: str, delay: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(text.encode())
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for byte in text.encode():
            await response.write(bytes([byte]))
            await asyncio.sleep(delay)
    return response


async def _huge(
    request: web.Request, size: int, chunked: bool, stats: SimulatorStats
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = size
    await response.prepare(request)
    chunk = b" " * 65536
    sent = 0
    with contextlib.suppress(ConnectionError):
        while sent < size:
            piece = chunk[: size - sent]
            await response.write(piece)
            sent += len(piece)
            stats.huge_bytes_sent += len(piece)
    return response


def retry_after_date(seconds_from_now: float, now: float | None = None) -> str:
    """An HTTP-date ``seconds_from_now`` in the future, for Retry-After."""
    start = now if now is not None else time.time()
    moment = datetime.fromtimestamp(start + seconds_from_now, UTC)
    return format_datetime(moment, usegmt=True)
