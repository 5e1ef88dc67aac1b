"""Hypothesis properties: any body gives a record or a typed error; any record renders exactly.

The client properties serve each example from one simulator through one aiohttp session, both
living on one event loop owned by a module fixture; each example runs on it with
``run_until_complete`` (the tests themselves are synchronous, so no pytest-asyncio loop is
running at the time).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from exporter.api.client import (
    DialNexaClient,
    FetchError,
    InvalidResponseError,
    create_session,
)
from exporter.api.fields import FieldKind, RecordError
from exporter.api.models import (
    MAX_EXACT,
    RECORD_FIELDS,
    TEXT_MAX_CHARS,
    TRUNCATION_MARK,
    Campaign,
    RecordField,
    fast_campaign,
    parse_campaign,
)
from exporter.demo.simulator import Fault, FaultKind, Simulator, load_campaigns
from exporter.exposition.render import CampaignRenderer
from exporter.polling.state import CampaignView, Snapshot
from tests.helpers import API_KEY, Samples, parse_samples, promtool_check, serve

# Not measured for coverage (pytest-cov's no_cover; only tests/run.sh measures): thousands of
# drawn examples run code the other tests cover already (no line or branch is reached only here,
# measured with --cov-context=test), and the tracer doubled their CPU time in the gate.
pytestmark = pytest.mark.no_cover

CID = "cmp_prop"
STATES = ("draft", "active", "running", "paused", "completed", "cancelled")
# The record's fields and their kinds come from the declarations; what each kind accepts is
# spelled out again below (the oracles), from docs/failures.md rather than from the code.
TEXT_FIELDS = tuple(f.attr for f in RECORD_FIELDS if f.kind is FieldKind.TEXT)
TOP_LEVEL = sorted({f.path[0] for f in RECORD_FIELDS})
NESTING = sorted({f.path[0] for f in RECORD_FIELDS if len(f.path) > 1})
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass
class Upstream:
    """A simulator and a client session on one private event loop."""

    loop: asyncio.AbstractEventLoop
    sim: Simulator
    client: DialNexaClient

    def fetch(self) -> Campaign | FetchError:
        """Fetch CID once; a FetchError is returned, anything else propagates."""

        async def attempt() -> Campaign | FetchError:
            try:
                return await self.client.fetch_campaign(CID)
            except FetchError as exc:
                return exc

        return self.loop.run_until_complete(attempt())


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """One simulator and one client session for every example of the module."""
    loop = asyncio.new_event_loop()
    sim = Simulator([], api_key=API_KEY)
    server = loop.run_until_complete(serve(sim.app()))

    api_url = str(server.make_url("/v1"))

    async def make_client() -> DialNexaClient:
        return DialNexaClient(create_session(4), api_url, SecretStr(API_KEY), timeout_seconds=5)

    client = loop.run_until_complete(make_client())
    try:
        yield Upstream(loop, sim, client)
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(server.close())
        loop.close()


def render_exposition(snapshot: Snapshot) -> bytes:
    """The snapshot's text from the production renderer."""
    return CampaignRenderer().render(snapshot)


