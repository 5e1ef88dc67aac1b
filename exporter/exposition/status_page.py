"""The status page at ``/``: every campaign's state for an operator, problems first.

The page is a pure function of a snapshot and the exporter's health facts; ``StatusPages``
serves it to any number of requests with bounded work. No I/O here: the server hands in the
published snapshot and the facts, and sends the text.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from typing import NamedTuple, TypeVar

from exporter import __version__
from exporter.api.models import CampaignStatus
from exporter.polling.progress import DIALLING, remaining_calls
from exporter.polling.state import CampaignView, Snapshot

# Rows on one page: problems come first, so an operator sees them all on page 1 unless there
# are more than this; the rest are a click away. Bounds the work and the size of one answer
# (about 0.2 MB, at most 0.6 MB with every text at its longest) whatever the number of
# campaigns.
ROWS_PER_PAGE = 500
# The page reloads itself at the poll interval, but not more often than this (an open tab
# must not become load) nor less often than the longest (a wall screen must stay current).
MIN_REFRESH_SECONDS = 5
MAX_REFRESH_SECONDS = 30
# Texts from the API (names, agent ids) are cut to this many characters on the page.
MAX_TEXT_CHARS = 120
# Campaigns ordered, and rows rendered, between two yields to the event loop (about a
# millisecond of work each on a small machine).
ORDER_SLICE = 2000
ROW_SLICE = 100
# Polling counts as behind on the page once a campaign has waited this long past its due
# time, or one poll interval if that is longer (see behind_after).
BEHIND_MIN_SECONDS = 5.0
# A rejected reload's message is cut to this many characters on the page.
MAX_ERROR_CHARS = 300
# Pages (distinct queries) kept for reuse within one second.
MAX_PAGES_MADE = 16
# A page number of more digits than this is beyond any last page: it is clamped unread.
MAX_PAGE_DIGITS = 9

NOT_SHOWN = "—"
T = TypeVar("T")

# C0 and C1 control characters and DEL would reach the page invisibly (or make the browser
# substitute them): each shows as U+FFFD instead. Bidirectional overrides are contained by <bdi>.
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], "\ufffd")

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#1c2430;background:#fff}
h1{font-size:1.3em;margin:.8em 0 .2em}
a{color:#1f5fbf}
.links{margin:0 0 .8em;color:#5b6675}
.health{display:flex;flex-wrap:wrap;gap:.5em;margin:0 0 1em;padding:0}
.health div{border:1px solid #d5dae1;border-radius:4px;padding:.35em .7em;min-width:7em}
.health dt{font-size:.8em;color:#5b6675}
.health dd{margin:0;font-weight:600}
.health .alarm{border-color:#c62828;background:#fdecea}
.health .warn{border-color:#b26a00;background:#fff4e0}
nav{margin:.5em 0}
nav a,nav strong{margin-right:1em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e3e7ec;vertical-align:top}
th{font-size:.85em;color:#5b6675;border-bottom:2px solid #c9d0d9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.bar,td.when{white-space:nowrap}
.id,.sub{font:12px ui-monospace,monospace;color:#5b6675}
.status{font-weight:600}
tr.failing td:first-child{border-left:4px solid #c62828}
tr.stalled td:first-child{border-left:4px solid #d84315}
tr.paused td:first-child,tr.unknown td:first-child{border-left:4px solid #b26a00}
tr.nodata td:first-child{border-left:4px solid #8a94a3}
tr.ok td:first-child{border-left:4px solid #2e7d32}
tr.failing .problem{color:#b71c1c}
progress{width:9em;height:.8em;vertical-align:middle}
.muted{color:#8a94a3}
footer{margin-top:1em;color:#5b6675;font-size:.85em}
.banner{border:1px solid;border-radius:4px;padding:.5em .8em;margin:0 0 .6em}
.banner.alarm{border-color:#c62828;background:#fdecea}
.banner.warn{border-color:#b26a00;background:#fff4e0}
.banner code{font:12px ui-monospace,monospace;overflow-wrap:anywhere}
"""
# The stylesheet is the page's only inline content; the policy allows exactly it by its hash.
CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{CSS_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# Headers of every answer of the page (its 400s too).
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# What each fetch failure reason means for an operator (docs/failures.md has the details).
REASON_HINTS: Mapping[str, str] = {
    "timeout": "the API did not answer in time",
    "connection": "the API could not be reached",
    "unauthorized": "the API key was refused (401)",
    "forbidden": "the API key may not read this campaign (403)",
    "not_found": "the API does not know this campaign (404)",
    "rate_limited": "the API asked to slow down (429)",
    "server_error": "the API failed (5xx)",
    "client_error": "the API refused the request (4xx)",
    "invalid_response": "the API's answer was not a usable campaign record",
}


class Problem(enum.IntEnum):
    """What is wrong with a campaign, in the page's order (the worst first); NONE for nothing."""

    FAILING = 0  # the latest fetch failed
    STALLED = 1  # dialling in the calling window, calls pending, none completed for a while
    PAUSED = 2
    UNKNOWN_STATUS = 3  # the API sent a status it does not document, or none
    NO_DATA = 4  # not fetched yet, or its data dropped as stale without a failing fetch
    NONE = 5


_ROW_CLASS = {
    Problem.FAILING: "failing",
    Problem.STALLED: "stalled",
    Problem.PAUSED: "paused",
    Problem.UNKNOWN_STATUS: "unknown",
    Problem.NO_DATA: "nodata",
    Problem.NONE: "ok",
}


class StallJudge(NamedTuple):
    """Who counts as stalled at ``now``: a campaign dialling, and with no completed call,
    since ``cutoff`` at the latest; None when the calling window has not been open a whole
    stall threshold (closed, or opened too recently), so that nobody counts."""

    now: float
    cutoff: float | None


NO_STALLS = StallJudge(0.0, None)


def judged_since(view: CampaignView) -> float:
    """Since when a campaign has been dialling without a completed call (the later of the
    two moments); ``inf`` while it is not dialling."""
    progress = view.progress
    return math.inf if progress is None else progress.quiet_since


def _stall_may_count(view: CampaignView, now: float) -> bool:
    """The alert's other conditions: calls pending, and not scheduled for later."""
    record = view.record
    if record is None or not record.pending_calls or record.completed_calls is None:
        return False
    scheduled = record.scheduled_at
    return scheduled is None or scheduled.timestamp() <= now


def is_stalled(view: CampaignView, judge: StallJudge) -> bool:
    """The campaign is stalled as DialNexaCampaignStalled's condition judges it."""
    cutoff = judge.cutoff
    return cutoff is not None and judged_since(view) <= cutoff and _stall_may_count(view, judge.now)


def problem_of(view: CampaignView, judge: StallJudge = NO_STALLS) -> Problem:
    """The campaign's problem, if any."""
    if not view.up and view.last_error is not None:
        return Problem.FAILING
    record = view.record
    if record is None:
        return Problem.NO_DATA
    status = record.status
    if status is CampaignStatus.PAUSED:
        return Problem.PAUSED
    if status is None or status is CampaignStatus.UNKNOWN:
        return Problem.UNKNOWN_STATUS
    if is_stalled(view, judge):
        return Problem.STALLED
    return Problem.NONE


class Ordering(NamedTuple):
    """A snapshot's campaigns in page order, and how many have each problem."""

    rows: Sequence[CampaignView]
    counts: Mapping[Problem, int]

    @property
    def problems(self) -> int:
        """Campaigns with a problem: the first rows."""
        return len(self.rows) - self.counts.get(Problem.NONE, 0)


_UNKNOWN_STATUSES = frozenset({CampaignStatus.UNKNOWN, None})
_PROBLEM_STATUSES = _UNKNOWN_STATUSES | {CampaignStatus.PAUSED}


def _slices(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), ORDER_SLICE):
        yield items[start : start + ORDER_SLICE]


