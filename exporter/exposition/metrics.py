"""Every metric the exporter serves, declared once: name, type, help and where values come from.

Campaign families read each campaign: ``RecordFamily`` its record (only while its data is
shown), ``HealthFamily`` its view (every polled campaign). Exporter families read the object
that owns their values: the poll round's snapshot, the client's request statistics, the
settings, the config reloader, the build. Adding a metric is adding one declaration here and
listing it in its tuple; ``exporter.exposition.render`` turns declarations and data into
the text format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Generic, Literal, Protocol, TypeVar

from prometheus_client import ProcessCollector

from exporter.api.fields import FieldKind, RecordField
from exporter.api.models import RECORD_FIELDS, Campaign, CampaignStatus
from exporter.config import Settings, StatusSeries
from exporter.polling.state import BuildInfo, CampaignView, PollingLag, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_AS_OF = " As of the last successful fetch."

Value = int | float
# One sample of a campaign family: the labels after campaign_id (",status=\"paused\"" or ""),
# and the value.
LabelledValue = tuple[str, Value]
# One sample of an exporter family: name suffix ("_bucket" or ""), its labels, the value.
Sample = tuple[str, str, Value]
Kind = Literal["gauge", "counter", "histogram"]


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def labels_text(pairs: Iterable[tuple[str, str]]) -> str:
    """``name="value",...`` with every value escaped."""
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


def format_value(value: float) -> str:
    """A sample value as the text format spells it (integers without a decimal point)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family's name, type and help text."""

    name: str
    kind: Kind
    help: str

    def header(self) -> str:
        """The ``# HELP`` and ``# TYPE`` lines."""
        text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.kind}\n"


@dataclass(frozen=True, slots=True)
class RecordFamily(Family):
    """A family of each campaign whose data is shown, read from its record.

    ``value`` gives its one sample (absent when None), or ``samples`` its labelled samples.
    ``cached_on`` names the record fields the samples depend on: the lines are then kept
    between renders until one of them changes (metadata, settings, timestamps); without it they
    are made on every render (counts, which move every round and are cheap to format).
    """

    value: Callable[[Campaign], Value | None] | None = None
    samples: Callable[[Campaign], Iterable[LabelledValue]] | None = None
    cached_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthFamily(Family):
    """A family of every polled campaign, read from its view (the exporter's own health)."""

    value: Callable[[CampaignView], Value | None] | None = None
    samples: Callable[[CampaignView], Iterable[LabelledValue]] | None = None


S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class ExporterFamily(Family, Generic[S]):
    """An exporter-wide family, read from the object that owns its values."""

    samples: Callable[[S], Iterable[Sample]] = lambda source: ()


CampaignFamily = RecordFamily | HealthFamily


def _one(value: Value | None, labels: str = "") -> tuple[Sample, ...]:
    return () if value is None else (("", labels, value),)


# --- campaign data, made from the record's field declarations (exporter.api.models) ----------

_STATES: tuple[CampaignStatus, ...] = tuple(CampaignStatus)
_STATUS_LABELS = {state: f',status="{state.value}"' for state in _STATES}
_INFO_FIELDS = tuple(field for field in RECORD_FIELDS if field.kind is FieldKind.TEXT)
_INFO_GET = attrgetter(*(field.attr for field in _INFO_FIELDS))


def _info(record: Campaign) -> tuple[LabelledValue, ...]:
    pairs = zip((field.attr for field in _INFO_FIELDS), _INFO_GET(record), strict=True)
    return (("," + labels_text((name, text or "") for name, text in pairs), 1),)


def _status(attr: str) -> Callable[[Campaign], tuple[LabelledValue, ...]]:
    get = attrgetter(attr)

    def samples(record: Campaign) -> tuple[LabelledValue, ...]:
        current = get(record)
        if current is None:
            return ()
        return tuple((_STATUS_LABELS[state], int(state is current)) for state in _STATES)

    return samples


def _current_status(record: Campaign) -> tuple[LabelledValue, ...]:
    current = record.status
    return () if current is None else ((_STATUS_LABELS[current], 1),)


