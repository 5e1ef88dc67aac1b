"""The fault tables: every hostile upstream behaviour and the outcome docs/failures.md promises.

tests/test_fault_matrix.py runs MATRIX (all rows against one running exporter) and
tests/test_exporter.py runs FAILURES (one exporter per fault); tests/test_docs.py checks
docs/failures.md's failure table against both.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.api.fields import FieldKind
from exporter.api.models import RECORD_FIELDS
from exporter.demo.simulator import Fault, FaultKind
from tests.helpers import Samples

HUGE_READ_LIMIT = 16 * 1024 * 1024  # a capped read hangs up long before 50 MB
CONTROL = "cmp_control"


# --- what a row promises -------------------------------------------------------------------------


class Series(enum.Enum):
    """What happens to a campaign's data series after the upstream answer."""

    UPDATED = "updated"  # replaced by the new record's values
    KEPT = "kept"  # the last good values stay until STALE_AFTER, then go
    DROPPED = "dropped"  # gone at once


class Schedule(enum.Enum):
    """When the campaign is fetched next."""

    NORMAL = "normal"  # one poll interval (minus jitter)
    BACKOFF = "backoff"  # exponential backoff per consecutive failure
    RETRY_AFTER = "retry_after"  # exactly what Retry-After says, capped at one hour


class Scope(enum.Enum):
    """Which upstream the fault affects."""

    CAMPAIGN = "campaign"  # one campaign on the shared simulator
    CLOSED_PORT = "closed_port"  # exporter pointed at a port nobody listens on
    DNS = "dns"  # exporter pointed at a host under .invalid
    API_STOPS = "api_stops"  # the whole API goes away after a healthy phase


@dataclass(frozen=True)
class Outcome:
    """What docs/failures.md promises for one row."""

    up: int
    reasons: frozenset[str]
    series: Series
    schedule: Schedule


def failed(
    reason: str, series: Series = Series.KEPT, schedule: Schedule = Schedule.BACKOFF
) -> Outcome:
    """A failed fetch counted under ``reason``."""
    return Outcome(0, frozenset({reason}), series, schedule)


ACCEPTED = Outcome(1, frozenset(), Series.UPDATED, Schedule.NORMAL)

# Keys of the rows of docs/failures.md's failure table: the start of each row's first cell (the
# README_ prefix dates from when the table was in the README).
README_VALID = "answers 200 with a valid record"
README_DELETED = "404 (campaign deleted)"
README_KEY_REJECTED = "401 / 403"
README_RETRY_AFTER = "429 with `Retry-After`"
README_NO_RETRY_AFTER = "429 without `Retry-After`"
README_5XX = "500, 502, 503"
README_4XX = "other 4xx"
README_TIMEOUT = "no answer or a body dripping"
README_CONNECTION = "connection refused or dropped"
README_NOT_JSON = "invalid JSON, empty body"
README_WRONG_TYPES = "wrong types"
README_WRONG_ID = "a record whose `id`"
README_NO_ID = "a JSON object without `id`"
README_TOO_BIG = "a body over 256 KiB"
README_REDIRECT = "a redirect to another host"
README_ODD_BUT_FINE = "a status outside the enum"


@dataclass(frozen=True)
class Row:
    """One upstream behaviour and the outcome it must have."""

    id: str
    readme: str
    outcome: Outcome
    scope: Scope = Scope.CAMPAIGN
    fault: Fault | None = None
    mutate: Callable[[dict[str, Any]], Any] | None = None  # healthy record -> body served
    delete: bool = False
    retry_after_seconds: float | None = None  # expected deferral, Retry-After as seconds
    retry_after_date: float | None = None  # Retry-After as an HTTP date this far ahead
    check: Callable[[Evidence, str], None] | None = None  # row-specific assertions


def with_value(path: str, new: Any) -> Callable[[dict[str, Any]], Any]:
    """A mutation setting the (dotted) field ``path`` of the record to ``new``."""

    def mutate(record: dict[str, Any]) -> Any:
        document = copy.deepcopy(record)
        target = document
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = new
        return document

    return mutate