def _group(
    by_name: Sequence[CampaignView], groups: list[list[CampaignView]], judge: StallJudge
) -> float:
    """Append campaigns in name order to their problem's group (the groups in Problem order);
    returns the earliest cutoff after ``judge.cutoff`` at which another campaign may stall.

    Does what grouping by ``problem_of`` does, in list comprehensions: a function call per
    campaign would cost several milliseconds at ten thousand campaigns (only the few dialling
    long without progress get one).
    """
    failing, stalled, paused, unknown, no_data, fine = groups
    failing.extend([v for v in by_name if not v.up and v.last_error is not None])
    rest = [v for v in by_name if v.up or v.last_error is None]
    no_data.extend([v for v in rest if v.record is None])
    fetched = [(v, v.record.status) for v in rest if v.record is not None]
    paused.extend([v for v, status in fetched if status is CampaignStatus.PAUSED])
    unknown.extend([v for v, status in fetched if status in _UNKNOWN_STATUSES])
    ok = [v for v, status in fetched if status not in _PROBLEM_STATUSES]
    cutoff = judge.cutoff
    if cutoff is None:
        fine.extend(ok)
        return math.inf
    # One number per campaign (inf: not dialling), then only indices and floats: a stall
    # judged per campaign would double the cost of grouping.
    inf, now = math.inf, judge.now
    quiet = [p.quiet_since if (p := v.progress) is not None else inf for v in ok]
    overdue = [i for i, since in enumerate(quiet) if since <= cutoff]
    stuck = {i for i in overdue if _stall_may_count(ok[i], now)}
    stalled.extend([ok[i] for i in overdue if i in stuck])
    fine.extend([v for i, v in enumerate(ok) if i not in stuck] if stuck else ok)
    later = [since for since in quiet if cutoff < since < inf]
    # One dialling long without progress but scheduled for later counts from that time on.
    later += [
        record.scheduled_at.timestamp() - (now - cutoff)
        for i in overdue
        if i not in stuck
        and (record := ok[i].record) is not None and record.scheduled_at is not None
    ]  # fmt: skip
    return min(later, default=inf)