def _error_samples(errors: tuple[tuple[str, int], ...]) -> Iterable[LabelledValue]:
    # Most campaigns have never failed: no list made for them at every render.
    return [(f',reason="{reason}"', count) for reason, count in errors] if errors else ()


def _value(field: RecordField) -> Callable[[Campaign], Value | None]:
    """What a number or time field exports: the value, times its scale, or Unix time."""
    get = attrgetter(field.attr)
    if field.kind is FieldKind.TIMESTAMP:
        return lambda record: None if (moment := get(record)) is None else moment.timestamp()
    if field.scale != 1:
        scale = field.scale
        return lambda record: None if (number := get(record)) is None else number * scale
    return get


def record_family(field: RecordField) -> RecordFamily:
    """The family a declared record field is exported as (not for TEXT fields: INFO labels)."""
    assert field.metric is not None, field.attr
    cached_on = (field.attr,) if field.keeps_lines else ()
    if field.kind is FieldKind.STATUS:
        return RecordFamily(
            field.metric, "gauge", field.help, samples=_status(field.attr), cached_on=cached_on
        )
    return RecordFamily(field.metric, "gauge", field.help, value=_value(field), cached_on=cached_on)


INFO = RecordFamily(
    "dialnexa_campaign_info",
    "gauge",
    "Campaign metadata as labels; always 1." + _AS_OF,
    samples=_info,
    cached_on=tuple(field.attr for field in _INFO_FIELDS),
)
_FAMILY_OF_FIELD = {
    field.attr: record_family(field) for field in RECORD_FIELDS if field.metric is not None
}
# The status family (DIALNEXA_STATUS_SERIES may serve a sparse variant of it, below).
STATUS = _FAMILY_OF_FIELD["status"]
# One family per declared field that has a metric, in the record's order.
RECORD_FAMILIES: tuple[RecordFamily, ...] = (INFO, *_FAMILY_OF_FIELD.values())

# --- the exporter's health, per campaign -------------------------------------------------------

CAMPAIGN_UP = HealthFamily(
    "dialnexa_exporter_campaign_up",
    "gauge",
    "1 while the last fetch of the campaign succeeded and its data is fresh (shown, younger "
    "than the stale limit), else 0.",
    value=lambda view: int(view.up),
)
LAST_SUCCESS = HealthFamily(
    "dialnexa_exporter_campaign_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful fetch of the campaign.",
    value=attrgetter("last_success"),
)
ERRORS = HealthFamily(
    "dialnexa_exporter_campaign_errors_total",
    "counter",
    "Failed fetches of the campaign, by reason.",
    samples=lambda view: _error_samples(view.errors),
)

# Per-campaign families, in exposition order.
CAMPAIGN_FAMILIES: tuple[CampaignFamily, ...] = (
    *RECORD_FAMILIES,
    CAMPAIGN_UP,
    LAST_SUCCESS,
    ERRORS,
)

# The status family of DIALNEXA_STATUS_SERIES=current: the current state's series only, so a
# campaign has 1 status sample instead of 7; a series vanishes (and goes stale) when left.
_CURRENT_STATUS_HELP = (
    "Campaign lifecycle status: a series for the current state only, always 1 "
    "(DIALNEXA_STATUS_SERIES=current)." + _AS_OF
)


def campaign_families(status_series: StatusSeries = "all") -> tuple[CampaignFamily, ...]:
    """The per-campaign families served, the status family as ``status_series`` asks."""
    if status_series == "all":
        return CAMPAIGN_FAMILIES
    sparse = replace(STATUS, help=_CURRENT_STATUS_HELP, samples=_current_status)
    return tuple(sparse if family is STATUS else family for family in CAMPAIGN_FAMILIES)


# --- the poll round, from the snapshot -------------------------------------------------------

