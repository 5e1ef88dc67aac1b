"""Container image: what can be proven without a Docker engine.

The Dockerfile is read as data (stages, USER, EXPOSE, what the final stage runs), and the package is
installed from the same files the Docker build context holds into a fresh virtualenv, whose entry
point then runs as the image's numeric non-root user from a read-only working directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import exporter

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "helm" / "dialnexa-exporter" / "values.yaml"
COMPILERS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev|cargo|rustc)\b"
)


@dataclass
class Stage:
    """One FROM ... block of the Dockerfile."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """Arguments of every instruction named ``keyword`` in this stage, in order."""
        return [rest for name, rest in self.instructions if name == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)),
                parts[0],
            )
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    """The Dockerfile's stages."""
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def image_user(stages: list[Stage]) -> tuple[int, int]:
    """(uid, gid) of the final stage's last USER instruction, which must be numeric."""
    users = stages[-1].args("USER")
    assert users, "the final stage sets no USER"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match, f"USER {users[-1]!r} is not numeric uid:gid"
    return int(match.group(1)), int(match.group(2))


def test_parser_reads_a_known_dockerfile() -> None:
    """The Dockerfile reader itself: stages, ARG substitution, continuations, comments."""
    text = (
        "ARG BASE=python:3.12-slim\nFROM ${BASE} AS build\n# note\nRUN a \\\n    && b\n"
        "FROM $BASE\nCOPY --from=build /x /x\nUSER 1:2\n"
    )
    global_args, parsed = parse_dockerfile(text)
    assert global_args == {"BASE": "python:3.12-slim"}
    assert [(s.base, s.name) for s in parsed] == [
        ("python:3.12-slim", "build"),
        ("python:3.12-slim", None),
    ]
    assert parsed[0].args("RUN") == ["a  && b"]
    assert image_user(parsed) == (1, 2)


def test_dockerfile_is_multi_stage(stages: list[Stage]) -> None:
    """A build stage installs; the final stage only copies its virtualenv from it."""
    assert len(stages) >= 2
    build_names = {s.name for s in stages[:-1] if s.name}
    copies_from = [
        re.search(r"--from=(\S+)", rest) for rest in stages[-1].args("COPY") if "--from" in rest
    ]
    assert copies_from, "the final stage copies nothing from a build stage"
    assert {m.group(1) for m in copies_from if m} <= build_names
    assert any("pip install" in run for s in stages[:-1] for run in s.args("RUN"))


def test_final_stage_is_a_slim_python_base_shared_with_the_build(stages: list[Stage]) -> None:
    """Slim Python base, the same image as the build stage, so the venv's interpreter path holds."""
    final = stages[-1]
    assert re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim[\w.-]*", final.base), final.base
    assert final.base == stages[0].base


def test_final_stage_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    """USER is numeric uid:gid, neither of them 0, so runAsNonRoot can be verified."""
    uid, gid = image_user(stages)
    assert uid != 0
    assert gid != 0


def test_final_stage_exposes_the_exporter_port(stages: list[Stage]) -> None:
    """EXPOSE 10027, the exporter's default listen port."""
    exposed = " ".join(stages[-1].args("EXPOSE")).split()
    assert "10027" in exposed or "10027/tcp" in exposed


def test_final_stage_installs_no_build_tools(stages: list[Stage]) -> None:
    """No compiler or package install in the final stage; the slim base ships none."""
    for run in stages[-1].args("RUN"):
        assert not COMPILERS.search(run), run
        assert "apt-get install" not in run
        assert "pip install" not in run
    assert not any("gcc" in rest for name, rest in stages[-1].instructions if name != "LABEL")


