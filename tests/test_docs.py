"""The documentation, checked against the code, the tests and itself.

- docs/failures.md's failure table: every row must be exercised by a fault-matrix case
  (tests/test_fault_matrix.py's MATRIX or tests/test_exporter.py's FAILURES), and every cell must
  say what those cases assert, with only the reasons docs/metrics.md lists and the exporter emits:
  the table cannot drift from the tests.
- Links: every relative link in README.md and docs/*.md (and every link into this repository's
  own GitHub tree) leads to an existing file and, with an anchor, to an existing heading.
- The index: every docs/ page is listed in README.md and docs/README.md.
- The quick start: the README promises exactly the project's two commands, CI runs the second,
  and every command the README shows works in a fresh shell after the quick start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.demo.simulator import Fault, FaultKind
from exporter.polling.outcome import ERROR_REASONS
from tests.fault_tables import (
    FAILURES,
    MATRIX,
    README_4XX,
    README_5XX,
    README_CONNECTION,
    README_KEY_REJECTED,
    README_NOT_JSON,
    README_REDIRECT,
    README_TIMEOUT,
    README_TOO_BIG,
    README_WRONG_ID,
    README_WRONG_TYPES,
    Outcome,
    Schedule,
    Series,
)
from tests.helpers import ROOT

DOCS = ROOT / "docs"
FAILURES_DOC = DOCS / "failures.md"
HEADING = "## The failure table"
COLUMNS = (
    "upstream does",
    "`campaign_up`",
    "`reason` counted",
    "the campaign's data series",
    "next fetch",
)
# The reason set of the contract (docs/metrics.md, dialnexa_exporter_campaign_errors_total), typed
# out here as well so that a change to it shows up in this file's diff.
CONTRACT_REASONS = frozenset(
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
    """One row of the failure table, its cells parsed."""

    case: str
    up: int
    reasons: frozenset[str]
    series: Series
    schedule: Schedule


@dataclass(frozen=True)
class Case:
    """One fault-matrix test case and the outcome it asserts."""

    source: str
    row_key: str
    outcome: Outcome
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


def parse_series(cell: str) -> Series:
    """What the data series column says."""
    if cell == "dropped at once":
        return Series.DROPPED
    if cell.startswith("kept until `STALE_AFTER`"):
        return Series.KEPT
    if cell.startswith("updated"):
        return Series.UPDATED
    raise AssertionError(f"unknown data series cell {cell!r}")


def parse_schedule(cell: str) -> Schedule:
    """What the next fetch column says."""
    if "Retry-After" in cell:
        return Schedule.RETRY_AFTER
    if cell == "backoff":
        return Schedule.BACKOFF
    if cell == "normal" or cell.startswith("after the poll interval"):
        return Schedule.NORMAL
    raise AssertionError(f"unknown next fetch cell {cell!r}")


def table_under(heading: str, columns: tuple[str, ...]) -> list[list[str]]:
    """The body rows of the first table under ``heading`` in docs/failures.md, whose header
    must be ``columns``."""
    lines = FAILURES_DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    table: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(split_row(line))
        elif table:
            break  # the first table ended
    assert table, f"no table under {heading!r}"
    header, separator, *body = table
    assert tuple(header) == columns
    assert all(set(cell) <= set("-: ") for cell in separator)
    return body


def failure_table() -> list[TableRow]:
    """The rows of the table under docs/failures.md's "The failure table" heading."""
    body = table_under(HEADING, COLUMNS)
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


def row_key_of(fault: Fault) -> str:
    """The failure-table row a tests/test_exporter.py FAILURES entry exercises."""
    if fault.kind is FaultKind.STATUS:
        if fault.status in (401, 403):
            return README_KEY_REJECTED
        if fault.status >= 500:
            return README_5XX
        assert 400 <= fault.status < 500, fault
        assert fault.status not in (404, 429), fault
        return README_4XX
    keys = {
        FaultKind.SLOW: README_TIMEOUT,
        FaultKind.DRIP: README_TIMEOUT,
        FaultKind.BAD_JSON: README_NOT_JSON,
        FaultKind.EMPTY: README_NOT_JSON,
        FaultKind.HTML: README_NOT_JSON,
        FaultKind.ARRAY: README_NOT_JSON,
        FaultKind.WRONG_ID: README_WRONG_ID,
        FaultKind.BODY: README_WRONG_TYPES,  # the FAILURES bodies carry wrong field values
        FaultKind.HUGE: README_TOO_BIG,
        FaultKind.REDIRECT: README_REDIRECT,
        FaultKind.DISCONNECT: README_CONNECTION,
    }
    return keys[fault.kind]