CONFIGURED: ExporterFamily[Snapshot] = ExporterFamily(
    "dialnexa_exporter_campaigns_configured",
    "gauge",
    "Campaign ids this exporter (shard) polls.",
    samples=lambda snapshot: _one(snapshot.campaigns_configured),
)
LAST_POLL: ExporterFamily[Snapshot] = ExporterFamily(
    "dialnexa_exporter_last_poll_timestamp_seconds",
    "gauge",
    "Unix time at which the latest poll round finished.",
    samples=lambda snapshot: _one(snapshot.last_poll_timestamp),
)
POLL_DURATION: ExporterFamily[Snapshot] = ExporterFamily(
    "dialnexa_exporter_poll_duration_seconds",
    "gauge",
    "How long the latest poll round took.",
    samples=lambda snapshot: _one(snapshot.poll_duration),
)
SNAPSHOT_FAMILIES: tuple[ExporterFamily[Snapshot], ...] = (CONFIGURED, LAST_POLL, POLL_DURATION)

# --- exporter-wide, read at scrape time from their owners -----------------------------------


class RequestCounts(Protocol):
    """What the API client's statistics offer (exporter.api.client.RequestStats)."""

    def requests_by_code(self) -> tuple[tuple[str, int], ...]:
        """Counts per HTTP status code ('error' for no response)."""

    def histogram(self) -> Histogram:
        """Request durations."""


class Histogram(Protocol):
    """Cumulative histogram data (exporter.api.client.HistogramData)."""

    @property
    def bounds(self) -> tuple[float, ...]:
        """Upper bounds of the buckets, +Inf excluded."""

    @property
    def buckets(self) -> tuple[int, ...]:
        """Cumulative counts, one per bound and then +Inf."""

    @property
    def total(self) -> float:
        """Sum of the observations."""

    @property
    def count(self) -> int:
        """Number of observations."""


class ReloadStatus(Protocol):
    """What the configuration reloader reports (exporter.polling.reloader.ConfigReloader)."""

    @property
    def last_reload_successful(self) -> bool:
        """Whether the latest reload (or the start-up load) succeeded."""

    @property
    def last_success_timestamp(self) -> float:
        """Unix time of the latest successful load."""


class BudgetReading(Protocol):
    """What the API budget tracker reports (exporter.api.budget.ApiBudget)."""

    @property
    def limit(self) -> int | None:
        """Requests the API allows per window, as last announced."""

    @property
    def remaining(self) -> int | None:
        """Requests left in the window, as last announced."""

    @property
    def reset_at(self) -> float | None:
        """Unix time at which the window resets."""

    @property
    def stretch(self) -> float:
        """How many times slower than its schedule polling runs (1: not stretched)."""

    @property
    def wait_seconds(self) -> float:
        """Seconds the next request waits for the budget (0: it may start at once)."""


class WindowReading(Protocol):
    """The calling window as of now."""

    def open_now(self) -> bool:
        """The window is open now."""


class ConnectionsReading(Protocol):
    """What the HTTP server's connection guard reports (``web.connections.ConnectionGuard``)."""

    @property
    def open_connections(self) -> int:
        """Connections open now, TLS handshakes included."""

    @property
    def capacity(self) -> int:
        """Connections allowed open at once."""

    @property
    def counts(self) -> Mapping[str, int]:
        """Connections accepted, shed, refused and timed out since start."""


_CLOSED_REASONS = ("shed", "refused", "timed_out")


def _histogram_samples(histogram: Histogram) -> list[Sample]:
    bounds = [format_value(bound) for bound in histogram.bounds] + ["+Inf"]
    samples: list[Sample] = [
        ("_bucket", f'le="{bound}"', count)
        for bound, count in zip(bounds, histogram.buckets, strict=True)
    ]
    samples += [("_sum", "", histogram.total), ("_count", "", histogram.count)]
    return samples