def test_entry_point_is_the_console_script(stages: list[Stage]) -> None:
    """ENTRYPOINT runs the `dialnexa-exporter` console script declared in pyproject."""
    assert stages[-1].args("ENTRYPOINT") == ['["dialnexa-exporter"]']
    assert 'dialnexa-exporter = "exporter.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_image_user_matches_the_chart(stages: list[Stage]) -> None:
    """The Helm chart runs the pod with the image's uid and gid."""
    uid, gid = image_user(stages)
    values = yaml.safe_load(CHART_VALUES.read_text())
    for context in (values["podSecurityContext"], values["securityContext"]):
        assert context["runAsUser"] == uid
        assert context["runAsGroup"] == gid


def context_entries() -> list[str]:
    """Paths re-included by the allow-list .dockerignore (everything else is excluded)."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore must start by excluding everything"
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def test_dockerignore_sends_only_what_the_build_copies(stages: list[Stage]) -> None:
    """The build context holds exactly the files the build stage COPYs: no .git, .venv or tests."""
    copied: set[str] = set()
    for stage in stages[:-1]:
        for rest in stage.args("COPY"):
            if "--from" in rest:
                continue
            *sources, _ = rest.split()
            copied.update(source.rstrip("/") for source in sources)
    assert set(context_entries()) == copied
    for path in copied:
        assert (ROOT / path).exists(), f"the build copies {path}, which is not in the repository"


# --- the package itself, installed and run as the image would run it --------------------------


def _as_user(uid: int, gid: int) -> list[str]:
    """Command prefix that drops to uid:gid (tests run as root here), or nothing if not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop to the image's user")
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def _interpreter_for(prefix: list[str]) -> str:
    """A Python >= 3.11 that the unprivileged user can run (this one may live under /root)."""
    candidates = [
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        *(shutil.which(name) for name in ("python3.12", "python3.11", "python3")),
        "/usr/bin/python3",
    ]
    for candidate in dict.fromkeys(c for c in candidates if c):
        probe = [candidate, "-c", "import sys, venv; assert sys.version_info >= (3, 11)"]
        result = subprocess.run([*prefix, *probe], capture_output=True, timeout=60, check=False)
        if result.returncode == 0:
            return candidate
    pytest.skip("no Python >= 3.11 with venv is runnable by an unprivileged user")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temporary directory the unprivileged user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="dialnexa-container-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for child in path.rglob("*"):
            if child.is_dir() and not child.is_symlink():
                child.chmod(0o755)
        shutil.rmtree(path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_entry_point_runs_unprivileged_from_a_read_only_dir(
    stages: list[Stage], shared_dir: Path
) -> None:
    """`pip install` of the build context into a fresh venv; `--help` runs as the image's user."""
    uid, gid = image_user(stages)
    prefix = _as_user(uid, gid)
    python = _interpreter_for(prefix)

    context = shared_dir / "context"
    context.mkdir()
    for entry in context_entries():
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, context / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / entry)

    venv = shared_dir / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", str(context)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    read_only = shared_dir / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(read_only),
        "LANG": "C.UTF-8",
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *argv],
            cwd=read_only,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # Like a read-only root filesystem: nothing under the venv is writable any more.
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)
    # The conditions really hold: the image's uid, and neither the cwd nor the venv is writable.
    probe = run(
        str(venv / "bin" / "python"),
        "-c",
        "import os, sysconfig; print(os.getuid(), os.getgid(), os.access('.', os.W_OK), "
        "os.access(sysconfig.get_path('purelib'), os.W_OK))",
    )
    assert probe.returncode == 0, probe.stderr
    expected = (uid, gid) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    assert probe.stdout.split() == [str(expected[0]), str(expected[1]), "False", "False"]

    helped = run(str(venv / "bin" / "dialnexa-exporter"), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "DIALNEXA_API_KEY" in helped.stdout
    assert "Traceback" not in helped.stderr

    version = run(str(venv / "bin" / "dialnexa-exporter"), "--version")
    assert version.returncode == 0, version.stderr
    assert exporter.__version__ in version.stdout + version.stderr
    assert list(read_only.iterdir()) == []
