"""Snapshot to Prometheus text exposition (format 0.0.4), re-rendering only what changed."""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from exporter.models import Campaign, CampaignStatus
from exporter.state import DURATION_BUCKETS, CampaignView, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_AS_OF = " As of the last successful fetch."


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


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
    kind: str
    help: str

    def header(self) -> str:
        """The ``# HELP`` and ``# TYPE`` lines."""
        text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.kind}\n"


# Campaign data families, in exposition order; a fragment holds one part per family.
INFO = Family(
    "dialnexa_campaign_info",
    "gauge",
    "Campaign metadata as labels; always 1." + _AS_OF,
)
STATUS = Family(
    "dialnexa_campaign_status",
    "gauge",
    "Campaign lifecycle status: 1 for the current state, 0 for the others." + _AS_OF,
)
TOTAL_LEADS = Family(
    "dialnexa_campaign_total_leads", "gauge", "Leads enrolled in the campaign." + _AS_OF
)
COMPLETED = Family(
    "dialnexa_campaign_completed_calls", "gauge", "Calls the campaign has completed." + _AS_OF
)
PENDING = Family(
    "dialnexa_campaign_pending_calls", "gauge", "Calls the campaign still has to make." + _AS_OF
)
MAX_CONCURRENT = Family(
    "dialnexa_campaign_max_concurrent_calls",
    "gauge",
    "Configured maximum of simultaneous calls." + _AS_OF,
)
RETRY_MAX = Family(
    "dialnexa_campaign_retry_max_retries",
    "gauge",
    "Configured retries per lead (retry_config.max_retries)." + _AS_OF,
)
RETRY_INTERVAL = Family(
    "dialnexa_campaign_retry_interval_seconds",
    "gauge",
    "Configured wait between retries of a lead (retry_config.retry_interval_minutes)." + _AS_OF,
)
CREATED = Family(
    "dialnexa_campaign_created_timestamp_seconds",
    "gauge",
    "When the campaign was created, Unix time." + _AS_OF,
)
SCHEDULED = Family(
    "dialnexa_campaign_scheduled_timestamp_seconds",
    "gauge",
    "When the campaign is scheduled to start, Unix time; absent when not scheduled." + _AS_OF,
)
DATA_FAMILIES: tuple[Family, ...] = (
    INFO,
    STATUS,
    TOTAL_LEADS,
    COMPLETED,
    PENDING,
    MAX_CONCURRENT,
    RETRY_MAX,
    RETRY_INTERVAL,
    CREATED,
    SCHEDULED,
)

BUILD_INFO = Family(
    "dialnexa_exporter_build_info", "gauge", "Exporter build information; always 1."
)
CAMPAIGN_UP = Family(
    "dialnexa_exporter_campaign_up",
    "gauge",
    "1 if the last fetch of the campaign succeeded, else 0.",
)
LAST_SUCCESS = Family(
    "dialnexa_exporter_campaign_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful fetch of the campaign.",
)
ERRORS = Family(
    "dialnexa_exporter_campaign_errors_total",
    "counter",
    "Failed fetches of the campaign, by reason.",
)
REQUESTS = Family(
    "dialnexa_exporter_api_requests_total",
    "counter",
    "Requests made to the DialNexa API, by HTTP status code ('error' when no response).",
)
DURATION = Family(
    "dialnexa_exporter_api_request_duration_seconds",
    "histogram",
    "Duration of requests to the DialNexa API.",
)
CONFIGURED = Family(
    "dialnexa_exporter_campaigns_configured",
    "gauge",
    "Campaign ids this exporter (shard) polls.",
)
LAST_POLL = Family(
    "dialnexa_exporter_last_poll_timestamp_seconds",
    "gauge",
    "Unix time at which the latest poll round finished.",
)
POLL_DURATION = Family(
    "dialnexa_exporter_poll_duration_seconds",
    "gauge",
    "How long the latest poll round took.",
)
SHARD_INDEX = Family(
    "dialnexa_exporter_shard_index", "gauge", "Index of the shard this exporter serves."
)
# Named `_shards`, not `_shard_count`: promtool's linter rejects `_count` on a gauge.
SHARD_COUNT = Family("dialnexa_exporter_shards", "gauge", "Number of shards in all.")
RELOAD_OK = Family(
    "dialnexa_exporter_config_last_reload_successful",
    "gauge",
    "1 if the last configuration reload succeeded, else 0.",
)
RELOAD_TIME = Family(
    "dialnexa_exporter_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful configuration load.",
)