BUILD_INFO: ExporterFamily[BuildInfo] = ExporterFamily(
    "dialnexa_exporter_build_info",
    "gauge",
    "Exporter build information; always 1.",
    samples=lambda build: _one(
        1,
        labels_text(
            (
                ("version", build.version),
                ("python_version", build.python_version),
                ("event_loop", build.event_loop),
            )
        ),
    ),
)
REQUESTS: ExporterFamily[RequestCounts] = ExporterFamily(
    "dialnexa_exporter_api_requests_total",
    "counter",
    "Requests made to the DialNexa API, by HTTP status code ('error' when no response).",
    samples=lambda stats: [
        ("", f'code="{escape_label_value(code)}"', count)
        for code, count in stats.requests_by_code()
    ],
)
DURATION: ExporterFamily[RequestCounts] = ExporterFamily(
    "dialnexa_exporter_api_request_duration_seconds",
    "histogram",
    "Duration of requests to the DialNexa API.",
    samples=lambda stats: _histogram_samples(stats.histogram()),
)
SHARD_INDEX: ExporterFamily[Settings] = ExporterFamily(
    "dialnexa_exporter_shard_index",
    "gauge",
    "Index of the shard this exporter serves.",
    samples=lambda settings: _one(settings.effective_shard_index),
)
# Named `_shards`, not `_shard_count`: promtool's linter rejects `_count` on a gauge.
SHARDS: ExporterFamily[Settings] = ExporterFamily(
    "dialnexa_exporter_shards",
    "gauge",
    "Number of shards in all.",
    samples=lambda settings: _one(settings.shard_count),
)
RELOAD_OK: ExporterFamily[ReloadStatus] = ExporterFamily(
    "dialnexa_exporter_config_last_reload_successful",
    "gauge",
    "1 if the last configuration reload succeeded, else 0.",
    samples=lambda status: _one(int(status.last_reload_successful)),
)
RELOAD_TIME: ExporterFamily[ReloadStatus] = ExporterFamily(
    "dialnexa_exporter_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful configuration load.",
    samples=lambda status: _one(status.last_success_timestamp),
)

API_LIMIT: ExporterFamily[BudgetReading] = ExporterFamily(
    "dialnexa_exporter_api_requests_limit",
    "gauge",
    "Requests the DialNexa API allows the key per rate-limit window, as its headers last "
    "said; absent while the API sends none.",
    samples=lambda budget: _one(budget.limit),
)
API_REMAINING: ExporterFamily[BudgetReading] = ExporterFamily(
    "dialnexa_exporter_api_requests_remaining",
    "gauge",
    "Requests left to the key until the rate-limit window resets, as the API's headers last "
    "said (every client of the key spends them); absent while the API sends none.",
    samples=lambda budget: _one(budget.remaining),
)
API_RESET: ExporterFamily[BudgetReading] = ExporterFamily(
    "dialnexa_exporter_api_rate_limit_reset_timestamp_seconds",
    "gauge",
    "Unix time at which the API's rate-limit window resets; absent while the API sends none.",
    samples=lambda budget: _one(budget.reset_at),
)
STRETCH: ExporterFamily[BudgetReading] = ExporterFamily(
    "dialnexa_exporter_poll_stretch_factor",
    "gauge",
    "How many times slower than configured the exporter polls so that the API budget lasts "
    "until its reset; 1 when not stretched.",
    samples=lambda budget: _one(budget.stretch),
)
API_BUDGET_WAIT: ExporterFamily[BudgetReading] = ExporterFamily(
    "dialnexa_exporter_api_budget_wait_seconds",
    "gauge",
    "Seconds the next DialNexa API request waits so that the API budget lasts (until the "
    "reset when nothing is left to spend before it); 0 when it may start at once.",
    samples=lambda budget: _one(budget.wait_seconds),
)

HTTP_OPEN: ExporterFamily[ConnectionsReading] = ExporterFamily(
    "dialnexa_exporter_http_connections",
    "gauge",
    "HTTP connections open to the exporter now (TLS handshakes included).",
    samples=lambda guard: _one(guard.open_connections),
)
HTTP_CAPACITY: ExporterFamily[ConnectionsReading] = ExporterFamily(
    "dialnexa_exporter_http_connections_max",
    "gauge",
    "HTTP connections the exporter keeps open at most (DIALNEXA_MAX_CONNECTIONS, or less to "
    "fit the open-file limit).",
    samples=lambda guard: _one(guard.capacity),
)
HTTP_ACCEPTED: ExporterFamily[ConnectionsReading] = ExporterFamily(
    "dialnexa_exporter_http_connections_accepted_total",
    "counter",
    "HTTP connections accepted.",
    samples=lambda guard: _one(guard.counts.get("accepted", 0)),
)
HTTP_CLOSED: ExporterFamily[ConnectionsReading] = ExporterFamily(
    "dialnexa_exporter_http_connections_closed_total",
    "counter",
    "HTTP connections the exporter closed itself, by reason: shed (the oldest idle, for a "
    "newcomer at the cap), refused (at the cap, every slot answering), timed_out (a handshake, "
    "headers, answer or idle deadline passed).",
    samples=lambda guard: [
        ("", f'reason="{reason}"', guard.counts.get(reason, 0)) for reason in _CLOSED_REASONS
    ],
)