# --- strategies -------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and ±Infinity too: json.dumps writes them, json.loads reads them
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
timezones = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
iso_datetimes = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.none() | timezones
).map(lambda moment: moment.isoformat())
counts = st.integers(min_value=0, max_value=2**63)
exact_counts = st.integers(min_value=0, max_value=MAX_EXACT)
# Numbers around and far beyond what a Prometheus sample carries exactly (2^53).
huge = st.integers(MAX_EXACT - 2, 10**400) | st.sampled_from(
    [float("inf"), 1e308, float(MAX_EXACT), float(MAX_EXACT) * 2, float(MAX_EXACT // 60)]
)
count_like = counts | huge | st.integers(-5, -1) | counts.map(float) | json_values
number_like = st.floats(min_value=0, max_value=1e9) | counts | huge | json_values
status_like = st.sampled_from([*STATES, "ARCHIVED", " Paused ", ""]) | json_values
text_like = st.text() | json_values
timestamp_like = (
    iso_datetimes | iso_datetimes.map(lambda t: t + "Z") | st.text(max_size=30) | json_values
)
id_like = (
    st.just(CID)
    | st.just(CID)
    | st.just(CID)
    | st.sampled_from([CID.upper(), "cmp_other", ""])
    | json_values
)
ANY_OF_KIND: dict[FieldKind, st.SearchStrategy[Any]] = {
    FieldKind.TEXT: text_like,
    FieldKind.STATUS: status_like,
    FieldKind.COUNT: count_like,
    FieldKind.NUMBER: number_like,
    FieldKind.TIMESTAMP: timestamp_like,
}


def by_json_name(
    strategy_of: Callable[[RecordField], st.SearchStrategy[Any]],
    objects: Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]] = lambda obj: obj,
) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy per top-level JSON name: a field's own, or an object of its nested fields
    (passed through ``objects``), each field optional."""
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for key in TOP_LEVEL:
        fields = [f for f in RECORD_FIELDS if f.path[0] == key]
        if len(fields[0].path) == 1:
            strategies[key] = strategy_of(fields[0])
        else:
            inner = {f.path[1]: strategy_of(f) for f in fields}
            strategies[key] = objects(st.fixed_dictionaries({}, optional=inner))
    return strategies


record_fields = by_json_name(lambda f: ANY_OF_KIND[f.kind], lambda obj: obj | json_values)
# Dicts shaped like campaign records, each known field with a random type, plus extra keys.
record_like = st.tuples(
    st.fixed_dictionaries({"id": id_like}, optional=record_fields),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
).map(lambda pair: {**pair[1], **pair[0]})
VALID_OF_KIND: dict[FieldKind, st.SearchStrategy[Any]] = {
    FieldKind.TEXT: st.text() | st.text(min_size=TEXT_MAX_CHARS - 2, max_size=TEXT_MAX_CHARS + 2),
    FieldKind.STATUS: st.sampled_from(STATES) | st.text(max_size=10),
    FieldKind.COUNT: counts,
    FieldKind.NUMBER: st.floats(0, 1e9),
    FieldKind.TIMESTAMP: st.none() | iso_datetimes,
}
valid_fields = by_json_name(lambda f: VALID_OF_KIND[f.kind])
# Valid records with at most one field swapped for any JSON value: near the accept/refuse edge.
nearly_valid = st.tuples(
    st.fixed_dictionaries({"id": st.just(CID)}, optional=valid_fields),
    st.sampled_from(sorted(record_fields)),
    json_values,
    st.booleans(),
).map(lambda t: {**t[0], t[1]: t[2]} if t[3] else t[0])
documents = nearly_valid | record_like | json_values


# --- oracles ----------------------------------------------------------------------------


def is_count(raw: Any) -> bool:
    """A JSON value docs/failures.md accepts as a count: a non-negative whole number, no boolean."""
    if isinstance(raw, bool):
        return False
    if isinstance(raw, int):
        return 0 <= raw <= MAX_EXACT
    return (
        isinstance(raw, float) and math.isfinite(raw) and raw.is_integer() and 0 <= raw <= MAX_EXACT
    )


def json_value(document: dict[str, Any], field: RecordField) -> Any:
    """The value at the field's JSON name (None when missing or null)."""
    value: Any = document
    for key in field.path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def cut(text: str) -> str:
    """What docs/metrics.md says a text becomes: at most the cap, the last one the mark."""
    return text if len(text) <= TEXT_MAX_CHARS else text[: TEXT_MAX_CHARS - 1] + TRUNCATION_MARK


def is_number(raw: Any, field: RecordField) -> bool:
    """A finite, non-negative JSON number (never a boolean or a numeric string) whose exported
    value (times the field's scale) stays exact."""
    return (
        isinstance(raw, int | float)
        and not isinstance(raw, bool)
        # the range first: math.isfinite cannot take an int of hundreds of digits
        and 0 <= raw <= MAX_EXACT // field.scale
        and math.isfinite(raw)
    )


def assert_record_matches(document: Any, record: Campaign) -> None:
    """An accepted record says exactly what the document said (text cut to the cap)."""
    assert isinstance(document, dict)
    assert document["id"] == CID
    assert record.id == CID
    for field in RECORD_FIELDS:
        raw = json_value(document, field)
        held = getattr(record, field.attr)
        if raw is None:
            assert held is None, field.attr
        elif field.kind is FieldKind.COUNT:
            assert is_count(raw), (field.attr, raw)
            assert held == raw
        elif field.kind is FieldKind.NUMBER:
            assert is_number(raw, field), (field.attr, raw)
            assert held == raw
        elif field.kind is FieldKind.TEXT:
            assert isinstance(raw, str)
            assert held == cut(raw)


def render(*views: CampaignView) -> str:
    """The exposition of a snapshot holding ``views``."""
    return render_exposition(Snapshot(campaigns=views)).decode()


def same_number(got: float | None, expected: float | None) -> bool:
    """Equal as Prometheus stores samples (float64); both absent counts as equal too."""
    if got is None or expected is None:
        return got is None and expected is None
    return float(got) == float(expected)


