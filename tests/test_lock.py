"""The lock files agree with pyproject.toml, and the image and the test gate install from them.

requirements.lock (what the package needs to run) and requirements-test.lock (that plus the test
extra) pin every distribution with its hashes; they are made by the command in their first lines,
which docs/development.md gives. A dependency added to or dropped from pyproject.toml without
making the locks again fails here, naming the command.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.dockerfile import parse_dockerfile

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEVELOPMENT = ROOT / "docs" / "development.md"
SELF = "dialnexa-exporter (pyproject.toml)"


@dataclass(frozen=True)
class Pin:
    """One entry of a lock file: an exact version, its environment marker, hashes, and why."""

    name: str
    version: str
    marker: str
    hashes: tuple[str, ...]
    via: frozenset[str]


def parse_lock(text: str) -> list[Pin]:
    """The entries of a `uv pip compile --generate-hashes` output."""
    pins: list[Pin] = []
    via: set[str] = set()
    entry = ""

    def close() -> None:
        nonlocal entry
        if not entry:
            return
        requirement, *hashes = re.split(r"\s+--hash=", entry.strip())
        spec, _, marker = requirement.partition(";")
        name, sep, pinned = spec.strip().partition("==")
        assert sep, f"not an exact pin: {requirement!r}"
        pins.append(
            Pin(canonicalize_name(name), pinned.strip(), marker.strip(), tuple(hashes), frozenset())
        )
        entry = ""

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            close()
            comment = stripped.lstrip("#").strip()
            if re.match(r"via(\s|$)", comment):
                via = set()
                comment = comment[3:].strip()
            if comment and pins and not line.startswith("#"):
                via.add(comment)
                last = pins[-1]
                pins[-1] = Pin(last.name, last.version, last.marker, last.hashes, frozenset(via))
            continue
        if not stripped:
            continue
        entry += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            close()
    close()
    return pins


def _requirements(extra: str | None) -> dict[str, Requirement]:
    listed = list(PYPROJECT["project"]["dependencies"])
    if extra is not None:
        listed += PYPROJECT["project"]["optional-dependencies"][extra]
    requirements = [Requirement(line) for line in listed]
    return {canonicalize_name(r.name): r for r in requirements}


def _command(lock: Path) -> str:
    lines = lock.read_text().splitlines()
    assert lines[1].startswith("#    uv pip compile "), lines[:2]
    return lines[1].removeprefix("#").strip()


@pytest.mark.parametrize(("lock", "extra"), [(LOCK, None), (TEST_LOCK, "test")], ids=str)
def test_lock_holds_exactly_pyprojects_dependencies_in_range(lock: Path, extra: str | None) -> None:
    """The lock's direct entries are pyproject's dependencies, each pinned inside its range."""
    wanted = _requirements(extra)
    pins = parse_lock(lock.read_text())
    direct = {pin.name for pin in pins if SELF in pin.via}
    again = f"make the locks again: {_command(lock)} (docs/development.md)"
    assert direct == set(wanted), (
        f"pyproject.toml and {lock.name} disagree: only in pyproject.toml "
        f"{sorted(set(wanted) - direct)}, only in the lock {sorted(direct - set(wanted))}; {again}"
    )
    for pin in pins:
        if pin.name in wanted:
            specifier = wanted[pin.name].specifier
            assert specifier.contains(pin.version, prereleases=True), (
                f"{lock.name} pins {pin.name}=={pin.version}, outside {specifier}; {again}"
            )


@pytest.mark.parametrize("lock", [LOCK, TEST_LOCK], ids=str)
def test_every_pin_is_exact_and_hashed(lock: Path) -> None:
    """Every entry names one version and at least one sha256 hash, as --require-hashes needs."""
    pins = parse_lock(lock.read_text())
    assert len(pins) >= len(_requirements(None))
    for pin in pins:
        Version(pin.version)
        assert pin.hashes, f"{pin.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin.name


def test_tests_run_against_the_versions_the_image_installs() -> None:
    """The test lock pins every runtime distribution at the runtime lock's version."""
    runtime = {(pin.name, pin.version, pin.marker) for pin in parse_lock(LOCK.read_text())}
    tested = {(pin.name, pin.version, pin.marker) for pin in parse_lock(TEST_LOCK.read_text())}
    assert runtime - tested == set()


def test_lock_commands_are_the_documented_ones() -> None:
    """docs/development.md gives the very commands that made the two locks."""
    text = DEVELOPMENT.read_text()
    for lock in (LOCK, TEST_LOCK):
        assert _command(lock) in text, f"docs/development.md lacks: {_command(lock)}"


def test_installed_runtime_dependencies_are_in_pyprojects_ranges() -> None:
    """What these tests run against satisfies pyproject's ranges (say which one does not)."""
    for name, requirement in _requirements(None).items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed: install requirements-test.lock")
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{name} {installed} is installed, outside {requirement.specifier}: "
            "install requirements-test.lock (tests/run.sh does)"
        )


def test_image_and_test_gate_install_from_the_locks() -> None:
    """The Dockerfile's build stage and tests/run.sh install the locks with --require-hashes."""
    _, stages = parse_dockerfile((ROOT / "Dockerfile").read_text())
    build = " ".join(stages[0].args("RUN"))
    assert "pip install --require-hashes --no-deps -r requirements.lock" in build
    assert "pip install --no-deps ." in build
    assert not re.search(r"pip install (?!--)", build), "an install that resolves on its own"
    gate = (ROOT / "tests" / "run.sh").read_text()
    assert "--require-hashes --no-deps -r requirements-test.lock" in gate
    assert re.search(r"--no-deps -e \.$", gate, re.MULTILINE)


def test_lock_reader_on_a_known_text() -> None:
    """The reader itself: markers, continued hash lines, one-line and listed `via` comments."""
    text = (
        "# This file was autogenerated by uv via the following command:\n"
        "#    uv pip compile pyproject.toml -o x.lock\n"
        "aiohttp==3.14.5 \\\n"
        "    --hash=sha256:" + "a" * 64 + " \\\n"
        "    --hash=sha256:" + "b" * 64 + "\n"
        "    # via dialnexa-exporter (pyproject.toml)\n"
        "uvloop==0.23.0 ; sys_platform != 'win32' \\\n"
        "    --hash=sha256:" + "c" * 64 + "\n"
        "    # via\n"
        "    #   dialnexa-exporter (pyproject.toml)\n"
        "    #   pytest-aiohttp\n"
    )
    aiohttp_pin, uvloop_pin = parse_lock(text)
    assert aiohttp_pin == Pin(
        "aiohttp", "3.14.5", "", ("sha256:" + "a" * 64, "sha256:" + "b" * 64), frozenset({SELF})
    )
    assert uvloop_pin.marker == "sys_platform != 'win32'"
    assert uvloop_pin.via == {SELF, "pytest-aiohttp"}