def all_cases() -> list[Case]:
    """Every fault-matrix case with the table row it belongs to and what it asserts."""
    cases = [
        Case(f"test_fault_matrix[{row.id}]", row.readme, row.outcome, asserts_schedule=True)
        for row in MATRIX
    ]
    for fault, reason in FAILURES:
        # test_failure_keeps_last_values_then_drops_them_when_stale: up 0, the reason counted,
        # data kept until STALE_AFTER; it does not look at the next fetch time.
        outcome = Outcome(0, frozenset({reason}), Series.KEPT, Schedule.BACKOFF)
        source = f"test_exporter.FAILURES[{fault.kind.value}-{fault.status}]"
        cases.append(Case(source, row_key_of(fault), outcome, asserts_schedule=False))
    return cases


def row_for(key: str, table: list[TableRow]) -> TableRow:
    """The one table row whose first cell starts with ``key``."""
    found = [row for row in table if row.case.startswith(key)]
    assert len(found) == 1, f"{key!r} matches {len(found)} table rows"
    return found[0]


@pytest.fixture(scope="module")
def table() -> list[TableRow]:
    """The parsed failure table."""
    return failure_table()


def documented_reasons() -> frozenset[str]:
    """The reasons docs/metrics.md lists in the row of dialnexa_exporter_campaign_errors_total."""
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    prefix = "| `dialnexa_exporter_campaign_errors_total"
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, rows
    meaning = split_row(rows[0])[-1]
    assert "`reason` is one of" in meaning, meaning
    return frozenset(re.findall(r"`([a-z_]+)`", meaning.split("`reason` is one of", 1)[1]))


def test_contract_reasons_are_the_exporters_reasons() -> None:
    """The reasons docs/metrics.md lists are exactly the ones the exporter can emit."""
    assert documented_reasons() == CONTRACT_REASONS
    assert frozenset(ERROR_REASONS) == CONTRACT_REASONS
    assert len(ERROR_REASONS) == len(CONTRACT_REASONS)


def test_every_reason_cell_names_only_design_reasons(table: list[TableRow]) -> None:
    """Each row's `reason` cell lists reasons from the contract's fixed set, and nothing else."""
    assert len(table) >= 10
    for row in table:
        assert row.reasons <= CONTRACT_REASONS, (row.case, row.reasons - CONTRACT_REASONS)
        # A reason is counted exactly when the fetch failed.
        assert (row.up == 0) == bool(row.reasons), row.case


def test_every_table_row_is_exercised(table: list[TableRow]) -> None:
    """Every table row is the target of at least one fault-matrix case."""
    cases = all_cases()
    for row in table:
        assert any(row.case.startswith(case.row_key) for case in cases), row.case


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
        mine = [case for case in cases if row.case.startswith(case.row_key)]
        expected = frozenset().union(*(case.outcome.reasons for case in mine))
        assert row.reasons == expected, (row.case, row.reasons, expected)


@pytest.mark.parametrize("case", all_cases(), ids=lambda case: case.source)
def test_table_row_says_what_the_case_asserts(table: list[TableRow], case: Case) -> None:
    """campaign_up, reason, data series and next fetch of the case's table row match the test."""
    row = row_for(case.row_key, table)
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


HOSTILE_HEADING = "## Hostile clients"
HOSTILE_COLUMNS = ("a client does", "the exporter does", "test")
UPSTREAM_HEADING = "## A broken upstream, byte by byte"
UPSTREAM_COLUMNS = ("the API sends", "the client does", "test")
STOPPED_HEADING = "## Polling stopped or behind"
STOPPED_COLUMNS = ("polling stops because", "the exporter shows", "test")
RATE_LIMIT_HEADING = "## Rate-limit answers"
RATE_LIMIT_COLUMNS = ("the rate-limit headers say", "the exporter does", "test")