_STATES: tuple[CampaignStatus, ...] = tuple(CampaignStatus)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


def _label_lines(record: Campaign, cid: str) -> tuple[str, str]:
    """The info line and the status lines ("" without a status) for the label ``cid``."""
    info_labels = _labels(
        (
            ("name", record.name or ""),
            ("agent_id", record.agent_id or ""),
            ("from_phone_number", record.from_phone_number or ""),
            ("organization_id", record.organization_id or ""),
        )
    )
    info = f"{INFO.name}{{{cid},{info_labels}}} 1\n"
    status = ""
    if record.status is not None:
        status = "".join(
            f'{STATUS.name}{{{cid},status="{state.value}"}} {int(state is record.status)}\n'
            for state in _STATES
        )
    return info, status


def _derived_values(record: Campaign) -> tuple[float | None, float | None, float | None]:
    """Retry interval in seconds, created and scheduled times as Unix time (None if absent)."""
    retry = record.retry_config
    minutes = retry.retry_interval_minutes if retry is not None else None
    created = record.created_at.timestamp() if record.created_at is not None else None
    scheduled = record.scheduled_at.timestamp() if record.scheduled_at is not None else None
    return (None if minutes is None else minutes * 60, created, scheduled)


def render_campaign_data(record: Campaign, campaign_id: str) -> tuple[str, ...]:
    """One text part per data family for one campaign (empty where the field is absent)."""
    cid = f'campaign_id="{escape_label_value(campaign_id)}"'

    def gauge(family: Family, value: float | None) -> str:
        return "" if value is None else f"{family.name}{{{cid}}} {format_value(value)}\n"

    info, status = _label_lines(record, cid)
    retry = record.retry_config
    interval, created, scheduled = _derived_values(record)
    return (
        info,
        status,
        gauge(TOTAL_LEADS, record.total_leads),
        gauge(COMPLETED, record.completed_calls),
        gauge(PENDING, record.pending_calls),
        gauge(MAX_CONCURRENT, record.max_concurrent_calls),
        gauge(RETRY_MAX, retry.max_retries if retry is not None else None),
        gauge(RETRY_INTERVAL, interval),
        gauge(CREATED, created),
        gauge(SCHEDULED, scheduled),
    )


def _family_block(family: Family, parts: Iterable[str]) -> str:
    body = "".join(parts)
    return family.header() + body if body else ""


def _gauge_block(family: Family, value: float | None, labels: str = "") -> str:
    if value is None:
        return ""
    inner = f"{{{labels}}}" if labels else ""
    return f"{family.header()}{family.name}{inner} {format_value(value)}\n"


def render_exporter_metrics(snapshot: Snapshot) -> str:
    """Exporter-wide health families (not per campaign)."""
    build = _labels(
        (("version", snapshot.build.version), ("python_version", snapshot.build.python_version))
    )
    requests = _family_block(
        REQUESTS,
        (
            f'{REQUESTS.name}{{code="{escape_label_value(code)}"}} {count}\n'
            for code, count in snapshot.requests_by_code
        ),
    )
    hist = snapshot.request_durations
    bounds = [format_value(b) for b in DURATION_BUCKETS] + ["+Inf"]
    duration = (
        DURATION.header()
        + "".join(
            f'{DURATION.name}_bucket{{le="{bound}"}} {count}\n'
            for bound, count in zip(bounds, hist.buckets, strict=True)
        )
        + f"{DURATION.name}_sum {format_value(hist.total)}\n"
        + f"{DURATION.name}_count {hist.count}\n"
    )
    return "".join(
        (
            _gauge_block(BUILD_INFO, 1, build),
            requests,
            duration,
            _gauge_block(CONFIGURED, snapshot.campaigns_configured),
            _gauge_block(LAST_POLL, snapshot.last_poll_timestamp),
            _gauge_block(POLL_DURATION, snapshot.poll_duration),
            _gauge_block(SHARD_INDEX, snapshot.shard_index),
            _gauge_block(SHARD_COUNT, snapshot.shard_count),
            _gauge_block(RELOAD_OK, int(snapshot.config_reload_success)),
            _gauge_block(RELOAD_TIME, snapshot.config_reload_timestamp),
        )
    )