class OrderCache:
    """Orders each published snapshot once, in slices, and sorts by name only when a name or
    the campaign list changed.

    The page may be asked for many times per snapshot; at ten thousand campaigns a sort by
    name costs about ten milliseconds and grouping by problem a few, so both are kept, and the
    work is cut into steps between which the event loop serves other requests.
    """

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._judge = NO_STALLS
        self._judge_until = math.inf  # the ordering holds for cutoffs up to (not including) this
        self._ordering = Ordering((), {})
        self._names: list[str | None] = []
        self._ids: list[str] = []
        self._name_order: list[int] = []

    def _holds(self, snapshot: Snapshot, judge: StallJudge) -> bool:
        """The last ordering is ``snapshot``'s and no campaign changed sides since its judge."""
        if snapshot is not self._snapshot:
            return False
        old, new = self._judge.cutoff, judge.cutoff
        if old is None or new is None:
            return old is None and new is None
        return old <= new < self._judge_until

    def steps(self, snapshot: Snapshot, judge: StallJudge = NO_STALLS) -> Iterator[None]:
        """Order ``snapshot`` (stalls judged by ``judge``) unless its last ordering still holds,
        yielding between slices of ORDER_SLICE campaigns; ``of(snapshot, judge)`` then answers
        at once."""
        if self._holds(snapshot, judge):
            return
        campaigns = snapshot.campaigns
        names: list[str | None] = []
        ids: list[str] = []
        for part in _slices(campaigns):
            names.extend([v.record.name if v.record is not None else None for v in part])
            ids.extend([v.campaign_id for v in part])
            yield
        order = self._name_order  # read with the comparison: no step runs in between
        if names != self._names or ids != self._ids:
            # By id, then (a stable sort) by name: two sorts on strings take a fraction of
            # one sort on (name, id) tuples, and each is a step of its own.
            by_id = sorted(range(len(ids)), key=ids.__getitem__)
            yield
            folded: list[str] = []
            for some in _slices(names):
                folded.extend([name.casefold() if name is not None else "" for name in some])
                yield
            named = sorted([i for i in by_id if names[i] is not None], key=folded.__getitem__)
            yield
            order = named + [i for i in by_id if names[i] is None]
            self._name_order, self._names, self._ids = order, names, ids
        groups: list[list[CampaignView]] = [[] for _ in Problem]
        until = math.inf
        for indices in _slices(order):
            until = min(until, _group([campaigns[index] for index in indices], groups, judge))
            yield
        counts = dict(zip(Problem, map(len, groups), strict=True))
        self._ordering = Ordering([v for group in groups for v in group], counts)
        self._snapshot, self._judge, self._judge_until = snapshot, judge, until

    def of(self, snapshot: Snapshot, judge: StallJudge = NO_STALLS) -> Ordering:
        """``snapshot``'s ordering, made now (in one go) unless the last one still holds."""
        for _ in self.steps(snapshot, judge):
            pass
        return self._ordering


def order_campaigns(snapshot: Snapshot, judge: StallJudge = NO_STALLS) -> Ordering:
    """The campaigns in page order: failing, stalled, paused, unknown status, no data, then
    the rest; each group by name (case-insensitive; unnamed campaigns last), then by id."""
    return OrderCache().of(snapshot, judge)


class QueryError(ValueError):
    """A query parameter of the page is unusable; the message names it, never echoes it."""


