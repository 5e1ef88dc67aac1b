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
# The top-level modules every layer may use: settings, time, logging, the event loop, memory.
FOUNDATION = {"config", "clock", "calling_window", "logs", "logformat", "loops", "memory"}
# The entry points: the command line and its commands.
ENTRY = {"cli", "check"}
# Which layer may import which, top to bottom: the command line uses everything; the web side
# serves what exposition renders from what polling keeps of what the API answered; the demo
# stands apart (the command line starts it, it knows nothing of the exporter's inside).
MAY_IMPORT = {
    "entry": {"entry", "demo", "web", "exposition", "polling", "api", "foundation"},
    "web": {"web", "exposition", "polling", "api", "foundation"},
    "exposition": {"exposition", "polling", "api", "foundation"},
    "polling": {"polling", "api", "foundation"},
    "api": {"api", "foundation"},
    "demo": {"demo", "api", "foundation"},  # the simulator sends the declared record fields
    "foundation": {"foundation"},
}
# Third-party imports that would break the layers: (module or subpackage, forbidden package).
FORBIDDEN = {
    ("api", "prometheus_client"),
    ("polling", "prometheus_client"),
    ("exposition.metrics", "aiohttp"),
    ("exposition.render", "aiohttp"),
    ("polling", "aiohttp"),
    ("api.models", "aiohttp"),
}


def modules() -> dict[str, ast.Module]:
    """Every module of the package (but the entry points and package markers), parsed, by its
    dotted name inside the package (``cli``, ``api.client``)."""
    found: dict[str, ast.Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def layer(name: str) -> str:
    """The layer a module belongs to: its subpackage, or entry / foundation at the top level."""
    if "." in name:
        return name.split(".")[0]
    if name in ENTRY:
        return "entry"
    assert name in FOUNDATION, f"top-level module {name} is in no layer: add it to one"
    return "foundation"


def architecture_rows() -> dict[str, str]:
    """docs/architecture.md's module table: module's dotted name → its test file."""
    rows: dict[str, str] = {}
    pattern = r"\| `exporter/((?:\w+/)?\w+)\.py` \| [^|]+ \| `(tests/test_\w+\.py)` \|"
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(pattern, line)
        if match:
            rows[match.group(1).replace("/", ".")] = match.group(2)
    return rows


def imported(tree: ast.Module) -> set[str]:
    """Names of the modules ``tree`` imports at top level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "exporter" or node.module.startswith("exporter."):
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_module_has_its_row_and_its_test_file() -> None:
    """A newcomer finds each module's job and test file in docs/architecture.md; every test
    file named there exists, and each module's own test file is the one named after it where
    one exists."""
    rows = architecture_rows()
    assert sorted(rows) == sorted(modules())
    for module, test_file in rows.items():
        assert (ROOT / test_file).is_file(), test_file
        short = module.rsplit(".", 1)[-1]
        candidates = [f"tests/test_{module.replace('.', '_')}.py", f"tests/test_{short}.py"]
        own = next((c for c in candidates if (ROOT / c).is_file()), None)
        if own is not None:
            assert test_file == own, module


def test_the_table_parser_reads_the_rows_it_should() -> None:
    """The parser above is not vacuous: it finds the rows of well-known modules."""
    rows = architecture_rows()
    assert rows["polling.poller"] == "tests/test_poller.py"
    assert rows["exposition.metrics"] == "tests/test_metrics.py"
    assert rows["cli"] == "tests/test_cli.py"
    assert len(rows) > 20


def internal_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The package's own modules that ``tree`` imports, by dotted name inside the package."""
    found = set()
    for dep in imported(tree):
        name = dep.removeprefix("exporter.")
        if dep.startswith("exporter.") and name in known:
            found.add(name)
    return found


def test_layers_import_downwards_only() -> None:
    """Each layer imports only itself and the layers below it (entry → web → exposition →
    polling → api → foundation; the demo beside them), so the folders read as the architecture."""
    trees = modules()
    wrong = [
        f"{name} ({layer(name)}) imports {dep} ({layer(dep)})"
        for name, tree in trees.items()
        for dep in sorted(internal_imports(tree, set(trees)))
        if layer(dep) not in MAY_IMPORT[layer(name)]
    ]
    assert wrong == []


def test_the_layer_check_can_fail() -> None:
    """The layer rule refuses what it should: polling reaching up into web, api into polling."""
    assert "web" not in MAY_IMPORT[layer("polling.poller")]
    assert "polling" not in MAY_IMPORT[layer("api.client")]
    assert "exposition" not in MAY_IMPORT[layer("demo.simulator")]
    tree = ast.parse("from exporter.web import server\nfrom exporter.polling.state import X\n")
    assert internal_imports(tree, {"web.server", "polling.state"}) == {
        "web.server",
        "polling.state",
    }


def test_imports_run_one_way() -> None:
    """No import cycle between the package's modules, and no layer imports the third-party
    package it must not: the API and polling sides never prometheus_client, polling and the
    metric declarations never aiohttp."""
    trees = modules()
    graph = {name: internal_imports(tree, set(trees)) for name, tree in trees.items()}
    for name, tree in trees.items():
        tops = {dep.split(".")[0] for dep in imported(tree)}
        for importer, target in FORBIDDEN:
            if name == importer or name.startswith(importer + "."):
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
