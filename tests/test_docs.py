"""The README's "Failure behaviour" table, checked against DESIGN.md's reasons and the fault tests.

Every row of the table must be exercised by a fault-matrix case (tests/test_fault_matrix.py's
MATRIX or tests/test_exporter.py's FAILURES), and every cell must say what those cases assert:
the table cannot drift from the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.simulator import Fault, FaultKind
from exporter.state import ERROR_REASONS
from tests import test_fault_matrix as fm
from tests.test_exporter import FAILURES

FAILURES_DOC = Path(__file__).resolve().parent.parent / "docs" / "failures.md"
HEADING = "## The failure table"
COLUMNS = (
    "upstream does",
    "`campaign_up`",
    "`reason` counted",
    "the campaign's data series",
    "next fetch",
)
# DESIGN.md: "`reason` from a fixed set: timeout, connection, unauthorized, forbidden, not_found,
# rate_limited, server_error, client_error, invalid_response".
DESIGN_REASONS = frozenset(
    {
        "timeout",
        "connection",
        "unauthorized",
        "forbidden",
        "not_found",
        "rate_limited",
        "server_error",
        "client_error",
        "invalid_response",
    }
)
NO_REASON = ("—", "-", "")


@dataclass(frozen=True)
class TableRow:
    """One row of the README table, its cells parsed."""

    case: str
    up: int
    reasons: frozenset[str]
    series: fm.Series
    schedule: fm.Schedule


@dataclass(frozen=True)
class Case:
    """One fault-matrix test case and the outcome it asserts."""

    source: str
    readme: str
    outcome: fm.Outcome
    asserts_schedule: bool


def split_row(line: str) -> list[str]:
    """The cells of a markdown table line."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_reasons(cell: str) -> frozenset[str]:
    """Reasons in backticks; the cell may hold nothing else but separators."""
    if cell in NO_REASON:
        return frozenset()
    reasons = re.findall(r"`([^`]+)`", cell)
    leftover = re.sub(r"`[^`]+`", "", cell).replace("/", "").replace(",", "").strip()
    assert leftover == "", f"unexpected text in reason cell {cell!r}"
    assert reasons, f"no reason in cell {cell!r}"
    return frozenset(reasons)


def parse_series(cell: str) -> fm.Series:
    """What the data series column says."""
    if cell == "dropped at once":
        return fm.Series.DROPPED
    if cell.startswith("kept until `STALE_AFTER`"):
        return fm.Series.KEPT
    if cell.startswith("updated"):
        return fm.Series.UPDATED
    raise AssertionError(f"unknown data series cell {cell!r}")


def parse_schedule(cell: str) -> fm.Schedule:
    """What the next fetch column says."""
    if "Retry-After" in cell:
        return fm.Schedule.RETRY_AFTER
    if cell == "backoff":
        return fm.Schedule.BACKOFF
    if cell == "normal" or cell.startswith("after the poll interval"):
        return fm.Schedule.NORMAL
    raise AssertionError(f"unknown next fetch cell {cell!r}")


def failure_table() -> list[TableRow]:
    """The rows of the table under the README's "Failure behaviour" heading."""
    lines = FAILURES_DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADING)
    table: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(split_row(line))
        elif table:
            break  # the first table ended
    assert table, "no table under the Failure behaviour heading"
    header, separator, *body = table
    assert tuple(header) == COLUMNS
    assert all(set(cell) <= set("-: ") for cell in separator)
    rows = []
    for cells in body:
        assert len(cells) == len(COLUMNS), cells
        case, up, reasons, series, schedule = cells
        rows.append(
            TableRow(
                case=case,
                up=int(up),
                reasons=parse_reasons(reasons),
                series=parse_series(series),
                schedule=parse_schedule(schedule),
            )
        )
    return rows


def readme_key_of(fault: Fault) -> str:
    """The README row a tests/test_exporter.py FAILURES entry exercises."""
    if fault.kind is FaultKind.STATUS:
        if fault.status in (401, 403):
            return fm.README_KEY_REJECTED
        if fault.status >= 500:
            return fm.README_5XX
        assert 400 <= fault.status < 500, fault
        assert fault.status not in (404, 429), fault
        return fm.README_4XX
    keys = {
        FaultKind.SLOW: fm.README_TIMEOUT,
        FaultKind.DRIP: fm.README_TIMEOUT,
        FaultKind.BAD_JSON: fm.README_NOT_JSON,
        FaultKind.EMPTY: fm.README_NOT_JSON,
        FaultKind.HTML: fm.README_NOT_JSON,
        FaultKind.ARRAY: fm.README_NOT_JSON,
        FaultKind.WRONG_ID: fm.README_WRONG_ID,
        FaultKind.BODY: fm.README_WRONG_TYPES,  # the FAILURES bodies carry wrong field values
        FaultKind.HUGE: fm.README_TOO_BIG,
        FaultKind.REDIRECT: fm.README_REDIRECT,
        FaultKind.DISCONNECT: fm.README_CONNECTION,
    }
    return keys[fault.kind]