# Work between two yields of render_steps: a campaign counts 1, re-rendering its label lines 20
# more (about 2 ms of work a slice on a small machine).
RENDER_SLICE = 2000
_RERENDER_COST = 20
# Campaigns whose lines of one family are made between two yields.
FAMILY_SLICE = 2500

# The parts of a campaign's exposition kept between renders: lines that are costly to format
# and rarely change. Counts (cheap, and changing every round) are formatted on each render.
_Cached = tuple[
    str,  # dialnexa_campaign_info line
    str,  # dialnexa_campaign_status lines ("" without a status)
    str | None,  # retry interval, seconds, as the text format spells it
    str | None,  # created timestamp
    str | None,  # scheduled timestamp
]


def _same_labels(old: Campaign, new: Campaign) -> bool:
    """True when the cached parts of ``old`` are those of ``new`` too."""
    return (
        old.name == new.name
        and old.agent_id == new.agent_id
        and old.from_phone_number == new.from_phone_number
        and old.organization_id == new.organization_id
        and old.status == new.status
        and old.retry_config == new.retry_config
        and old.created_at == new.created_at
        and old.scheduled_at == new.scheduled_at
    )


def _cached_parts(record: Campaign, cid: str) -> _Cached:
    """The cached parts of ``record`` for the campaign_id label ``cid``."""
    info, status = _label_lines(record, cid)
    interval, created, scheduled = (
        None if value is None else format_value(value) for value in _derived_values(record)
    )
    return (info, status, interval, created, scheduled)


# While rendering: each campaign's campaign_id label, its view and its cached parts, as three
# parallel lists (not a tuple per campaign: ten thousand fewer objects for the collector).
class _Rows(NamedTuple):
    labels: list[str]
    views: Sequence[CampaignView]
    cached: list[_Cached | None]


def _gauge_lines(family: Family, rows: _Rows, field: str) -> str:
    """One line per campaign whose record has an integer ``field``."""
    prefix = family.name + "{"
    return "".join(
        [
            f"{prefix}{label}}} {value}\n"
            for label, view in zip(rows.labels, rows.views, strict=True)
            if view.record is not None and (value := getattr(view.record, field)) is not None
        ]
    )


def _retry_max_lines(rows: _Rows) -> str:
    prefix = RETRY_MAX.name + "{"
    return "".join(
        [
            f"{prefix}{label}}} {retry.max_retries}\n"
            for label, view in zip(rows.labels, rows.views, strict=True)
            if view.record is not None
            and (retry := view.record.retry_config) is not None
            and retry.max_retries is not None
        ]
    )


def _value_lines(family: Family, rows: _Rows, index: int) -> str:
    """One line per campaign with a cached value text at ``index`` of its cached parts."""
    prefix = family.name + "{"
    return "".join(
        [
            f"{prefix}{label}}} {value}\n"
            for label, cached in zip(rows.labels, rows.cached, strict=True)
            if cached is not None and (value := cached[index]) is not None
        ]
    )


def _health_lines(family: Family, rows: _Rows) -> str:
    prefix = family.name + "{"
    pairs = zip(rows.labels, rows.views, strict=True)
    if family is CAMPAIGN_UP:
        return "".join([f"{prefix}{label}}} {int(view.up)}\n" for label, view in pairs])
    if family is LAST_SUCCESS:
        return "".join(
            [
                f"{prefix}{label}}} {format_value(view.last_success)}\n"
                for label, view in pairs
                if view.last_success is not None
            ]
        )
    return "".join(
        [
            f'{prefix}{label},reason="{reason}"}} {count}\n'
            for label, view in pairs
            for reason, count in view.errors
        ]
    )


