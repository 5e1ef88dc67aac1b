"""Declared families and their data to the text format (0.0.4), re-rendering only what changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from exporter.api.models import Campaign
from exporter.exposition.metrics import (
    CAMPAIGN_FAMILIES,
    SNAPSHOT_FAMILIES,
    CampaignFamily,
    ExporterFamily,
    RecordFamily,
    escape_label_value,
    format_value,
)
from exporter.polling.state import CampaignView, Snapshot

S = TypeVar("S")

# Work between two yields of the campaign pass: a campaign counts 1, re-rendering its cached
# lines 20 more (about 2 ms of work a slice on a small machine).
RENDER_SLICE = 2000
_RERENDER_COST = 20
# Campaigns whose lines of one family are made between two yields.
FAMILY_SLICE = 2500


def render_exporter_families(families: Iterable[ExporterFamily[S]], source: S) -> str:
    """The text of exporter-wide ``families``, read from ``source``; a family with no sample
    is left out, header included."""
    parts: list[str] = []
    for family in families:
        lines = [
            f"{family.name}{suffix}{{{labels}}} {format_value(value)}\n"
            if labels
            else f"{family.name}{suffix} {format_value(value)}\n"
            for suffix, labels, value in family.samples(source)
        ]
        if lines:
            parts.append(family.header())
            parts.extend(lines)
    return "".join(parts)


def campaign_label(campaign_id: str) -> str:
    """The ``campaign_id="..."`` label text of a campaign."""
    return f'campaign_id="{escape_label_value(campaign_id)}"'


# What is kept of a campaign for each cached family, in declaration order: a value family's
# value as the text format spells it (None when absent; the line around it is made at each
# render, which costs less than keeping ten thousand lines), a labelled family's whole lines.
_Kept = tuple[str | None, ...]


class _Rows(NamedTuple):
    """One render's campaigns as parallel lists (fewer objects than a tuple per campaign)."""

    labels: list[str]
    records: list[Campaign | None]
    views: Sequence[CampaignView]
    cached: list[_Kept | None]


def _format(value: float) -> str:
    return str(value) if value.__class__ is int else format_value(value)


def _samples_text(prefix: str, label: str, samples: Iterable[tuple[str, float]]) -> str:
    return "".join(
        [
            f"{prefix}{label}{extra}}} {value if value.__class__ is int else format_value(value)}\n"
            for extra, value in samples
        ]
    )


def _lines(family: CampaignFamily, labels: Sequence[str], sources: Sequence[Any]) -> str:
    """One family's lines for the campaigns whose source (a record for a RecordFamily, a view
    for a HealthFamily) is there: records are None while a campaign's data is not shown."""
    prefix = family.name + "{"
    pairs = zip(labels, sources, strict=True)
    if family.value is not None:
        get = family.value
        return "".join(
            [
                f"{prefix}{label}}} {v if v.__class__ is int else format_value(v)}\n"
                for label, source in pairs
                if source is not None and (v := get(source)) is not None
            ]
        )
    assert family.samples is not None
    many = family.samples
    return "".join(
        [
            _samples_text(prefix, label, samples)
            for label, source in pairs
            if source is not None and (samples := many(source))  # most have no errors
        ]
    )


class CampaignRenderer:
    """Renders snapshots: every campaign family, then the poll round's families.

    The output is a function of the snapshot alone; what is kept between renders only saves
    work. Lines of a family with ``cached_on`` are made again for a campaign only when one of
    those record fields changed; the other families are formatted on each render. Families are
    made FAMILY_SLICE campaigns at a time and handed to ``write`` as encoded chunks.
    """

    def __init__(self, families: Sequence[CampaignFamily] = CAMPAIGN_FAMILIES) -> None:
        self._families = tuple(families)
        self._cached = tuple(f for f in families if isinstance(f, RecordFamily) and f.cached_on)
        self._cached_index = {id(family): index for index, family in enumerate(self._cached)}
        fields = sorted({name for family in self._cached for name in family.cached_on})
        self._key: Callable[[Campaign], Any] = attrgetter(*fields) if fields else lambda _: ()
        self._labels: dict[str, str] = {}
        self._records: dict[str, Campaign] = {}
        self._kept: dict[str, _Kept] = {}

    def render(self, snapshot: Snapshot) -> bytes:
        """The whole text of ``snapshot`` as UTF-8 bytes, in one go."""
        chunks: list[bytes] = []
        for _ in self.render_steps(snapshot, chunks.append):
            pass
        return b"".join(chunks)

    def _cached_texts(self, label: str, record: Campaign) -> _Kept:
        texts: list[str | None] = []
        for family in self._cached:
            if family.value is not None:
                v = family.value(record)
                texts.append(None if v is None else _format(v))
            else:
                assert family.samples is not None
                texts.append(_samples_text(family.name + "{", label, family.samples(record)))
        return tuple(texts)

    def _rows(self, snapshot: Snapshot) -> Iterator[_Rows | None]:
        """Label, record and cached texts of every campaign; yields None between slices.

        What is kept lives in dicts of existing objects (labels, records, and the cached
        texts, reused while the fields they were made from are equal): a render of unchanged
        metadata makes no new long-lived object for the garbage collector to track.
        """
        key = self._key
        old_labels, old_records, old_kept = self._labels, self._records, self._kept
        labels: dict[str, str] = {}
        records: dict[str, Campaign] = {}
        kept_now: dict[str, _Kept] = {}
        rows = _Rows([], [], snapshot.campaigns, [])
        work = 0
        for view in snapshot.campaigns:
            cid, record = view.campaign_id, view.record
            label = old_labels.get(cid) or campaign_label(cid)
            labels[cid] = label
            kept = None
            if record is not None:
                kept = old_kept.get(cid)
                old = old_records.get(cid)
                if kept is None or old is None or (old is not record and key(old) != key(record)):
                    kept = self._cached_texts(label, record)
                    work += _RERENDER_COST
                records[cid] = record
                kept_now[cid] = kept
            rows.labels.append(label)
            rows.records.append(record)
            rows.cached.append(kept)
            work += 1
            if work >= RENDER_SLICE:
                work = 0
                yield None
        self._labels, self._records, self._kept = labels, records, kept_now
        yield rows

    def _family_text(self, family: CampaignFamily, rows: _Rows, start: int, stop: int) -> str:
        index = self._cached_index.get(id(family))
        if index is not None:
            cached = rows.cached[start:stop]
            if not isinstance(family, RecordFamily) or family.value is None:
                return "".join([c[index] or "" for c in cached if c is not None])
            prefix = family.name + "{"
            return "".join(
                [
                    f"{prefix}{label}}} {v}\n"
                    for label, c in zip(rows.labels[start:stop], cached, strict=True)
                    if c is not None and (v := c[index]) is not None
                ]
            )
        sources = rows.records if isinstance(family, RecordFamily) else rows.views
        return _lines(family, rows.labels[start:stop], sources[start:stop])

    def render_steps(self, snapshot: Snapshot, write: Callable[[bytes], None]) -> Iterator[None]:
        """Render ``snapshot`` into ``write``, in order, yielding between slices of the work."""
        rows: _Rows | None = None
        for rows in self._rows(snapshot):
            if rows is None:
                yield
        assert rows is not None
        count = len(rows.labels)
        for family in self._families:
            headed = False
            for start in range(0, count, FAMILY_SLICE):
                text = self._family_text(family, rows, start, start + FAMILY_SLICE)
                if text:
                    if not headed:
                        write(family.header().encode())
                        headed = True
                    write(text.encode())
                yield
        write(render_exporter_families(SNAPSHOT_FAMILIES, snapshot).encode())