def all_cases() -> list[Case]:
    """Every fault-matrix case with the README row it belongs to and what it asserts."""
    cases = [
        Case(f"test_fault_matrix[{row.id}]", row.readme, row.outcome, asserts_schedule=True)
        for row in fm.MATRIX
    ]
    for fault, reason in FAILURES:
        # test_failure_keeps_last_values_then_drops_them_when_stale: up 0, the reason counted,
        # data kept until STALE_AFTER; it does not look at the next fetch time.
        outcome = fm.Outcome(0, frozenset({reason}), fm.Series.KEPT, fm.Schedule.BACKOFF)
        source = f"test_exporter.FAILURES[{fault.kind.value}-{fault.status}]"
        cases.append(Case(source, readme_key_of(fault), outcome, asserts_schedule=False))
    return cases


def row_for(key: str, table: list[TableRow]) -> TableRow:
    """The one README row whose first cell starts with ``key``."""
    found = [row for row in table if row.case.startswith(key)]
    assert len(found) == 1, f"{key!r} matches {len(found)} README rows"
    return found[0]


@pytest.fixture(scope="module")
def table() -> list[TableRow]:
    """The parsed README table."""
    return failure_table()


def test_design_reasons_are_the_exporters_reasons() -> None:
    """The reason set copied from DESIGN.md is exactly the one the exporter can emit."""
    assert frozenset(ERROR_REASONS) == DESIGN_REASONS
    assert len(ERROR_REASONS) == len(DESIGN_REASONS)


def test_every_reason_cell_names_only_design_reasons(table: list[TableRow]) -> None:
    """Each row's `reason` cell lists reasons from DESIGN.md's fixed set, and nothing else."""
    assert len(table) >= 10
    for row in table:
        assert row.reasons <= DESIGN_REASONS, (row.case, row.reasons - DESIGN_REASONS)
        # A reason is counted exactly when the fetch failed.
        assert (row.up == 0) == bool(row.reasons), row.case


def test_every_readme_row_is_exercised(table: list[TableRow]) -> None:
    """Every README row is the target of at least one fault-matrix case."""
    cases = all_cases()
    for row in table:
        assert any(row.case.startswith(case.readme) for case in cases), row.case


def test_every_reason_in_the_table_is_exercised(table: list[TableRow]) -> None:
    """Every reason the table names is the expected reason of at least one fault-matrix case."""
    exercised = frozenset().union(*(case.outcome.reasons for case in all_cases()))
    named = frozenset().union(*(row.reasons for row in table))
    assert named <= exercised, named - exercised
    # And the other way round: the tests expect no reason the table leaves out.
    assert exercised <= named, exercised - named


def test_every_row_names_exactly_the_reasons_its_cases_expect(table: list[TableRow]) -> None:
    """A row's reason cell is the union of the reasons of the cases mapped to it."""
    cases = all_cases()
    for row in table:
        mine = [case for case in cases if row.case.startswith(case.readme)]
        expected = frozenset().union(*(case.outcome.reasons for case in mine))
        assert row.reasons == expected, (row.case, row.reasons, expected)


@pytest.mark.parametrize("case", all_cases(), ids=lambda case: case.source)
def test_readme_row_says_what_the_case_asserts(table: list[TableRow], case: Case) -> None:
    """campaign_up, reason, data series and next fetch of the case's README row match the test."""
    row = row_for(case.readme, table)
    assert row.up == case.outcome.up
    assert case.outcome.reasons <= row.reasons
    assert row.series is case.outcome.series
    if case.asserts_schedule:
        assert row.schedule is case.outcome.schedule


def test_parsers_reject_unknown_cells() -> None:
    """The cell parsers fail loudly on text they do not understand, so drift cannot slip by."""
    with pytest.raises(AssertionError):
        parse_series("kept for a while")
    with pytest.raises(AssertionError):
        parse_schedule("soon")
    with pytest.raises(AssertionError):
        parse_reasons("`timeout` or maybe not")
    assert parse_reasons("`unauthorized` / `forbidden`") == {"unauthorized", "forbidden"}
    assert parse_reasons("—") == frozenset()
