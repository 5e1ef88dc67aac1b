"""Campaign records as the DialNexa API returns them: each field declared once, checked; no I/O.

A field is one annotated attribute of ``Campaign``: its type and its ``RecordField`` (JSON
name, kind, bounds, metric name, help). The record check below, the metric families
(``exporter.exposition.metrics``), the simulator's records and the tests' tables are made from
``RECORD_FIELDS``; docs/metrics.md gets a row, which tests/test_doccheck.py checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, NamedTuple, get_type_hints

import msgspec
from msgspec.structs import astuple

from exporter.api.fields import (
    MAX_EXACT,
    TEXT_MAX_CHARS,
    TRUNCATION_MARK,
    CampaignStatus,
    FieldKind,
    RecordError,
    RecordField,
    truncate_text,
)

__all__ = [
    "MAX_EXACT",
    "RECORD_FIELDS",
    "TERMINAL_STATUSES",
    "TEXT_MAX_CHARS",
    "TRUNCATION_MARK",
    "Campaign",
    "CampaignStatus",
    "RecordError",
    "RecordField",
    "fast_campaign",
    "parse_campaign",
    "record_document",
    "truncate_text",
]

TERMINAL_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED})
_AS_OF = " As of the last successful fetch."


class Campaign(NamedTuple):
    """One campaign as returned by ``GET /v1/campaigns/{id}``; absent fields stay ``None``.

    A named tuple: immutable, and the cheapest such object to make, which matters when
    thousands of records are replaced every round. The fields after ``id`` are exported in
    this order (the text fields as labels of dialnexa_campaign_info).
    """

    id: str
    name: Annotated[str | None, RecordField(FieldKind.TEXT)] = None
    agent_id: Annotated[str | None, RecordField(FieldKind.TEXT, example="agt_sim")] = None
    from_phone_number: Annotated[
        str | None, RecordField(FieldKind.TEXT, example="+912234567890")
    ] = None
    organization_id: Annotated[str | None, RecordField(FieldKind.TEXT, example="org_sim")] = None
    status: Annotated[
        CampaignStatus | None,
        RecordField(
            FieldKind.STATUS,
            "dialnexa_campaign_status",
            "Campaign lifecycle status: 1 for the current state, 0 for the others." + _AS_OF,
            example="active",
        ),
    ] = None
    total_leads: Annotated[
        int | None,
        RecordField(
            FieldKind.COUNT,
            "dialnexa_campaign_total_leads",
            "Leads enrolled in the campaign." + _AS_OF,
        ),
    ] = None
    completed_calls: Annotated[
        int | None,
        RecordField(
            FieldKind.COUNT,
            "dialnexa_campaign_completed_calls",
            "Calls the campaign has completed." + _AS_OF,
        ),
    ] = None
    pending_calls: Annotated[
        int | None,
        RecordField(
            FieldKind.COUNT,
            "dialnexa_campaign_pending_calls",
            "Calls the campaign still has to make." + _AS_OF,
        ),
    ] = None
    max_concurrent_calls: Annotated[
        int | None,
        RecordField(
            FieldKind.COUNT,
            "dialnexa_campaign_max_concurrent_calls",
            "Configured maximum of simultaneous calls." + _AS_OF,
            example=5,
        ),
    ] = None
    max_retries: Annotated[
        int | None,
        RecordField(
            FieldKind.COUNT,
            "dialnexa_campaign_retry_max_retries",
            "Configured retries per lead (retry_config.max_retries)." + _AS_OF,
            json="retry_config.max_retries",
            example=3,
            cached=True,
        ),
    ] = None
    retry_interval_minutes: Annotated[
        float | None,
        RecordField(
            FieldKind.NUMBER,
            "dialnexa_campaign_retry_interval_seconds",
            "Configured wait between retries of a lead (retry_config.retry_interval_minutes)."
            + _AS_OF,
            json="retry_config.retry_interval_minutes",
            example=120,
            scale=60,
        ),
    ] = None
    created_at: Annotated[
        datetime | None,
        RecordField(
            FieldKind.TIMESTAMP,
            "dialnexa_campaign_created_timestamp_seconds",
            "When the campaign was created, Unix time." + _AS_OF,
            example="2024-05-01T09:00:00.000Z",
        ),
    ] = None
    scheduled_at: Annotated[
        datetime | None,
        RecordField(
            FieldKind.TIMESTAMP,
            "dialnexa_campaign_scheduled_timestamp_seconds",
            "When the campaign is scheduled to start, Unix time; absent when not scheduled."
            + _AS_OF,
        ),
    ] = None

    @property
    def is_terminal(self) -> bool:
        """Completed and cancelled campaigns no longer change."""
        return self.status in TERMINAL_STATUSES


def _declarations() -> tuple[RecordField, ...]:
    fields: list[RecordField] = []
    for attr, hint in get_type_hints(Campaign, include_extras=True).items():
        if attr == "id":
            continue
        (declared,) = [item for item in hint.__metadata__ if isinstance(item, RecordField)]
        fields.append(replace(declared, attr=attr))
    return tuple(fields)


# Every field after the id, in the model's order.
RECORD_FIELDS: tuple[RecordField, ...] = _declarations()


def _nested(field: RecordField) -> Callable[[object], object]:
    """The check of a field of a nested object: reads the object, then the field in it."""
    parent, name = field.path
    check = field.check()

    def read(value: object) -> object:
        if not isinstance(value, dict):
            raise RecordError(f"field {parent}: expected an object")
        inner = value.get(name)
        return None if inner is None else check(inner)

    return read


# How each field after the id is read and checked, in the model's order: the top-level JSON
# name (a JSON null is the same as the field missing) and the check of its value.
# This table is the contract: it cuts, converts and refuses as docs/failures.md says, with
# errors naming the field. Bodies as documented take the compiled fast path (fast_campaign)
# first, which only ever gives the record this table would.
_CHECKS: tuple[tuple[str, str, Callable[[object], object]], ...] = tuple(
    (
        field.path[0],
        field.json or field.attr,
        field.check() if len(field.path) == 1 else _nested(field),
    )
    for field in RECORD_FIELDS
)
_READS: tuple[tuple[str, Callable[[object], object]], ...] = tuple(
    (key, check) for key, _, check in _CHECKS
)


def _compiled_decoder() -> tuple[msgspec.json.Decoder[Any], _Nests, _Converts]:
    """The body decoder of ``fast_campaign``, in the model's order (a nested object where its
    first field is); the nested objects to flatten into their fields, the last first, as
    (position, width); and the conversions left to do, as (position in the model, function)."""
    slots: dict[str, Any] = {}  # a top-level name: its type, or a nested object's fields
    converts: list[tuple[int, Callable[[Any], object]]] = []
    for index, field in enumerate(RECORD_FIELDS, start=1):  # the id is at 0
        kind, convert = field.compiled()
        if convert is not None:
            converts.append((index, convert))
        if len(field.path) == 1:
            slots[field.path[0]] = kind
        else:
            slots.setdefault(field.path[0], []).append((field.path[1], kind))
    fields: list[tuple[str, Any, None]] = []
    nests: list[tuple[int, int]] = []
    flat: list[tuple[str, ...]] = []
    for position, (name, kind) in enumerate(slots.items(), start=1):
        if isinstance(kind, list):
            inner = msgspec.defstruct(f"_{name}", [(key, type_, None) for key, type_ in kind])
            fields.append((name, inner | None, None))
            nests.append((position, len(kind)))
            flat.extend((name, key) for key, _ in kind)
        else:
            fields.append((name, kind, None))
            flat.append((name,))
    if flat != [field.path for field in RECORD_FIELDS]:
        raise TypeError("the fields of a nested object must follow each other in Campaign")
    body = msgspec.defstruct("_CampaignBody", [("id", str, None), *fields])
    return msgspec.json.Decoder(body), tuple(reversed(nests)), tuple(converts)


_Nests = tuple[tuple[int, int], ...]
_Converts = tuple[tuple[int, Callable[[Any], object]], ...]
_DECODER, _NESTS, _CONVERTS = _compiled_decoder()


def fast_campaign(body: bytes, expected_id: str) -> Campaign | None:
    """The record in ``body`` when every field of it is as the API documents it, read and
    checked in compiled code (msgspec); None when it is not (text past its cap, 1200.0 for a
    count, a wrong id, not JSON...), for ``parse_campaign`` to cut, convert or refuse.

    Whenever it gives a record, ``parse_campaign`` of the decoded JSON gives the same one
    (tests/test_properties.py checks it for any body): this is only the fast path. Inside the
    running exporter it costs a fraction of decoding and checking in Python
    (docs/performance.md, "CPU per fetch").
    """
    try:
        document = _DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError):  # nested thousands deep, where skipped too
        return None
    if document.id != expected_id:
        return None
    values = list(astuple(document))
    for position, width in _NESTS:  # the last first: the positions before it stay put
        inner = values[position]
        values[position : position + 1] = (None,) * width if inner is None else astuple(inner)
    try:
        for index, convert in _CONVERTS:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
    except ValueError:  # a timestamp fromisoformat cannot read
        return None
    return Campaign._make(values)


def parse_campaign(document: Any, expected_id: str) -> Campaign:
    """Validate a decoded JSON document as the record for ``expected_id`` or raise RecordError."""
    if not isinstance(document, dict):
        raise RecordError(f"expected a JSON object, got {type(document).__name__}")
    campaign_id = document.get("id")
    if campaign_id is None:
        raise RecordError("field id: required")
    if not isinstance(campaign_id, str):
        raise RecordError("field id: expected a string")
    if campaign_id != expected_id:
        raise RecordError("record id does not match the requested campaign")
    get = document.get
    try:
        values = [None if (value := get(key)) is None else check(value) for key, check in _READS]
    except ValueError:
        raise _field_error(document) from None
    return Campaign._make((campaign_id, *values))


def _field_error(document: dict[str, Any]) -> RecordError:
    """The error for the first field that fails its check (the slow path, for bad records)."""
    for key, name, check in _CHECKS:
        value = document.get(key)
        if value is None:
            continue
        try:
            check(value)
        except RecordError as exc:
            return exc
        except ValueError as exc:
            return RecordError(f"field {name}: {exc}")
    return RecordError("invalid record")


def record_document(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON record holding ``values`` (model attribute → JSON value), nested as the API
    nests them; fields not in ``values`` are left out."""
    document: dict[str, Any] = {}
    for field in RECORD_FIELDS:
        if field.attr not in values:
            continue
        path = field.path
        target = document
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = values[field.attr]
    return document