def replaced(**values: Any) -> Callable[[dict[str, Any]], Any]:
    """A mutation overwriting top-level fields."""

    def mutate(record: dict[str, Any]) -> Any:
        document = copy.deepcopy(record)
        document.update(values)
        return document

    return mutate


def without(name: str) -> Callable[[dict[str, Any]], Any]:
    """A mutation removing a top-level field."""

    def mutate(record: dict[str, Any]) -> Any:
        document = copy.deepcopy(record)
        document.pop(name, None)
        return document

    return mutate


# Every declared number field: its JSON name (dotted when nested) and its metric.
NUMERIC_FIELDS: dict[str, str] = {
    field.json or field.attr: str(field.metric)
    for field in RECORD_FIELDS
    if field.kind in (FieldKind.COUNT, FieldKind.NUMBER)
}
WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("lots", "lots"),
    ("list", [1, 2]),
    ("negative", -3),
    ("numeric-string", "42"),
    ("boolean", True),
    ("object", {"value": 7}),
)


# --- what the fault matrix's scenario observed (a row's check reads it) --------------------------


@dataclass
class Event:
    """A change seen by the sampler: a failure or a success, and the schedule set by it."""

    failure: bool
    failures: int  # failed fetches counted so far for the campaign
    after: float  # last sample before the change (monotonic)
    seen: float  # first sample showing the change
    # When the poller then planned the next fetch: within [next_due_low, next_due_high], the
    # clock readings just before and after asking it (microseconds apart).
    next_due_low: float
    next_due_high: float
    kept: bool  # the campaign's data was still held


@dataclass
class Evidence:
    """Everything the scenario observed."""

    scrapes: dict[str, dict[str, Samples]] = field(default_factory=dict)  # scope -> phase
    scope_of: dict[str, str] = field(default_factory=dict)  # cid -> scope
    events: dict[str, list[Event]] = field(default_factory=dict)
    installed_at: float = 0.0  # monotonic time the faults went on
    scrape_seconds: list[float] = field(default_factory=list)
    healthz: dict[str, int] = field(default_factory=dict)
    other_host_hits: list[tuple[str, str | None]] = field(default_factory=list)
    sim_requests: dict[str, int] = field(default_factory=dict)
    huge_campaigns: list[str] = field(default_factory=list)
    huge_bytes_sent: int = 0
    sim_in_flight_at_end: int = -1
    documents: dict[str, Any] = field(default_factory=dict)  # cid -> body served after install
    timed_out: list[str] = field(default_factory=list)

    def scrape(self, cid: str, phase: str) -> Samples:
        """The /metrics scrape of ``phase`` from the exporter that polls ``cid``."""
        return self.scrapes[self.scope_of[cid]][phase]


# --- row-specific checks -------------------------------------------------------------------------


def check_no_request_elsewhere(evidence: Evidence, cid: str) -> None:
    """The redirect target never saw a request, let alone the key."""
    assert evidence.other_host_hits == [], evidence.other_host_hits
    assert evidence.sim_requests.get(f"{cid}_elsewhere", 0) == 0


def check_huge_read_is_capped(evidence: Evidence, cid: str) -> None:
    """The 50 MB body was abandoned after the cap: the server could not push it all."""
    attempts = sum(evidence.sim_requests.get(c, 0) for c in evidence.huge_campaigns)
    assert attempts >= 1
    assert evidence.huge_bytes_sent <= attempts * HUGE_READ_LIMIT, (
        evidence.huge_bytes_sent,
        attempts,
    )
    assert evidence.sim_in_flight_at_end == 0


def check_other_campaign_untouched(evidence: Evidence, cid: str) -> None:
    """The record of another campaign served under this id never shows up under this id."""
    failing = evidence.scrape(cid, "failing")
    assert failing[("dialnexa_campaign_total_leads", frozenset({("campaign_id", cid)}))] == 1000
    control = frozenset({("campaign_id", CONTROL)})
    assert failing[("dialnexa_campaign_total_leads", control)] == 1000


# --- the matrix ----------------------------------------------------------------------------------