def assert_exposition_shows(samples: Samples, campaign_id: str, record: Campaign) -> None:
    """The parsed exposition holds exactly the record's values for ``campaign_id``."""
    only_id = frozenset({("campaign_id", campaign_id)})
    for field in RECORD_FIELDS:
        held = getattr(record, field.attr)
        if field.kind in (FieldKind.COUNT, FieldKind.NUMBER):
            expected = None if held is None else held * field.scale
            assert same_number(samples.get((str(field.metric), only_id)), expected), field.attr
        elif field.kind is FieldKind.TIMESTAMP:
            expected = None if held is None else held.timestamp()
            assert samples.get((str(field.metric), only_id)) == expected, field.attr
    statuses = {
        dict(labels)["status"]: val
        for (name, labels), val in samples.items()
        if name == "dialnexa_campaign_status" and ("campaign_id", campaign_id) in labels
    }
    if record.status is None:
        assert statuses == {}
    else:
        assert statuses == {s: float(s == record.status.value) for s in (*STATES, "unknown")}
    info = [
        dict(labels)
        for (name, labels) in samples
        if name == "dialnexa_campaign_info" and ("campaign_id", campaign_id) in labels
    ]
    assert info == [
        {"campaign_id": campaign_id, **{f: getattr(record, f) or "" for f in TEXT_FIELDS}}
    ]


# --- client properties ------------------------------------------------------------------


def usable(document: Any) -> bool:
    """Independent oracle: is this a record docs/failures.md and docs/metrics.md say to accept?"""
    if not isinstance(document, dict) or document.get("id") != CID:
        return False
    for key in NESTING:  # a nested field's object must be an object
        if not isinstance(document.get(key), dict | None):
            return False
    checks: list[bool] = []
    for field in RECORD_FIELDS:
        raw = json_value(document, field)
        if raw is None:
            continue
        if field.kind is FieldKind.COUNT:
            checks.append(is_count(raw))
        elif field.kind is FieldKind.NUMBER:
            checks.append(is_number(raw, field))
        elif field.kind is FieldKind.TIMESTAMP:
            checks.append(isinstance(raw, str) and parses_as_iso(raw))
        else:
            checks.append(isinstance(raw, str))
    return all(checks)


def parses_as_iso(text: str) -> bool:
    """ISO 8601 date-time as Python reads it, with a trailing Z for UTC."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@PROPERTY_SETTINGS
@given(document=documents)
# Once found by Hypothesis: an interval of 300 digits (the oracle itself must not overflow).
@example(document={"id": CID, "retry_config": {"retry_interval_minutes": 10**300}})
def test_any_json_body_gives_a_faithful_record_or_an_invalid_response(
    upstream: Upstream, document: Any
) -> None:
    """Any JSON value served with 200: a faithful, renderable Campaign or InvalidResponseError."""
    upstream.sim.set_fault(Fault(FaultKind.BODY, body=json.dumps(document).encode()))
    outcome = upstream.fetch()
    expected = usable(document)
    event("accepted" if isinstance(outcome, Campaign) else "refused")
    if isinstance(outcome, Campaign):
        assert expected, document
        assert_record_matches(document, outcome)
        samples = parse_samples(render(CampaignView(CID, outcome, up=True, last_success=1.0)))
        assert_exposition_shows(samples, CID, outcome)
    else:
        # The API answered: only the body can be at fault, never the transport.
        assert isinstance(outcome, InvalidResponseError), repr(outcome)
        assert not expected, document


def checked(body: bytes) -> tuple[str, object]:
    """What json.loads and the record check make of ``body``: the record, or the error."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return ("not JSON", None)
    try:
        return ("record", parse_campaign(document, CID))
    except RecordError as exc:
        return ("refused", str(exc))