class PageQuery(NamedTuple):
    """What the page shows: which page of rows (1-based, clamped when rendered), and whether
    only the campaigns with a problem."""

    page: int = 1
    problems_only: bool = False


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def parse_query(params: Mapping[str, str]) -> PageQuery:
    """The page's query parameters (``page``, ``problems``); others are ignored.

    Raises QueryError for a page that is not a whole number or a problems flag that is not
    a yes or no. A page number beyond the last page shows the last page.
    """
    page_text = params.get("page", "1").strip()
    if not page_text.isascii() or not page_text.isdigit():
        raise QueryError("page: expected a whole number from 1")
    digits = page_text.lstrip("0")
    # Beyond MAX_PAGE_DIGITS there is no such page: clamped without reading the number.
    page = 10**MAX_PAGE_DIGITS if len(digits) > MAX_PAGE_DIGITS else int(digits or "0")
    flag = params.get("problems", "").strip().lower()
    if flag not in _TRUE and flag not in _FALSE:
        raise QueryError("problems: expected 1 or 0")
    return PageQuery(max(1, page), flag in _TRUE)


def refresh_seconds(poll_interval_seconds: float) -> int:
    """How often the page reloads itself: the poll interval, within the bounds."""
    return int(min(MAX_REFRESH_SECONDS, max(MIN_REFRESH_SECONDS, round(poll_interval_seconds))))


@dataclass(frozen=True, slots=True)
class BudgetFacts:
    """The API's request budget as last announced; a field it never gave is None."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # Unix time
    stretch: float = 1.0  # how many times slower than planned polling runs to spare it
    held_until: float | None = None  # Unix time until which the budget holds every request
    held_since: float | None = None  # Unix time since which it has held them


@dataclass(frozen=True, slots=True)
class ReloadFacts:
    """The configuration in force, and the latest reload rejected since it was loaded."""

    loaded_at: float  # Unix time of the latest successful load
    rejected_since: float | None = None  # first rejection since then (Unix time)
    error: str = ""  # the latest rejection's one-line message (names a setting, never a secret)


@dataclass(frozen=True, slots=True)
class PageFacts:
    """What the page says about the exporter besides the snapshot."""

    now: float  # Unix time of the rendering
    poll_interval_seconds: float
    api_url: str = ""
    version: str = __version__
    metrics_path: str = "/metrics"
    budget: BudgetFacts | None = None
    shard_index: int = 0
    shard_count: int = 1
    reload: ReloadFacts | None = None
    stall_after_seconds: float = 900.0
    window_open_since: float | None = -math.inf  # when the calling window opened; None: closed
    calling_window: str = "always"

    @property
    def judge(self) -> StallJudge:
        """Stalls as of ``now``: only once the window has been open a whole threshold."""
        cutoff = self.now - self.stall_after_seconds
        since = self.window_open_since
        return StallJudge(self.now, cutoff if since is not None and since <= cutoff else None)


# -- text helpers


def _text(value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """API text made safe for the page: controls replaced, cut to ``limit``, HTML-escaped."""
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return escape(value.translate(_CONTROLS))


def _count(value: int | None) -> str:
    return NOT_SHOWN if value is None else f"{value:,}"


def duration(seconds: float) -> str:
    """A span of time as an operator reads it: ``42 s``, ``5 min``, ``3 h 5 min``, ``2 d 4 h``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def utc(timestamp: float) -> str:
    """A Unix time as ``2024-05-01 09:00:00 UTC``."""
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return NOT_SHOWN
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(timestamp: float | None, now: float) -> str:
    """``<time>`` of a past moment: relative, the absolute UTC time as its tooltip."""
    if timestamp is None:
        return '<span class="muted">never</span>'
    age = now - timestamp
    relative = "just now" if age < 1 else f"{duration(age)} ago"
    return f'<time title="{utc(timestamp)}">{relative}</time>'


def percent_tenths(completed: int, total: int) -> int:
    """Completed share of the total in tenths of a percent, rounded down (99.96% is not 100%)."""
    return completed * 1000 // total


def progress_cell(completed: int | None, total: int | None) -> str:
    """A bar with its figures as text, or a dash for a record without the counters."""
    if completed is None or total is None:
        return f'<td class="muted">{NOT_SHOWN}</td>'
    if total == 0:
        return f'<td>{completed:,} of 0 leads <span class="muted">(no leads)</span></td>'
    tenths = percent_tenths(completed, total)
    return (
        f'<td class="bar"><progress value="{min(completed, total)}" max="{total}"></progress> '
        f'{tenths // 10}.{tenths % 10}% <span class="sub">{completed:,} of {total:,}</span></td>'
    )


# -- page parts