@pytest.mark.parametrize(
    ("heading", "columns", "at_least"),
    [
        (HOSTILE_HEADING, HOSTILE_COLUMNS, 15),
        (UPSTREAM_HEADING, UPSTREAM_COLUMNS, 10),
        (STOPPED_HEADING, STOPPED_COLUMNS, 4),
        (RATE_LIMIT_HEADING, RATE_LIMIT_COLUMNS, 8),
    ],
    ids=["hostile-clients", "broken-upstream", "polling-stopped", "rate-limit-answers"],
)
def test_every_hostile_client_row_names_a_test_that_exists(
    heading: str, columns: tuple[str, ...], at_least: int
) -> None:
    """Each attack in the hostile-clients and broken-upstream tables names the test that mounts
    it, and that test exists (a renamed or removed test fails here, so the table cannot promise
    untested behaviour)."""
    rows = table_under(heading, columns)
    assert len(rows) >= at_least
    for does, answer, test in rows:
        assert does, answer
        assert answer, does
        match = re.fullmatch(r"`(tests/test_\w+\.py)::(test_\w+)`", test)
        assert match, test
        source = (ROOT / match.group(1)).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {match.group(2)}\(", source, re.M), test


# --- links ------------------------------------------------------------------------------------

# Links into this repository's own tree on GitHub (runbook URLs, links from the dashboard) are
# checked like relative ones: they break the same way when a file or heading moves.
OWN_TREE = "https://github.com/dialnexa/dialnexa-exporter/blob/main/"
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING_LINE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), with an optional "title"; text may hold one level of [].
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")


def markdown_files() -> list[Path]:
    """README.md and every page of docs/."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks, code spans blanked out."""
    lines = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(CODE_SPAN.sub(lambda match: "x" * len(match.group(0)), line))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lowercased, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags vanish
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> frozenset[str]:
    """Every heading anchor of a markdown text; repeated headings get -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = HEADING_LINE.match(line)
        if fenced or not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(text: str) -> list[str]:
    """Every link target in a markdown text's prose (inline links, images, definitions)."""
    targets = []
    for line in prose_lines(text):
        targets.extend(match.group(1) for match in INLINE_LINK.finditer(line))
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
    return targets