@PROPERTY_SETTINGS
@given(
    body=st.binary(max_size=300)
    | documents.map(lambda d: json.dumps(d).encode())
    # Non-ASCII as UTF-8, lone surrogates too (json.loads reads those; msgspec does not).
    | documents.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    | documents.map(lambda d: json.dumps(d).encode("utf-16"))
    | documents.map(lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode())  # a byte order mark
)
@example(body=b'{"id": "cmp_prop", "total_leads": 123456789012345678901234567890}')
@example(body=b'{"id": "cmp_prop", "total_leads": 1, "total_leads": 2}')
@example(body=b'{"id": "cmp_prop", "total_leads": 1200.0, "max_concurrent_calls": true}')
@example(body=b'{"id": "cmp_prop", "name": "\\ud800"}')
@example(body=b'{"id": "cmp_prop", "retry_config": {"retry_interval_minutes": 1e400}}')
@example(body=b'{"id": "cmp_prop", "retry_config": {"retry_interval_minutes": 2251799813685249}}')
@example(body=b'{"id": "cmp_prop", "created_at": " 2024-05-01 09:00:00 ", "status": " Paused "}')
@example(body=b"[" * 2000 + b"]" * 2000)
@example(body=b'{"id": "cmp_prop", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@example(body=b'{"id": "cmp_prop", "extra": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001)
def test_the_compiled_reading_never_changes_an_outcome(body: bytes) -> None:
    """fast_campaign gives a record only where json.loads and the record check give the very
    same one; for any other body it steps aside, and the record check decides as before."""
    fast = fast_campaign(body, CID)
    event("compiled" if fast is not None else "record check")
    if fast is not None:
        assert checked(body) == ("record", fast)


def test_the_compiled_reading_takes_records_as_documented() -> None:
    """Records as the API documents them, both of its examples' shapes and the simulator's,
    are read by the compiled decoder (else it would save nothing), as the record check reads
    them; text past the cap and 1200.0 for a count are left to the record check."""
    bodies = [
        json.dumps(campaign.record(lambda moment: 1.7e9 + moment)).encode()
        for campaign in load_campaigns(300, 1)
    ]
    for body in bodies:
        cid = json.loads(body)["id"]
        assert fast_campaign(body, cid) == parse_campaign(json.loads(body), cid)
    assert fast_campaign(b'{"id": "c", "name": "' + b"x" * 200 + b'"}', "c") is None
    assert fast_campaign(b'{"id": "c", "total_leads": 1200.0}', "c") is None
    assert fast_campaign(b'{"id": "c", "total_leads": 1200}', "d") is None  # another id


@PROPERTY_SETTINGS
@given(
    body=st.binary(max_size=300)
    | documents.map(lambda d: json.dumps(d).encode())
    | st.text(max_size=100).map(lambda t: t.encode("utf-8"))
)
def test_any_bytes_body_gives_a_record_or_a_typed_error(upstream: Upstream, body: bytes) -> None:
    """Any bytes at all as a 200 body: a Campaign or InvalidResponseError, nothing else escapes."""
    upstream.sim.set_fault(Fault(FaultKind.BODY, body=body))
    outcome = upstream.fetch()
    if isinstance(outcome, Campaign):
        assert_record_matches(json.loads(body), outcome)
    else:
        assert isinstance(outcome, InvalidResponseError), repr(outcome)


def test_the_upstream_fixture_serves_valid_records(upstream: Upstream) -> None:
    """Sanity for the properties: a good record is accepted, so they can tell good from bad."""
    upstream.sim.clear_faults()
    upstream.sim.set_raw(CID, {"id": CID, "total_leads": 5, "status": "paused"})
    outcome = upstream.fetch()
    assert isinstance(outcome, Campaign)
    assert outcome.total_leads == 5
    assert usable({"id": CID, "total_leads": 5, "status": "paused"}) is True
    upstream.sim.set_raw(CID, {"id": CID, "total_leads": -5})
    assert isinstance(upstream.fetch(), InvalidResponseError)
    assert usable({"id": CID, "total_leads": -5}) is False


# --- rendering properties ---------------------------------------------------------------

campaign_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
any_text = st.text(max_size=40)  # arbitrary Unicode (UTF-8 encodable: no lone surrogates)


EXACT_OF_KIND: dict[FieldKind, st.SearchStrategy[Any]] = {
    FieldKind.TEXT: any_text,
    FieldKind.STATUS: st.sampled_from(STATES) | st.text(max_size=10),
    FieldKind.COUNT: exact_counts,
    FieldKind.NUMBER: st.floats(0, MAX_EXACT // max(f.scale for f in RECORD_FIELDS)),
    FieldKind.TIMESTAMP: iso_datetimes,
}
exact_fields = by_json_name(lambda f: EXACT_OF_KIND[f.kind])


@st.composite
def campaign_records(draw: st.DrawFn, campaign_id: str) -> Campaign:
    """A valid campaign record with arbitrary Unicode metadata and random values."""
    document: dict[str, Any] = {"id": campaign_id}
    for key, values in exact_fields.items():
        if draw(st.booleans()):
            document[key] = draw(values)
    return parse_campaign(document, campaign_id)


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[Snapshot, dict[str, Campaign]]:
    """A snapshot of 1-3 campaigns (distinct ids) with random health."""
    ids = draw(st.lists(campaign_ids, min_size=1, max_size=3, unique=True))
    views = []
    records: dict[str, Campaign] = {}
    for campaign_id in ids:
        record = draw(campaign_records(campaign_id))
        records[campaign_id] = record
        errors = draw(
            st.dictionaries(
                st.sampled_from(["timeout", "connection", "invalid_response"]),
                st.integers(1, 2**40),
                max_size=3,
            )
        )
        views.append(
            CampaignView(
                campaign_id,
                record,
                up=draw(st.booleans()),
                last_success=draw(st.floats(min_value=0, max_value=4e9)),
                errors=tuple(sorted(errors.items())),
            )
        )
    snapshot = Snapshot(campaigns=tuple(views))
    return snapshot, records


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=snapshots())
def test_any_record_renders_and_parses_back_to_the_same_values(
    drawn: tuple[Snapshot, dict[str, Campaign]],
) -> None:
    """Any records (Unicode names, phones, ids; any counts) read back through the parser exactly."""
    snapshot, records = drawn
    samples = parse_samples(render_exposition(snapshot).decode("utf-8"))
    for view in snapshot.campaigns:
        assert_exposition_shows(samples, view.campaign_id, records[view.campaign_id])
        only_id = frozenset({("campaign_id", view.campaign_id)})
        assert samples[("dialnexa_exporter_campaign_up", only_id)] == float(view.up)
        assert samples[("dialnexa_exporter_campaign_last_success_timestamp_seconds", only_id)] == (
            view.last_success
        )
        for reason, count in view.errors:
            key = only_id | {("reason", reason)}
            assert same_number(samples[("dialnexa_exporter_campaign_errors_total", key)], count)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=snapshots())
