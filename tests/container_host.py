"""What the container build borrows from the machine: its Debian release, apt mirrors, pip settings.

Nothing here names a mirror, an index or a path of any machine: everything is read at run time
from the machine's own apt sources, os-release, pip configuration and environment, and turned into
what mmdebstrap and the image build take. Only network settings travel; settings naming the
machine's own files (find-links, constraints, file:// indexes) cannot mean anything in a build.
"""

from __future__ import annotations

import ast
import re
import resource
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Where the image build's pip finds the CA bundle passed as the `pip-ca` build secret.
PIP_CA_IN_BUILD = "/run/secrets/pip-ca"

# pip settings that describe how to reach an index over the network, by their config-file name.
_NETWORK_SETTINGS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries")
_ALIASES = {"default-timeout": "timeout"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry: a mirror URI, one suite and its components."""

    uri: str
    suite: str
    components: tuple[str, ...]

    def line(self) -> str:
        """The one-line sources.list form, which mmdebstrap takes as a mirror argument."""
        return " ".join(("deb", self.uri, self.suite, *self.components))


def os_codename(os_release: str) -> str:
    """VERSION_CODENAME of an os-release file's text; ValueError when it has none."""
    for line in os_release.splitlines():
        key, _, raw = line.partition("=")
        if key.strip() == "VERSION_CODENAME":
            name = raw.strip().strip("\"'")
            if re.fullmatch(r"[a-z][a-z0-9-]*", name):
                return name
    raise ValueError("os-release names no VERSION_CODENAME")


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] uri suite component...` lines; deb-src, comments and options are dropped."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "deb":
            sources.append(AptSource(fields[1], fields[2], tuple(fields[3:])))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Stanzas of a .sources file, one AptSource per (URI, suite); disabled stanzas are dropped."""
    sources: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            sources.extend(
                AptSource(uri, suite, components) for suite in fields.get("suites", "").split()
            )
    return sources


def machine_apt_sources(etc_apt: Path) -> list[AptSource]:
    """Every enabled `deb` entry of the machine's sources.list and sources.list.d."""
    sources: list[AptSource] = []
    single = etc_apt / "sources.list"
    if single.is_file():
        sources.extend(parse_one_line_sources(single.read_text()))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources.extend(parse_one_line_sources(path.read_text()))
            elif path.suffix == ".sources":
                sources.extend(parse_deb822_sources(path.read_text()))
    return sources


def release_sources(sources: Iterable[AptSource], codename: str) -> list[AptSource]:
    """The entries of one release (its suite and its -updates/-security suites), http(s) only."""
    chosen: list[AptSource] = []
    for source in sources:
        of_release = source.suite == codename or source.suite.startswith(codename + "-")
        if of_release and re.match(r"https?://", source.uri) and source not in chosen:
            chosen.append(source)
    return chosen


@dataclass(frozen=True)
class PipForBuild:
    """The pip.conf text and CA bundle (if any) that the image build receives as secrets."""

    config: str
    ca_bundle: Path | None


def _is_network_url(value: str) -> bool:
    return re.match(r"https?://", value, re.IGNORECASE) is not None


def pip_for_build(config: Mapping[str, str], env: Mapping[str, str]) -> PipForBuild:
    """Network settings of the machine's pip (config list, then PIP_* environment, which wins).

    ``config`` is `pip config list` as {"section.key": value}; install.* overrides global.*.
    Indexes that are not http(s) are dropped; the cert becomes the `pip-ca` secret.
    """
    merged: dict[str, str] = {}
    for section in ("global", "install"):
        for name, value in config.items():
            prefix, _, key = name.partition(".")
            if prefix == section:
                merged[_ALIASES.get(key, key)] = value
    for name, value in env.items():
        if name.startswith("PIP_"):
            key = name[4:].lower().replace("_", "-")
            merged[_ALIASES.get(key, key)] = value
    lines = ["[global]"]
    for key in _NETWORK_SETTINGS:
        # Whitespace separates a setting's values; each value is written on its own line, so a
        # value can never start a new setting or section of the pip.conf.
        values = merged.get(key, "").split()
        if any(_CONTROL.search(value) for value in values):
            raise ValueError(f"pip setting {key} holds control characters")
        if key in ("index-url", "extra-index-url"):
            values = [value for value in values if _is_network_url(value)]
        if key == "index-url":
            values = values[:1]
        if values:
            lines.append(f"{key} = " + "\n    ".join(values))
    cert = merged.get("cert", "")
    if _CONTROL.search(cert):
        raise ValueError("pip setting cert holds control characters")
    ca_bundle = Path(cert) if cert else None
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise ValueError("pip setting cert names no readable file")
        lines.append(f"cert = {PIP_CA_IN_BUILD}")
    return PipForBuild("\n".join(lines) + "\n", ca_bundle)


def parse_pip_config_list(text: str) -> dict[str, str]:
    """`pip config list` output (`section.key='value'` lines) as a dict."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        if not sep or "." not in name:
            continue
        value = ast.literal_eval(raw.strip())
        if isinstance(value, str):
            config[name.strip()] = value
    return config


def machine_pip_config() -> dict[str, str]:
    """The configuration files' settings of the pip that runs these tests."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return parse_pip_config_list(listed.stdout)


def ulimit_flags() -> list[str]:
    """`--ulimit` flags for nofile and nproc: enough for the exporter, within this machine's limits.

    Podman's defaults ask the runtime for more than such a machine allows, and are refused; so
    can values near the machine's own nproc limit (the runtime may cap it lower still). Lowering
    a limit is always allowed, and the exporter needs neither thousands of processes nor a
    million descriptors.
    """
    flags: list[str] = []
    for name, which, wanted in (
        ("nofile", resource.RLIMIT_NOFILE, 65536),
        ("nproc", resource.RLIMIT_NPROC, 4096),
    ):
        _, hard = resource.getrlimit(which)
        limit = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        flags.append(f"--ulimit={name}={limit}:{limit}")
    return flags