def link_problem(target: str, page: Path, root: Path) -> str | None:
    """Why ``target``, linked from ``page``, leads nowhere inside ``root``; None when it is fine."""
    if target.startswith(OWN_TREE):
        path_part, _, anchor = target.removeprefix(OWN_TREE).partition("#")
        file = root / path_part
    elif re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return None  # another site, or mailto:
    else:
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part) if path_part else page
    resolved = file.resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"{target}: outside the repository"
    if not resolved.exists():
        return f"{target}: no such file"
    if anchor and resolved.suffix != ".md":
        return f"{target}: anchor into a file that is not markdown"
    if anchor and anchor not in anchors(resolved.read_text(encoding="utf-8")):
        return f"{target}: no heading with that anchor"
    return None


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The links of ``page`` that lead to no file inside ``root`` or to no heading there."""
    found = (link_problem(target, page, root) for target in links(page.read_text(encoding="utf-8")))
    return [problem for problem in found if problem is not None]


# Where the project links to its own documentation from outside it: the rules' runbook_url
# annotations, the dashboard's links, the chart's notes.
LINKING_FILES = ("exporter", "helm", "grafana", "tests/rules")
LINKING_SUFFIXES = frozenset({".yml", ".yaml", ".json", ".tpl", ".txt", ".py"})
OWN_TREE_URL = re.compile(re.escape(OWN_TREE) + r"[^\s\"'<>)\]]*")


def own_tree_links_outside_docs() -> dict[str, list[str]]:
    """Every own-tree URL in the rules, dashboards, chart and package, by file."""
    found: dict[str, list[str]] = {}
    for top in LINKING_FILES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in LINKING_SUFFIXES and path.is_file():
                urls = OWN_TREE_URL.findall(path.read_text(encoding="utf-8", errors="replace"))
                if urls:
                    found[path.relative_to(ROOT).as_posix()] = urls
    return found


def test_links_into_the_docs_from_rules_and_dashboards_lead_somewhere() -> None:
    """runbook_url annotations and dashboard links name an existing docs file and heading."""
    found = own_tree_links_outside_docs()
    assert "grafana/dialnexa-campaigns.json" in found, sorted(found)
    assert "helm/dialnexa-exporter/files/dialnexa-exporter.rules.yml" in found, sorted(found)
    problems = {
        name: [problem for url in urls if (problem := link_problem(url, ROOT, ROOT))]
        for name, urls in found.items()
    }
    assert {name: broken for name, broken in problems.items() if broken} == {}


@pytest.mark.parametrize(
    "page", markdown_files(), ids=lambda page: page.relative_to(ROOT).as_posix()
)
def test_every_link_leads_somewhere(page: Path) -> None:
    """Every relative link of the page names an existing file and, with #anchor, a heading."""
    assert links(page.read_text(encoding="utf-8")), "no link found: is the parser blind?"
    assert broken_links(page) == []


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    """The link check reports missing files and headings, escapes and bad own-tree links."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "other.md").write_text("# Other page\n\n## Same\n\n## Same\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page: one\n\n"
        "[ok](../other.md#other-page) [ok](../other.md#same-1) [ok](#page-one) [web](https://x.org/a)\n"
        "[gone](missing.md) [no heading](../other.md#nothing) [up](../../etc/passwd)\n"
        f"[own ok]({OWN_TREE}other.md#same) [own bad]({OWN_TREE}docs/page.md#nope)\n"
        "`[in code](missing-too.md)`\n\n"
        "```\n[fenced](missing-three.md)\n# not a heading\n```\n\n"
        "[def]: ../absent.md\n",
        encoding="utf-8",
    )
    assert broken_links(page, tmp_path) == [
        "missing.md: no such file",
        "../other.md#nothing: no heading with that anchor",
        "../../etc/passwd: outside the repository",
        f"{OWN_TREE}docs/page.md#nope: no heading with that anchor",
        "../absent.md: no such file",
    ]


def test_slugs_follow_githubs_rules() -> None:
    """Anchors: lowercase, punctuation and code ticks dropped, spaces to -, repeats numbered."""
    assert (
        slug("Protecting /metrics (TLS and basic auth)") == "protecting-metrics-tls-and-basic-auth"
    )
    assert slug("DialNexaCampaignPaused") == "dialnexacampaignpaused"
    assert slug("Without Kubernetes: loading the rules") == "without-kubernetes-loading-the-rules"
    assert slug("The `campaign_up` gauge") == "the-campaign_up-gauge"
    assert slug("Kubernetes, sharding and the [image](x.md)") == "kubernetes-sharding-and-the-image"
    assert anchors("# A\n## A\n```\n# A\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_runbook_entries_keep_the_lowercased_alert_name_as_anchor() -> None:
    """Every `### <AlertName>` of docs/alerts.md' runbook has the anchor runbook URLs use."""
    text = (DOCS / "alerts.md").read_text(encoding="utf-8")
    runbook = text.split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    alerts = re.findall(r"^### (DialNexa\w+)$", runbook, re.M)
    assert len(alerts) >= 9, alerts
    assert {alert.lower() for alert in alerts} <= anchors(text)


# --- the index ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", ["README.md", "docs/README.md"])
def test_every_docs_page_is_listed(index: str) -> None:
    """A new docs/ page must be added to the README's Documentation list and to docs' index."""
    page = ROOT / index
    listed = {
        (page.parent / target.partition("#")[0]).resolve()
        for target in links(page.read_text(encoding="utf-8"))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)
    }
    pages = {path.resolve() for path in DOCS.glob("*.md") if path.name != "README.md"}
    assert len(pages) >= 9
    assert pages <= listed, sorted(path.name for path in pages - listed)


# --- the quick start ----------------------------------------------------------------------------

DEMO_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/dialnexa-exporter demo"
)
TEST_COMMAND = "tests/run.sh"
# Programs the quick start installs into .venv: a fresh shell has them only as .venv/bin/<name>.
VENV_PROGRAMS = frozenset({"dialnexa-exporter", "pip", "pip3", "pytest", "ruff", "mypy", "python"})