def test_promtool_accepts_any_record(drawn: tuple[Snapshot, dict[str, Campaign]]) -> None:
    """promtool check metrics finds no problem with the exposition of any records."""
    result = promtool_check(render_exposition(drawn[0]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_promtool_check_can_fail() -> None:
    """The promtool helper does reject a broken exposition, so the property above can fail."""
    result = promtool_check(b'# TYPE x_total counter\nx_total{a="1"} one\n')
    assert result.returncode != 0


def test_naive_and_offset_timestamps_are_the_same_instant() -> None:
    """Strategy sanity: naive ISO times are read as UTC, offsets are honoured."""
    record = parse_campaign(
        {
            "id": CID,
            "created_at": "2024-05-01T09:00:00",
            "scheduled_at": "2024-05-01T14:30:00+05:30",
        },
        CID,
    )
    assert record.created_at == datetime(2024, 5, 1, 9, tzinfo=UTC)
    assert record.scheduled_at == record.created_at


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents)
def test_no_record_the_client_accepts_makes_promtool_reject_the_scrape(
    upstream: Upstream, document: Any
) -> None:
    """Whatever the API sends (numbers far past 2^53 included), a record the client accepts
    renders to an exposition promtool accepts: one bad record can never blind Prometheus."""
    upstream.sim.set_raw(CID, document)
    outcome = upstream.fetch()
    if isinstance(outcome, Campaign):
        view = CampaignView(CID, outcome, up=True, last_success=1700000000.0)
        result = promtool_check(render_exposition(Snapshot(campaigns=(view,))))
        assert result.returncode == 0, result.stdout + result.stderr


# Any string, as the API can send it: lone surrogates, control characters, quotes, backslashes
# and newlines included, often far longer than the cap.
hostile_alphabet = st.characters(exclude_categories=()) | st.sampled_from('"\\\n\r\t\x00😀…')
hostile_text = st.text(hostile_alphabet, max_size=40) | st.text(
    hostile_alphabet, min_size=TEXT_MAX_CHARS - 3, max_size=4 * TEXT_MAX_CHARS
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.tuples(*(hostile_text for _ in TEXT_FIELDS)))
def test_any_text_becomes_a_label_of_at_most_the_cap_that_parses_back(
    texts: tuple[str, ...],
) -> None:
    """Any string in any text field, sent as JSON, is a label value of at most the cap that
    the exposition parser reads back as the string cut to the cap (a lone surrogate shown as
    U+FFFD)."""
    body = json.dumps({"id": CID, **dict(zip(TEXT_FIELDS, texts, strict=True))})
    document = json.loads(body)
    record = parse_campaign(document, CID)
    samples = parse_samples(render(CampaignView(CID, record, up=True, last_success=1.0)))
    (labels,) = [dict(key) for name, key in samples if name == "dialnexa_campaign_info"]
    for field in TEXT_FIELDS:
        sent = document[field]
        shown = labels[field]
        assert len(shown) <= TEXT_MAX_CHARS
        assert shown == re.sub("[\ud800-\udfff]", "\ufffd", cut(sent))
        assert shown.endswith(TRUNCATION_MARK) or shown == re.sub("[\ud800-\udfff]", "\ufffd", sent)