def _problem_cell(view: CampaignView, problem: Problem, now: float) -> str:
    if problem is Problem.FAILING:
        reason = view.last_error or "unknown"
        hint = REASON_HINTS.get(reason)
        since = view.failing_since
        parts = [f"<strong>{_text(reason, 40)}</strong>"]
        if hint is not None:
            parts.append(f": {hint}")
        if since is not None:
            parts.append(f"<br>for {duration(now - since)}, since {utc(since)}")
        parts.append(f"<br>last try {_ago(view.last_attempt, now)}")
        if view.record is None:
            parts.append("; no data shown")
        return f'<td class="problem">{"".join(parts)}</td>'
    if problem is Problem.STALLED:
        quiet = duration(now - judged_since(view))
        return (
            '<td class="problem"><strong>stalled</strong>: dialling with calls pending, '
            f"no completed call for {quiet}</td>"
        )
    if problem is Problem.PAUSED:
        return '<td class="problem">paused</td>'
    if problem is Problem.UNKNOWN_STATUS:
        return '<td class="problem">status not documented by the API</td>'
    if problem is Problem.NO_DATA and view.last_success is not None:
        silent = duration(now - view.last_success)
        return f'<td class="problem">no fetch for {silent}: data dropped as stale</td>'
    if problem is Problem.NO_DATA:
        return '<td class="problem muted">waiting for the first fetch</td>'
    return "<td></td>"


def _muted(why: str) -> str:
    return f'<td class="muted">{NOT_SHOWN} {why}</td>'


_ETA_NOT_FOR = {
    CampaignStatus.PAUSED: "paused",
    CampaignStatus.DRAFT: "not started",
    CampaignStatus.COMPLETED: "finished",
    CampaignStatus.CANCELLED: "cancelled",
    CampaignStatus.UNKNOWN: "status unknown",
}


def eta_cell(view: CampaignView, problem: Problem, window_open: bool) -> str:
    """Time to finish the calls left at the recent pace, or a dash with why there is none."""
    record = view.record
    if record is None:
        return f'<td class="muted">{NOT_SHOWN}</td>'
    status = record.status
    if status not in DIALLING:
        return _muted(_ETA_NOT_FOR.get(status, "status unknown") if status else "no status")
    remaining = remaining_calls(record)
    if remaining is None:
        return _muted("no counters")
    if remaining == 0:
        return _muted("nothing pending")
    if problem is Problem.STALLED:
        return _muted("stalled")
    if not window_open:
        return _muted("outside calling window")
    rate = view.progress.rate if view.progress is not None else None
    if rate is None or rate <= 0:
        return _muted("no rate yet")
    return (
        f'<td class="when">{duration(remaining / rate)}<br>'
        f'<span class="sub">at {rate * 60:,.1f} calls/min</span></td>'
    )


def _last_progress(view: CampaignView, now: float) -> str:
    progress = view.progress
    if progress is None or progress.completed is None:
        return f'<td class="muted">{NOT_SHOWN}</td>'
    return f'<td class="when">{_ago(progress.moved_at, now)}</td>'


def campaign_row(
    view: CampaignView, now: float, judge: StallJudge = NO_STALLS, window_open: bool = True
) -> str:
    """One campaign's table row; ``judge`` tells stalls, ``window_open`` whether the calling
    window is."""
    problem = problem_of(view, judge)
    record = view.record
    if record is None:
        name = f'<span class="muted">{NOT_SHOWN}</span>'
        status = progress = pending = f'<td class="muted">{NOT_SHOWN}</td>'
        agent = ""
    else:
        name = f"<bdi>{_text(record.name)}</bdi>" if record.name else '<span class="muted">—</span>'
        status_text = record.status.value if record.status is not None else "not reported"
        status = f'<td class="status">{escape(status_text)}</td>'
        progress = progress_cell(record.completed_calls, record.total_leads)
        pending = f'<td class="num">{_count(record.pending_calls)}</td>'
        agent = f" · agent {_text(record.agent_id)}" if record.agent_id else ""
    return (
        f'<tr class="{_ROW_CLASS[problem]}"><td>{name}<br>'
        f'<span class="id">{_text(view.campaign_id)}{agent}</span></td>'
        f'{status}{progress}{pending}<td class="when">{_ago(view.last_success, now)}</td>'
        f"{_problem_cell(view, problem, now)}{_last_progress(view, now)}"
        f"{eta_cell(view, problem, window_open)}</tr>\n"
    )


def _budget_text(budget: BudgetFacts | None, now: float) -> tuple[str, str]:
    """The budget's box text and its box class."""
    if budget is None or (budget.limit is None and budget.remaining is None):
        return "not reported by the API", ""
    left = f"{_count(budget.remaining)} of {_count(budget.limit)} requests left"
    if budget.reset_at is not None:
        left += f", resets in {duration(budget.reset_at - now)}"
    if budget.stretch > 1.0:
        return f"{left}; polling {budget.stretch:.1f}x slower to spare it", "warn"
    return left, ""