def shell_blocks(text: str) -> list[list[str]]:
    """The commands of each ```sh block: continuation lines joined, comments and blanks dropped."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None:
            if re.match(r"^```(sh|bash|shell|console)\s*$", line):
                current = []
        elif line.startswith("```"):
            joined = "\n".join(current).replace("\\\n", " ")
            commands = [re.sub(r"(^|\s)#.*$", "", cmd).strip() for cmd in joined.splitlines()]
            blocks.append([cmd for cmd in commands if cmd])
            current = None
        else:
            current.append(line)
    return blocks


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command of a command line, VAR=value assignments dropped."""
    result = []
    for simple in re.split(r"&&|\|\||[;|]", command):
        words = [word for word in simple.split() if not re.match(r"^[A-Za-z_]\w*=", word)]
        if words:
            result.append(words)
    return result


def fresh_shell_problems(text: str) -> list[str]:
    """Commands in ```sh blocks that would not run in a fresh shell after the quick start."""
    problems = []
    for block in shell_blocks(text):
        for command in block:
            shown = " ".join(command.split())
            for words in simple_commands(command):
                program = words[0]
                if program in VENV_PROGRAMS:
                    problems.append(f"{shown}: {program} is .venv/bin/{program}")
                elif program == "python3" and words[1:3] != ["-m", "venv"]:
                    problems.append(f"{shown}: python3 outside .venv has no dependencies")
    return problems


def quick_start() -> str:
    """The text of the README's Quick start section, up to the next heading of its level."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", readme, re.M | re.S)
    assert match, "README.md has no '## Quick start' section"
    return match.group(1)


def test_quick_start_is_the_two_promised_commands() -> None:
    """The README's first command block is exactly the demo command and the test command."""
    blocks = shell_blocks(quick_start())
    assert blocks, "no sh block in the quick start"
    assert blocks[0] == [DEMO_COMMAND, TEST_COMMAND]


def test_quick_start_says_how_long_the_tests_take_and_what_they_install() -> None:
    """The quick start names the time and every Debian package tests/run.sh may install."""
    text = " ".join(quick_start().split())
    assert "a few minutes" in text
    run_sh = (ROOT / "tests" / "run.sh").read_text(encoding="utf-8")
    packages = set(re.findall(r"^need \S+ (\S+)$", run_sh, re.M))
    assert len(packages) >= 6, packages
    for package in packages:
        assert f"`{package}`" in text, package
    assert "`.venv`" in text


def test_ci_runs_the_test_command() -> None:
    """.ci/run runs exactly tests/run.sh, which exists and is executable."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert f"exec {TEST_COMMAND}" in commands, commands
    run_sh = ROOT / TEST_COMMAND
    assert run_sh.is_file()
    assert run_sh.stat().st_mode & 0o111


@pytest.mark.parametrize(
    "page", markdown_files(), ids=lambda page: page.relative_to(ROOT).as_posix()
)
def test_commands_work_in_a_fresh_shell(page: Path) -> None:
    """Shown commands run the exporter, pip and the tools through .venv/bin, not a bare PATH."""
    assert fresh_shell_problems(page.read_text(encoding="utf-8")) == []


def test_fresh_shell_check_finds_bare_commands() -> None:
    """The check flags bare dialnexa-exporter, pip and python, and accepts the venv forms."""
    text = (
        "```sh\n"
        "pip install .   # bare\n"
        "export DIALNEXA_API_KEY=x\n"
        "FOO=1 dialnexa-exporter demo \\\n  --prometheus\n"
        ".venv/bin/dialnexa-exporter | grep x && python3 -m venv .venv\n"
        "python3 -m pytest\n"
        "```\n"
        "```yaml\npip: not a command\n```\n"
    )
    assert fresh_shell_problems(text) == [
        "pip install .: pip is .venv/bin/pip",
        "FOO=1 dialnexa-exporter demo --prometheus: "
        "dialnexa-exporter is .venv/bin/dialnexa-exporter",
        "python3 -m pytest: python3 outside .venv has no dependencies",
    ]