def build_matrix() -> list[Row]:
    """Every row of the fault matrix."""
    rows = [
        Row("healthy-control", README_VALID, ACCEPTED),
        Row(
            "connection-refused-whole-api",
            README_CONNECTION,
            failed("connection"),
            scope=Scope.CLOSED_PORT,
        ),
        Row("dns-failure-whole-api", README_CONNECTION, failed("connection"), scope=Scope.DNS),
        Row(
            "api-stops-after-success",
            README_CONNECTION,
            failed("connection"),
            scope=Scope.API_STOPS,
        ),
        Row(
            "deleted-after-success",
            README_DELETED,
            failed("not_found", Series.DROPPED),
            delete=True,
        ),
        Row(
            "429-without-retry-after",
            README_NO_RETRY_AFTER,
            failed("rate_limited"),
            fault=Fault(FaultKind.RATE_LIMIT),
        ),
        Row(
            "429-unparseable-retry-after",
            README_NO_RETRY_AFTER,
            failed("rate_limited"),
            fault=Fault(FaultKind.RATE_LIMIT, retry_after="soon"),
        ),
        Row(
            "429-retry-after-seconds",
            README_RETRY_AFTER,
            failed("rate_limited", schedule=Schedule.RETRY_AFTER),
            fault=Fault(FaultKind.RATE_LIMIT, retry_after="3"),
            retry_after_seconds=3.0,
        ),
        Row(
            "429-retry-after-capped-at-one-hour",
            README_RETRY_AFTER,
            failed("rate_limited", schedule=Schedule.RETRY_AFTER),
            fault=Fault(FaultKind.RATE_LIMIT, retry_after="7200"),
            retry_after_seconds=3600.0,
        ),
        Row(
            "429-retry-after-http-date",
            README_RETRY_AFTER,
            failed("rate_limited", schedule=Schedule.RETRY_AFTER),
            retry_after_date=5.0,
        ),
        Row("504", README_5XX, failed("server_error"), fault=Fault(FaultKind.STATUS, status=504)),
        Row("418", README_4XX, failed("client_error"), fault=Fault(FaultKind.STATUS, status=418)),
        Row(
            "204-no-body",
            README_NOT_JSON,
            failed("invalid_response"),
            fault=Fault(FaultKind.STATUS, status=204),
        ),
    ]
    for path in NUMERIC_FIELDS:
        for label, wrong in WRONG_VALUES:
            readme = README_WRONG_TYPES
            rows.append(
                Row(
                    f"{path}={label}",
                    readme,
                    failed("invalid_response"),
                    mutate=with_value(path, wrong),
                )
            )
        rows.append(Row(f"{path}=null", README_VALID, ACCEPTED, mutate=with_value(path, None)))
    rows += [
        Row("retry_config=null", README_VALID, ACCEPTED, mutate=replaced(retry_config=None)),
        Row(
            "retry_config=lots",
            README_WRONG_TYPES,
            failed("invalid_response"),
            mutate=replaced(retry_config="lots"),
        ),
        Row(
            "created_at=lots",
            README_WRONG_TYPES,
            failed("invalid_response"),
            mutate=replaced(created_at="lots"),
        ),
        Row("status=unknown", README_ODD_BUT_FINE, ACCEPTED, mutate=replaced(status="archived")),
        Row("status=case-and-space", README_VALID, ACCEPTED, mutate=replaced(status=" PAUSED ")),
        Row("status=null", README_VALID, ACCEPTED, mutate=replaced(status=None)),
        Row(
            "status=number",
            README_WRONG_TYPES,
            failed("invalid_response"),
            mutate=replaced(status=3),
        ),
        Row(
            "extra-nested-fields",
            README_ODD_BUT_FINE,
            ACCEPTED,
            mutate=lambda record: {
                **record,
                "total_leads": 2000,
                "pending_calls": 2000,
                "retry_config": {
                    **record["retry_config"],
                    "max_retries": 5,
                    "backoff": {"kind": "exponential", "steps": [1, 2, {"x": None}]},
                },
                "webhooks": [{"url": "https://example.invalid/hook", "events": ["done"]}],
                "metadata": {"deep": {"deeper": {"deepest": [None, True, 1.5, "x"]}}},
            },
        ),
        Row("id-missing", README_NO_ID, failed("invalid_response"), mutate=without("id")),
        Row("id-null", README_NO_ID, failed("invalid_response"), mutate=replaced(id=None)),
        Row(
            "error-body-with-200",
            README_NO_ID,
            failed("invalid_response"),
            mutate=lambda _: {"error": {"code": "internal", "message": "try later"}},
        ),
        Row(
            "record-in-a-wrapper",
            README_NO_ID,
            failed("invalid_response"),
            mutate=lambda record: {"data": record},
        ),
        Row(
            "id-of-another-configured-campaign",
            README_WRONG_ID,
            failed("invalid_response"),
            mutate=replaced(id=CONTROL, total_leads=777, pending_calls=777),
            check=check_other_campaign_untouched,
        ),
        Row(
            "id-other-case",
            README_WRONG_ID,
            failed("invalid_response"),
            mutate=lambda record: {**record, "id": str(record["id"]).upper()},
        ),
        Row("id-number", README_WRONG_ID, failed("invalid_response"), mutate=replaced(id=42)),
        Row(
            "huge-50mb-with-content-length",
            README_TOO_BIG,
            failed("invalid_response"),
            fault=Fault(FaultKind.HUGE, size=50 * 1024 * 1024),
            check=check_huge_read_is_capped,
        ),
        Row(
            "huge-50mb-chunked-no-content-length",
            README_TOO_BIG,
            failed("invalid_response"),
            fault=Fault(FaultKind.HUGE, size=50 * 1024 * 1024, chunked=True),
            check=check_huge_read_is_capped,
        ),
    ]
    for status in (307, 301, 308):
        rows.append(
            Row(
                f"redirect-{status}-other-port",
                README_REDIRECT,
                failed("invalid_response"),
                fault=Fault(FaultKind.REDIRECT, status=status, location="{other}"),
                check=check_no_request_elsewhere,
            )
        )
    rows += [
        Row(
            "redirect-307-localhost-same-port",
            README_REDIRECT,
            failed("invalid_response"),
            fault=Fault(FaultKind.REDIRECT, status=307, location="{localhost}"),
            check=check_no_request_elsewhere,
        ),
        Row(
            "redirect-307-https-same-host",
            README_REDIRECT,
            failed("invalid_response"),
            fault=Fault(FaultKind.REDIRECT, status=307, location="{https}"),
            check=check_no_request_elsewhere,
        ),
    ]
    return rows