def _family_texts(rows: _Rows) -> Iterator[tuple[Family, str]]:
    """Each campaign family's lines in exposition order, FAMILY_SLICE campaigns at a time."""
    for start in range(0, len(rows.cached), FAMILY_SLICE):
        some = rows.cached[start : start + FAMILY_SLICE]
        yield INFO, "".join([cached[0] for cached in some if cached is not None])
    for start in range(0, len(rows.cached), FAMILY_SLICE):
        some = rows.cached[start : start + FAMILY_SLICE]
        yield STATUS, "".join([cached[1] for cached in some if cached is not None])
    for family, field in (
        (TOTAL_LEADS, "total_leads"),
        (COMPLETED, "completed_calls"),
        (PENDING, "pending_calls"),
        (MAX_CONCURRENT, "max_concurrent_calls"),
        (RETRY_MAX, ""),
        (RETRY_INTERVAL, ""),
        (CREATED, ""),
        (SCHEDULED, ""),
        (CAMPAIGN_UP, ""),
        (LAST_SUCCESS, ""),
        (ERRORS, ""),
    ):
        for start in range(0, len(rows.labels), FAMILY_SLICE):
            stop = start + FAMILY_SLICE
            part = _Rows(rows.labels[start:stop], rows.views[start:stop], rows.cached[start:stop])
            if field:
                yield family, _gauge_lines(family, part, field)
            elif family is RETRY_MAX:
                yield family, _retry_max_lines(part)
            elif family in _VALUE_INDEX:
                yield family, _value_lines(family, part, _VALUE_INDEX[family])
            else:
                yield family, _health_lines(family, part)


_VALUE_INDEX = {RETRY_INTERVAL: 2, CREATED: 3, SCHEDULED: 4}


class ExpositionRenderer:
    """Renders snapshots; a campaign's rarely changing lines are re-rendered only when they do.

    The output is a function of the snapshot alone: the cache only remembers work already done.
    Families are made FAMILY_SLICE campaigns at a time and handed on as encoded chunks, so a
    render holds one slice's lines at a time besides what it was asked to keep.
    """

    def __init__(self) -> None:
        self._records: dict[str, Campaign] = {}
        self._cached: dict[str, _Cached] = {}

    def render(self, snapshot: Snapshot) -> bytes:
        """The full exposition of ``snapshot`` as UTF-8 bytes, in one go."""
        chunks: list[bytes] = []
        for _ in self.render_steps(snapshot, chunks.append):
            pass
        return b"".join(chunks)

    async def render_gzip(self, snapshot: Snapshot, level: int) -> tuple[bytes, int]:
        """The exposition gzipped, and its uncompressed size; the event loop runs between slices.

        Each chunk is compressed as soon as it is made, so the whole text (over ten megabytes
        at ten thousand campaigns) never exists in one piece, nor all its chunks at once.
        """
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: the gzip container
        compressed: list[bytes] = []
        size = 0

        def write(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            compressed.append(compressor.compress(chunk))

        for _ in self.render_steps(snapshot, write):
            await asyncio.sleep(0)
        compressed.append(compressor.flush())
        return b"".join(compressed), size

    def render_steps(self, snapshot: Snapshot, write: Callable[[bytes], None]) -> Iterator[None]:
        """Render ``snapshot`` into ``write``, in order, yielding between slices of the work."""
        old_records, old_cached = self._records, self._cached
        records: dict[str, Campaign] = {}
        cached_parts: dict[str, _Cached] = {}
        rows = _Rows([], snapshot.campaigns, [])
        labels, cached_list = rows.labels, rows.cached
        work = 0
        for view in snapshot.campaigns:
            cid = view.campaign_id
            labels.append(f'campaign_id="{escape_label_value(cid)}"')
            record = view.record
            cached = None
            if record is not None:
                cached = old_cached.get(cid)
                old = old_records.get(cid)
                if (
                    cached is None
                    or old is None
                    or (old is not record and not _same_labels(old, record))
                ):
                    cached = _cached_parts(record, labels[-1])
                    work += _RERENDER_COST
                records[cid] = record
                cached_parts[cid] = cached
            cached_list.append(cached)
            work += 1
            if work >= RENDER_SLICE:
                work = 0
                yield
        self._records, self._cached = records, cached_parts
        del old_records, old_cached

        headed: set[str] = set()
        for family, text in _family_texts(rows):
            if text:
                if family.name not in headed:
                    headed.add(family.name)
                    write(family.header().encode())
                write(text.encode())
            yield
        write(render_exporter_metrics(snapshot).encode())
        write(snapshot.process_text.encode())


def render_exposition(snapshot: Snapshot) -> bytes:
    """Render one snapshot without any cache (for tests and one-off use)."""
    return ExpositionRenderer().render(snapshot)
