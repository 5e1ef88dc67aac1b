"""Container image: the real image, built with podman on a Debian base and run as a cluster would.

A minimal Debian with Debian's python3 is made with mmdebstrap from the machine's own apt sources,
imported into podman storage that the test owns, and passed to the project's Dockerfile as
PYTHON_IMAGE; pip inside the build reaches the index the machine itself uses. The image then runs
with a read-only root filesystem, no capabilities and its own numeric user: the demo serves
/metrics and SIGTERM ends it with status 0, and nothing to build or install with is inside.
What the Dockerfile's text alone decides (its base, the build context, the chart's ids) is read
as data.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import exporter
from tests.container_host import (
    AptSource,
    PipForBuild,
    machine_apt_sources,
    machine_pip_config,
    os_codename,
    parse_deb822_sources,
    parse_one_line_sources,
    parse_pip_config_list,
    pip_for_build,
    release_sources,
    ulimit_flags,
)
from tests.container_podman import TOOLS, Podman, build_image, debian_rootfs, import_base
from tests.dockerfile import Stage, parse_dockerfile
from tests.helpers import load_yaml, wait_for_blocking
from tests.prometheus_server import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "helm" / "dialnexa-exporter" / "values.yaml"
BASE_IMAGE = "localhost/debian-python:test"
IMAGE = "localhost/dialnexa-exporter:test"


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


def test_final_stage_is_a_slim_python_base_shared_with_the_build(stages: list[Stage]) -> None:
    """Slim Python base, the same image as the build stage, so the venv's interpreter path holds."""
    final = stages[-1]
    assert re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim[\w.-]*", final.base), final.base
    assert final.base == stages[0].base


def test_image_user_matches_the_chart(stages: list[Stage]) -> None:
    """The Helm chart runs the pod with the image's uid and gid."""
    uid, gid = image_user(stages)
    values = load_yaml(CHART_VALUES.read_text())
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


# --- what the build borrows from the machine ------------------------------------------------


def test_apt_sources_of_both_formats_are_read_for_one_release() -> None:
    """One-line and deb822 entries; deb-src, disabled stanzas, other releases and file: dropped."""
    one_line = (
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb file:/srv/local bookworm main\n"
        "deb http://mirror.example/debian trixie main\n"
    )
    deb822 = (
        "Types: deb deb-src\nURIs: http://a.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/x.gpg\n"
        "\n"
        "Types: deb\nURIs: https://b.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Enabled: no\nTypes: deb\nURIs: http://c.example/debian\nSuites: bookworm\n"
        "Components: main\n"
        "\n"
        "Types: deb\nURIs: http://d.example/other\nSuites: bookwormish\nComponents: main\n"
    )
    sources = parse_one_line_sources(one_line) + parse_deb822_sources(deb822)
    assert [source.line() for source in release_sources(sources, "bookworm")] == [
        "deb http://mirror.example/debian bookworm main contrib",
        "deb http://a.example/debian bookworm main",
        "deb http://a.example/debian bookworm-updates main",
        "deb https://b.example/debian-security bookworm-security main",
    ]


def test_release_codename_comes_from_os_release() -> None:
    """VERSION_CODENAME, quoted or not; a file without one, or with a hostile one, is refused."""
    assert os_codename('NAME="Debian"\nVERSION_CODENAME=bookworm\n') == "bookworm"
    assert os_codename('VERSION_CODENAME="trixie"\n') == "trixie"
    for text in ("NAME=Debian\n", "VERSION_CODENAME=../../etc\n", "VERSION_CODENAME=a b\n"):
        with pytest.raises(ValueError, match="VERSION_CODENAME"):
            os_codename(text)


