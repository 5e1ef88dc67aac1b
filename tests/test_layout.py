"""The repository explains itself: every module is in docs/architecture.md with its test file,
imports run one way, and no class or function grows past a size a newcomer can read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "exporter"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_CLASS_LINES = 210  # "about 200"
MAX_FUNCTION_LINES = 55  # "about 50"
# Imports that would break the layers: (importing module, imported top-level package or module).
FORBIDDEN = {
    ("client", "prometheus_client"),
    ("budget", "prometheus_client"),
    ("metrics", "aiohttp"),
    ("render", "aiohttp"),
    ("models", "aiohttp"),
    ("state", "aiohttp"),
    ("outcome", "prometheus_client"),
    # The client is transport-agnostic (aiohttp lives in exporter.transport), and the built-in
    # HTTP/1.1 client stands on asyncio and llhttp alone.
    ("client", "aiohttp"),
    ("http1", "aiohttp"),
    ("http1", "exporter"),
}


def modules() -> dict[str, ast.Module]:
    """Every module of the package (but the entry points), parsed, by short name."""
    return {
        path.stem: ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem not in ("__init__", "__main__")
    }


def architecture_rows() -> dict[str, str]:
    """docs/architecture.md's module table: module short name → its test file."""
    rows: dict[str, str] = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\| `exporter/(\w+)\.py` \| [^|]+ \| `(tests/test_\w+\.py)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def imported(tree: ast.Module) -> set[str]:
    """Names of the modules ``tree`` imports at top level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "exporter":
                names.update(f"exporter.{alias.name}" for alias in node.names)
    return names


def test_every_module_has_its_row_and_its_test_file() -> None:
    """A newcomer finds each module's job and test file in docs/architecture.md; every test
    file named there exists, and each module's own test file is the one named after it where
    one exists."""
    rows = architecture_rows()
    assert sorted(rows) == sorted(modules())
    for module, test_file in rows.items():
        assert (ROOT / test_file).is_file(), test_file
        own = ROOT / "tests" / f"test_{module}.py"
        if own.is_file():
            assert test_file == f"tests/test_{module}.py", module


def test_the_table_parser_reads_the_rows_it_should() -> None:
    """The parser above is not vacuous: it finds the rows of well-known modules."""
    rows = architecture_rows()
    assert rows["poller"] == "tests/test_poller.py"
    assert rows["metrics"] == "tests/test_metrics.py"
    assert len(rows) > 20


def test_imports_run_one_way() -> None:
    """No import cycle between the package's modules, and the layer rules hold: the client
    and the budget never import prometheus_client, the metrics layer and the client never
    aiohttp, the HTTP/1.1 client nothing of the exporter's."""
    trees = modules()
    graph = {
        name: {
            dep.removeprefix("exporter.")
            for dep in imported(tree)
            if dep.startswith("exporter.") and dep.removeprefix("exporter.") in trees
        }
        for name, tree in trees.items()
    }
    for name, tree in trees.items():
        tops = {dep.split(".")[0] for dep in imported(tree)}
        for importer, target in FORBIDDEN:
            if name == importer:
                assert target not in tops, f"{name} imports {target}"

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = " -> ".join([*path[path.index(node) :], node])
            pytest.fail(f"import cycle: {cycle}")
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])

    for name in graph:
        visit(name, [])


def test_no_class_or_function_is_too_long() -> None:
    """Classes stay under about 200 lines and functions under about 50, package-wide."""
    too_long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            size = (node.end_lineno or 0) - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if size > limit:
                too_long.append(f"{name}.{node.name}: {size} lines")
    assert too_long == []


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/helpers.py (fixtures in conftest.py): test modules
    import from those, never from each other."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for dep in imported(ast.parse(path.read_text(encoding="utf-8"))):
            if re.fullmatch(r"tests\.(test_\w+|conftest)", dep):
                offenders.append(f"{path.name} imports {dep}")
        text = path.read_text(encoding="utf-8")
        offenders += [
            f"{path.name} imports tests.{m}"
            for m in re.findall(r"^from tests import (test_\w+)", text, re.M)
        ]
    assert offenders == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The size and import checks see what they should in a hand-made module."""
    long_function = "def f():\n" + "    x = 1\n" * 60
    tree = ast.parse(long_function + "import tests.test_rules\n")
    sizes = [
        (node.end_lineno or 0) - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    ]
    assert sizes == [61]
    assert "tests.test_rules" in imported(tree)