MATRIX = build_matrix()


# --- the exporter's failures (tests/test_exporter.py) --------------------------------------------

# One exporter per fault: the reason each one is counted under.
FAILURES = [
    (Fault(FaultKind.STATUS, status=500), "server_error"),
    (Fault(FaultKind.STATUS, status=502), "server_error"),
    (Fault(FaultKind.STATUS, status=503), "server_error"),
    (Fault(FaultKind.STATUS, status=401), "unauthorized"),
    (Fault(FaultKind.STATUS, status=403), "forbidden"),
    (Fault(FaultKind.STATUS, status=400), "client_error"),
    (Fault(FaultKind.SLOW, delay=5), "timeout"),
    (Fault(FaultKind.DRIP, delay=0.1), "timeout"),
    (Fault(FaultKind.BAD_JSON), "invalid_response"),
    (Fault(FaultKind.EMPTY), "invalid_response"),
    (Fault(FaultKind.HTML), "invalid_response"),
    (Fault(FaultKind.ARRAY), "invalid_response"),
    (Fault(FaultKind.WRONG_ID), "invalid_response"),
    (Fault(FaultKind.BODY, body=b'{"id": "cmp_a", "pending_calls": "lots"}'), "invalid_response"),
    (Fault(FaultKind.BODY, body=b'{"id": "cmp_a", "pending_calls": -3}'), "invalid_response"),
    (Fault(FaultKind.HUGE, size=50 * 1024 * 1024), "invalid_response"),
    (Fault(FaultKind.REDIRECT, status=302, location="http://other.invalid/x"), "invalid_response"),
    (Fault(FaultKind.DISCONNECT), "connection"),
]