def test_pip_settings_for_the_build_keep_only_what_works_inside_it(tmp_path: Path) -> None:
    """Network settings pass (environment over install.* over global.*); local paths do not."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    listed = parse_pip_config_list(
        "global.index-url='https://global.example/simple'\n"
        "install.index-url='https://install.example/simple'\n"
        "global.extra-index-url='file:///srv/wheels https://extra.example/simple'\n"
        "global.find-links='/srv/wheels'\n"
        "global.constraint='/etc/constraints.txt'\n"
        f"global.cert='{ca}'\n"
        "not a setting line\n"
    )
    env = {"PIP_DEFAULT_TIMEOUT": "180", "PIP_TRUSTED_HOST": "a.example b.example", "HOME": "/x"}
    pip = pip_for_build(listed, env)
    assert pip.ca_bundle == ca
    assert pip.config == (
        "[global]\n"
        "index-url = https://install.example/simple\n"
        "extra-index-url = https://extra.example/simple\n"
        "trusted-host = a.example\n    b.example\n"
        "timeout = 180\n"
        "cert = /run/secrets/pip-ca\n"
    )
    overridden = pip_for_build(listed, {"PIP_INDEX_URL": "http://env.example/simple"})
    assert "index-url = http://env.example/simple\n" in overridden.config
    assert pip_for_build({}, {}) == PipForBuild("[global]\n", None)


def test_pip_settings_cannot_inject_into_the_build_pip_conf(tmp_path: Path) -> None:
    """A value with newlines stays one setting's values; control characters and a bad cert fail."""
    injected = pip_for_build(
        {}, {"PIP_TRUSTED_HOST": "a.example\n[global]\nindex-url=http://evil.example/"}
    )
    parsed = configparser.ConfigParser()
    parsed.read_string(injected.config)
    assert parsed.sections() == ["global"]
    assert dict(parsed["global"]) == {
        "trusted-host": "a.example\n[global]\nindex-url=http://evil.example/"
    }
    with pytest.raises(ValueError, match="trusted-host"):
        pip_for_build({}, {"PIP_TRUSTED_HOST": "a.example\x00"})
    with pytest.raises(ValueError, match="cert"):
        pip_for_build({}, {"PIP_CERT": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="cert"):
        pip_for_build({}, {"PIP_CERT": "/etc/ssl/x\x1b[2J.pem"})


def test_ulimit_flags_never_ask_for_more_than_this_process_has() -> None:
    """nofile and nproc are set explicitly, at most the process's own hard limits."""
    flags = ulimit_flags()
    assert [flag.split("=")[1] for flag in flags] == ["nofile", "nproc"]
    for flag, which in zip(flags, (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC), strict=True):
        soft, hard = (int(part) for part in flag.split("=")[2].split(":"))
        assert soft == hard > 0
        limit = resource.getrlimit(which)[1]
        assert limit == resource.RLIM_INFINITY or hard <= limit


# --- the real image ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """The image built from the working tree, and the podman storage that holds it."""

    podman: Podman
    name: str


def _require_container_tools() -> None:
    """Skip, saying why, where podman and mmdebstrap cannot run at all."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (tests/run.sh installs them with apt)")
    if os.geteuid() != 0:
        probe = subprocess.run(
            ["unshare", "--user", "--map-root-user", "true"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip("not root and no user namespaces: podman and mmdebstrap cannot run here")


def _machine_release() -> tuple[str, list[AptSource]]:
    """This machine's Debian release and the apt entries of it that mmdebstrap can use."""
    os_release = Path("/etc/os-release")
    codename = os_codename(os_release.read_text()) if os_release.is_file() else ""
    sources = release_sources(machine_apt_sources(Path("/etc/apt")), codename) if codename else []
    if not sources:
        pytest.skip("no http(s) apt source for this machine's release: mmdebstrap needs a mirror")
    return codename, sources


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    """Base from mmdebstrap, imported; the project's image built on it; all removed afterwards."""
    _require_container_tools()
    codename, sources = _machine_release()
    pip = pip_for_build(machine_pip_config(), os.environ)
    # A short path: podman's runtime sockets live under it, and socket paths are limited.
    state = Path(tempfile.mkdtemp(prefix="dnx-podman-"))
    podman = Podman(state)
    try:
        rootfs = state / "rootfs.tar"
        made = debian_rootfs(rootfs, codename, sources, state / "tmp")
        assert made.returncode == 0, made.stderr[-4000:]
        import_base(podman, rootfs, BASE_IMAGE)
        rootfs.unlink()
        secrets = state / "secrets"
        secrets.mkdir(mode=0o700)
        build_image(podman, ROOT, BASE_IMAGE, IMAGE, pip, secrets)
        yield BuiltImage(podman, IMAGE)
    finally:
        podman.remove_everything()


def _inspect(built: BuiltImage) -> dict[str, Any]:
    """`podman image inspect` of the built image."""
    config: dict[str, Any] = json.loads(built.podman.run("image", "inspect", built.name).stdout)[0]
    return config


def _run_flags(built: BuiltImage) -> list[str]:
    """How a cluster runs the image: read-only root (no tmpfs), no capabilities, its own user."""
    return [
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--user={_inspect(built)['Config']['User']}",
        "--pull=never",
        *ulimit_flags(),
    ]


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.timeout(900)
def test_image_runs_as_a_numeric_non_root_user(image: BuiltImage, stages: list[Stage]) -> None:
    """The built image's user is numeric uid:gid, not 0, the Dockerfile's (and so the chart's)."""
    config = _inspect(image)["Config"]
    match = re.fullmatch(r"(\d+):(\d+)", config["User"])
    assert match, config["User"]
    uid, gid = int(match.group(1)), int(match.group(2))
    assert uid != 0
    assert gid != 0
    assert (uid, gid) == image_user(stages)
    assert config["Entrypoint"] == ["dialnexa-exporter"]
    assert "10027/tcp" in config["ExposedPorts"]


# Run inside the image by its own python: what it contains, as the image's user sees it.
_INSIDE = r"""
import glob, importlib.util, json, os, re, sys
dirs = set(os.environ["PATH"].split(":")) | {"/bin", "/sbin", "/usr/bin", "/usr/sbin",
                                             "/usr/local/bin", "/usr/local/sbin"}
names = sorted({os.path.basename(p) for d in dirs for p in glob.glob(os.path.join(d, "*"))})
tool = re.compile(r"(.+-)?(cc|gcc|g\+\+|c\+\+|clang|clang\+\+|tcc|cpp|ld|as|make)(-[\d.]+)?")
try:
    open("/tmp/probe", "w").close()
    write_error = None
except OSError as error:
    write_error = error.errno
import exporter
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "python": os.path.realpath(sys.executable),
    "build_tools": [n for n in names if tool.fullmatch(n)],
    "pip_commands": [n for n in names if re.fullmatch(r"pip[\d.]*", n)],
    "pip_module": importlib.util.find_spec("pip") is not None,
    "setuptools_module": importlib.util.find_spec("setuptools") is not None,
    "exporter": exporter.__file__,
    "version": exporter.__version__,
    "source_tree": [p for p in ("/src", "/pyproject.toml", "/exporter") if os.path.exists(p)],
    "pip_settings": [p for p in ("/etc/pip.conf", "/run/secrets/pip-ca", "/run/secrets/pip.conf")
                     if os.path.exists(p)],
    "tmp_write_errno": write_error,
}))
"""


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.timeout(900)
def test_image_holds_no_compiler_pip_or_source_tree(image: BuiltImage) -> None:
    """Inside: Debian's python, the installed package only, no build tool, pip or pip settings."""
    flags = [*_run_flags(image), "--network=none", "--rm", "--entrypoint=python"]
    inside = image.podman.run("run", *flags, image.name, "-c", _INSIDE)
    seen = json.loads(inside.stdout)
    # Podman lists the primary group as a supplementary one too; no other group, root least.
    assert (seen["uid"], seen["gid"]) == (65532, 65532)
    assert seen["groups"] in ([], [65532])
    # Built on the Debian base, not the default image: the Dockerfile works with Debian's python.
    assert seen["python"].startswith("/usr/bin/python3")
    assert seen["build_tools"] == []
    assert seen["pip_commands"] == []
    assert not seen["pip_module"]
    assert not seen["setuptools_module"]
    assert seen["exporter"].startswith("/opt/venv/lib/")
    assert seen["version"] == exporter.__version__
    assert seen["source_tree"] == []
    assert seen["pip_settings"] == []
    # /tmp is world-writable, so only the read-only root filesystem refuses the write.
    assert seen["tmp_write_errno"] == 30  # EROFS

    pip = image.podman.run("run", *flags, image.name, "-m", "pip", "--version", check=False)
    assert pip.returncode != 0
    assert "No module named pip" in pip.stderr


def _process_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status of a process on this machine, as {field: value}."""
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return status


def _scrape(port: int) -> str | None:
    """The /metrics text once it holds campaign series, else None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return text if "\ndialnexa_campaign_info{" in text else None


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.timeout(900)
def test_demo_in_the_image_serves_metrics_and_exits_0_on_sigterm(image: BuiltImage) -> None:
    """The demo, run read-only as the image's user, serves campaign series; SIGTERM ends it, 0."""
    port = free_port()
    started = image.podman.run(
        "run",
        "--detach",
        *_run_flags(image),
        # The demo listens on loopback; host networking reaches it without a bridge plugin.
        "--network=host",
        image.name,
        "demo",
        f"--listen-address=127.0.0.1:{port}",
    )
    container = started.stdout.strip()

    def logs() -> str:
        shown = image.podman.run("logs", container, check=False)
        return shown.stdout + shown.stderr

    text = wait_for_blocking(
        lambda: _scrape(port), 120, "campaign series from the demo in the image", interval=0.2
    )
    samples = [sample for f in text_string_to_metric_families(text) for sample in f.samples]
    assert any(sample.name.startswith("dialnexa_campaign_") for sample in samples)
    assert any(
        sample.name == "dialnexa_exporter_build_info"
        and sample.labels.get("version") == exporter.__version__
        for sample in samples
    )

    # The serving process itself, seen from this machine: the image's ids, no capabilities.
    pid = int(image.podman.run("inspect", "--format={{.State.Pid}}", container).stdout)
    status = _process_status(pid)
    assert status["Uid"].split() == ["65532"] * 4
    assert status["Gid"].split() == ["65532"] * 4
    assert status["Groups"].split() in ([], ["65532"])
    assert int(status["CapEff"], 16) == 0
    assert "dialnexa-exporter" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()

    image.podman.run("kill", "--signal=TERM", container)
    try:
        waited = image.podman.run("wait", container, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s after SIGTERM:\n{logs()[-3000:]}")
    assert waited.stdout.strip() == "0", logs()
    assert "Traceback" not in logs()
    image.podman.run("rm", container)