def _round_text(snapshot: Snapshot, now: float) -> str:
    if snapshot.last_poll_timestamp is None:
        return "first round in progress"
    text = f"finished {_ago(snapshot.last_poll_timestamp, now)}"
    took = snapshot.poll_duration
    if took is not None:
        text += f", took {took * 1000:.0f} ms" if took < 1 else f", took {took:.1f} s"
    return text


def _box(term: str, value: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<div{attribute}><dt>{term}</dt><dd>{value}</dd></div>\n"


def _health(snapshot: Snapshot, ordering: Ordering, facts: PageFacts) -> str:
    counts = ordering.counts
    configured = f"{snapshot.campaigns_configured:,}"
    if facts.shard_count > 1:
        configured += f" (shard {facts.shard_index} of {facts.shard_count})"
    failing = counts.get(Problem.FAILING, 0)
    stalled = counts.get(Problem.STALLED, 0)
    paused = counts.get(Problem.PAUSED, 0)
    unknown = counts.get(Problem.UNKNOWN_STATUS, 0)
    budget, budget_css = _budget_text(facts.budget, facts.now)
    return "".join(
        (
            '<dl class="health">\n',
            _box("Version", escape(facts.version)),
            _box("Campaigns configured", configured),
            _box("Failing", f"{failing:,}", "alarm" if failing else ""),
            _box("Stalled", f"{stalled:,}", "warn" if stalled else ""),
            _box("Paused", f"{paused:,}", "warn" if paused else ""),
            _box("Unknown status", f"{unknown:,}", "warn" if unknown else ""),
            _box("No data yet", f"{counts.get(Problem.NO_DATA, 0):,}"),
            _box("API budget", budget, budget_css),
            _box("Calling window", _window_text(facts)),
            _box("Last poll round", _round_text(snapshot, facts.now)),
            _box("Ready", "yes" if snapshot.ready else "no, first round not done", ""),
            "</dl>\n",
        )
    )


# -- banners: polling paused or behind, a rejected configuration reload


def behind_after(poll_interval_seconds: float) -> float:
    """How long a campaign may wait past its due time before the page calls polling behind:
    one poll interval (a round of many campaigns takes a while), at least BEHIND_MIN_SECONDS."""
    return max(BEHIND_MIN_SECONDS, poll_interval_seconds)


def _banner(css: str, title: str, text: str) -> str:
    return f'<div class="banner {css}" role="alert"><strong>{title}</strong> {text}</div>\n'


def _since(moment: float, now: float) -> str:
    return f"since {utc(moment)} ({duration(now - moment)})"


def _budget_banner(budget: BudgetFacts, behind: float | None, now: float) -> str:
    """Polling held, or slowed, for the API budget; empty when it is neither."""
    left = f"{_count(budget.remaining)} of {_count(budget.limit)} requests left"
    since = f"; campaigns waiting {_since(behind, now)}" if behind is not None else ""
    if budget.held_until is not None and budget.held_until > now:
        held = budget.held_since
        held_text = f", every request held {_since(held, now)}" if held is not None else ""
        return _banner(
            "alarm",
            "Polling paused by the API budget",
            f"until its reset at {utc(budget.held_until)} (in "
            f"{duration(budget.held_until - now)}){held_text}: {left}, none to spare before "
            f"then{since}.",
        )
    if behind is not None and budget.stretch > 1.0:
        return _banner(
            "warn",
            "Polling is behind: paced by the API budget",
            f"{budget.stretch:.1f}x slower than configured ({left}){since}.",
        )
    return ""


def _failing_banner(ordering: Ordering, now: float) -> str:
    """Every campaign failing: polling only retries, backing off; empty otherwise."""
    failing = ordering.counts.get(Problem.FAILING, 0)
    if failing == 0 or failing != len(ordering.rows):
        return ""
    rows = ordering.rows
    since = min((v.failing_since for v in rows if v.failing_since is not None), default=None)
    reasons = sorted({v.last_error or "unknown" for v in rows})
    named = ", ".join(_text(reason, 40) for reason in reasons[:5])
    when = f"{_since(since, now)}: " if since is not None else ""
    return _banner(
        "alarm",
        "Every campaign is failing",
        f"{when}{named}. Polling only retries, backing off between tries.",
    )


def _polling_banner(snapshot: Snapshot, ordering: Ordering, facts: PageFacts) -> str:
    """Why polling is paused or behind, and since when; empty when it is neither."""
    now = facts.now
    overdue = snapshot.lag(now).overdue_seconds
    behind = (
        snapshot.oldest_due
        if overdue and overdue > behind_after(facts.poll_interval_seconds)
        else None
    )
    if facts.budget is not None:
        paced = _budget_banner(facts.budget, behind, now)
        if paced:
            return paced
    failing = _failing_banner(ordering, now)
    if failing or behind is None:
        return failing
    last = snapshot.last_poll_timestamp
    round_text = f"the latest poll round ended {_ago(last, now)}" if last else "no round ended yet"
    return _banner(
        "alarm",
        "Polling is behind",
        f"a campaign due {_since(behind, now)} has not been fetched, and the API budget does "
        f"not explain it: fetches may hang (each for up to the request timeout) or the poll "
        f"loop may be stuck; {round_text}.",
    )


def _reload_banner(reload: ReloadFacts | None, now: float) -> str:
    """A rejected configuration reload: what was rejected and since when."""
    if reload is None or reload.rejected_since is None:
        return ""
    return _banner(
        "warn",
        "Configuration reload rejected",
        f"{_since(reload.rejected_since, now)}: <code>{_text(reload.error, MAX_ERROR_CHARS)}"
        f"</code>. Still running the configuration loaded {_ago(reload.loaded_at, now)}.",
    )


def banners(snapshot: Snapshot, ordering: Ordering, facts: PageFacts) -> str:
    """The banners above the health boxes: polling paused or behind, a rejected reload."""
    return _polling_banner(snapshot, ordering, facts) + _reload_banner(facts.reload, facts.now)


def _window_text(facts: PageFacts) -> str:
    """The calling window, whether it is open, and the stall threshold."""
    since = facts.window_open_since
    threshold = f"stalled after {duration(facts.stall_after_seconds)} without a call"
    if since == -math.inf:
        return f"always open; {threshold}"
    if since is None:
        state = "closed now: no stalls judged"
    elif since > facts.now - facts.stall_after_seconds:
        state = f"opened {_ago(since, facts.now)}: stalls judged a threshold after opening"
    else:
        state = "open"
    return f"{_text(facts.calling_window)} ({state}); {threshold}"


def _link(path: str) -> str:
    """A link relative to the page (so that a path prefix of a proxy in front still holds)."""
    relative = path.lstrip("/")
    first = relative.split("/", 1)[0]
    if ":" in first or not relative:  # would read as a URL scheme, or as the page itself
        relative = "./" + relative
    return escape(relative)


def _query(page: int, problems_only: bool) -> str:
    return f"?page={page}&amp;problems=1" if problems_only else f"?page={page}"


def _navigation(shown: int, total: int, ordering: Ordering, query: PageQuery, pages: int) -> str:
    everything = len(ordering.rows)
    choices = (
        f'<strong>All campaigns ({everything:,})</strong> <a href="?problems=1">'
        f"Problems only ({ordering.problems:,})</a>"
        if not query.problems_only
        else f'<a href="./">All campaigns ({everything:,})</a> '
        f"<strong>Problems only ({ordering.problems:,})</strong>"
    )
    if total == 0:
        return f"<nav>{choices}</nav>\n"
    page = min(query.page, pages)
    first = (page - 1) * ROWS_PER_PAGE + 1
    where = f"rows {first:,}&ndash;{first + shown - 1:,} of {total:,}"
    steps = []
    if page > 1:
        steps.append(f'<a href="{_query(page - 1, query.problems_only)}">&lsaquo; previous</a>')
    if pages > 1:
        steps.append(f"page {page:,} of {pages:,}")
    if page < pages:
        steps.append(f'<a href="{_query(page + 1, query.problems_only)}">next &rsaquo;</a>')
    return f"<nav>{choices} {where} {' '.join(steps)}</nav>\n"


def _title(ordering: Ordering) -> str:
    failing = ordering.counts.get(Problem.FAILING, 0)
    if failing:
        return f"{failing:,} failing · DialNexa exporter"
    if ordering.problems:
        return f"{ordering.problems:,} to look at · DialNexa exporter"
    return "DialNexa exporter"


def _table_parts(shown: Sequence[CampaignView], facts: PageFacts) -> Iterator[str]:
    """The table of ``shown`` campaigns, ROW_SLICE rows a part."""
    yield (
        "<table>\n<thead><tr><th>Campaign</th><th>Status</th><th>Progress</th>"
        "<th>Pending calls</th><th>Last fetched</th><th>Problem</th><th>Last progress</th>"
        "<th>ETA</th></tr></thead>\n<tbody>\n"
    )
    now, judge, window_open = facts.now, facts.judge, facts.window_open_since is not None
    for first in range(0, len(shown), ROW_SLICE):
        part = shown[first : first + ROW_SLICE]
        yield "".join([campaign_row(view, now, judge, window_open) for view in part])
    yield "</tbody></table>\n"


def status_page_parts(
    snapshot: Snapshot, facts: PageFacts, query: PageQuery, ordering: Ordering
) -> Iterator[str]:
    """The page in parts: its head, the rows ROW_SLICE at a time, its end; ``ordering`` is
    ``snapshot``'s."""
    rows = ordering.rows[: ordering.problems] if query.problems_only else ordering.rows
    total = len(rows)
    pages = max(1, -(-total // ROWS_PER_PAGE))
    page = min(query.page, pages)
    start = (page - 1) * ROWS_PER_PAGE
    shown = rows[start : start + ROWS_PER_PAGE]
    now = facts.now
    metrics = _link(facts.metrics_path)
    refresh = refresh_seconds(facts.poll_interval_seconds)
    yield "".join(
        (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n',
            f'<meta http-equiv="refresh" content="{refresh}">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            f"<title>{_title(ordering)}</title>\n<style>{_CSS}</style>\n</head><body>\n",
            "<h1>DialNexa exporter</h1>\n",
            f'<p class="links">Polling {escape(facts.api_url) or "the API"} every '
            f"{facts.poll_interval_seconds:g} s · "
            f'<a href="{metrics}">metrics</a> · '
            '<a href="healthz">healthz</a> (process alive) · '
            '<a href="readyz">readyz</a> (first poll round done)</p>\n',
            banners(snapshot, ordering, facts),
            _health(snapshot, ordering, facts),
            _navigation(len(shown), total, ordering, query, pages),
        )
    )
    if not snapshot.campaigns:
        # The exposition's first snapshot, before the poller publishes its list, is empty too.
        empty = (
            "No campaigns configured."
            if snapshot.ready
            else "The exporter is starting: no campaign list published yet."
        )
        yield f"<p>{empty}</p>\n"
    elif not shown:
        yield "<p>No problems: every campaign was fetched and none is stalled or paused.</p>\n"
    else:
        yield from _table_parts(shown, facts)
        rest = total - start - len(shown)
        if rest > 0:
            following = _query(page + 1, query.problems_only)
            yield f'<p>{rest:,} more on the next pages: <a href="{following}">next</a></p>\n'
    yield (f"<footer>Generated {utc(now)}; reloads every {refresh} s.</footer>\n</body></html>\n")


def render_status_page(
    snapshot: Snapshot,
    facts: PageFacts,
    query: PageQuery | None = None,
    ordering: Ordering | None = None,
) -> str:
    """The whole page (the first one when no ``query``); ``ordering`` is ``snapshot``'s (made
    here when not given)."""
    if ordering is None:
        ordering = order_campaigns(snapshot, facts.judge)
    return "".join(status_page_parts(snapshot, facts, query or PageQuery(), ordering))


class StatusPages:
    """Serves the page to any number of requests with bounded work: one page made at a time
    (a flood waits its turn, then finds its page made), each snapshot ordered once, a page
    made at most once a second for each query, all of it in steps between which the event
    loop serves other requests."""

    def __init__(self) -> None:
        self._order = OrderCache()
        self._lock = asyncio.Lock()
        self._made: dict[PageQuery, str] = {}
        self._made_for: tuple[Snapshot | None, PageFacts | None] = (None, None)

    async def page(self, snapshot: Snapshot, facts: PageFacts, query: PageQuery) -> str:
        """The page for ``query`` of ``snapshot``, as of ``facts.now`` (to the second)."""
        async with self._lock:
            # A page made this second is served again only while everything else it says
            # (a rejected reload, the budget, the window) is unchanged too.
            facts_key = replace(facts, now=float(int(facts.now)))
            made_snapshot, made_facts = self._made_for
            if made_snapshot is not snapshot or made_facts != facts_key:
                self._made = {}
                self._made_for = (snapshot, facts_key)
            page = self._made.get(query)
            if page is not None:
                return page
            judge = facts.judge
            for _ in self._order.steps(snapshot, judge):
                await asyncio.sleep(0)
            parts = []
            ordering = self._order.of(snapshot, judge)
            for part in status_page_parts(snapshot, facts, query, ordering):
                parts.append(part)
                await asyncio.sleep(0)
            page = "".join(parts)
            if len(self._made) < MAX_PAGES_MADE:
                self._made[query] = page
            return page