# --- polling lag, from the published snapshot at the scrape's time ------------------------------

POLL_OVERDUE: ExporterFamily[PollingLag] = ExporterFamily(
    "dialnexa_exporter_poll_overdue_seconds",
    "gauge",
    "How long the campaign that has waited longest past its due time has waited for its fetch "
    "(a fetch that hangs or waits for the API budget counts); 0 when none is overdue, absent "
    "without campaigns. Measured at the scrape, so it grows even when the poller publishes "
    "nothing.",
    samples=lambda lag: _one(lag.overdue_seconds),
)
OLDEST_DATA_AGE: ExporterFamily[PollingLag] = ExporterFamily(
    "dialnexa_exporter_oldest_campaign_data_age_seconds",
    "gauge",
    "Age of the oldest campaign data served: seconds since the least recent successful fetch "
    "whose data is still shown; absent when none is. Measured at the scrape.",
    samples=lambda lag: _one(lag.oldest_data_age_seconds),
)
LAG_FAMILIES: tuple[ExporterFamily[PollingLag], ...] = (POLL_OVERDUE, OLDEST_DATA_AGE)
WINDOW_OPEN: ExporterFamily[WindowReading] = ExporterFamily(
    "dialnexa_exporter_calling_window_open",
    "gauge",
    "1 while the calling window (DIALNEXA_CALLING_WINDOW) is open, else 0; 1 without one. "
    "DialNexaCampaignStalled judges only lookbacks in which it was 1 throughout.",
    samples=lambda window: _one(int(window.open_now())),
)

BUILD_FAMILIES: tuple[ExporterFamily[BuildInfo], ...] = (BUILD_INFO,)
REQUEST_FAMILIES: tuple[ExporterFamily[RequestCounts], ...] = (REQUESTS, DURATION)
SHARD_FAMILIES: tuple[ExporterFamily[Settings], ...] = (SHARD_INDEX, SHARDS)
WINDOW_FAMILIES: tuple[ExporterFamily[WindowReading], ...] = (WINDOW_OPEN,)
RELOAD_FAMILIES: tuple[ExporterFamily[ReloadStatus], ...] = (RELOAD_OK, RELOAD_TIME)
CONNECTION_FAMILIES: tuple[ExporterFamily[ConnectionsReading], ...] = (
    HTTP_OPEN,
    HTTP_CAPACITY,
    HTTP_ACCEPTED,
    HTTP_CLOSED,
)
BUDGET_FAMILIES: tuple[ExporterFamily[BudgetReading], ...] = (
    API_LIMIT,
    API_REMAINING,
    API_RESET,
    STRETCH,
    API_BUDGET_WAIT,
)


class ProcessMetrics:
    """The standard ``process_*`` families (CPU, memory, file descriptors, start time) of this
    process, read by prometheus_client's ProcessCollector when asked (at each scrape).

    The collector's families are formatted here rather than by ``generate_latest``, which
    costs twice as much again (about 40 µs against 80 µs a scrape on a small machine).
    """

    def __init__(self) -> None:
        self._collector = ProcessCollector(registry=None)

    def text(self) -> str:
        """Exposition text of the process metrics, as of now."""
        parts: list[str] = []
        for metric in self._collector.collect():
            name = metric.name + ("_total" if metric.type == "counter" else "")
            parts.append(f"# HELP {name} {metric.documentation}\n# TYPE {name} {metric.type}\n")
            for sample in metric.samples:
                labels = f"{{{labels_text(sample.labels.items())}}}" if sample.labels else ""
                parts.append(f"{sample.name}{labels} {format_value(sample.value)}\n")
        return "".join(parts)
