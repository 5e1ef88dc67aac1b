"""Podman for the tests: the Debian base and the image, with every byte in one temp directory.

Storage, runtime state, network configuration, events and temp files live under a directory the
test owns and deletes. Podman as root otherwise keeps a blob-info cache under /var/lib/containers
when it commits an image (import, build); those two commands run in a private mount namespace
where that directory is the test's own.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.container_host import AptSource, PipForBuild, ulimit_flags

# The system-wide blob-info cache of root podman (containers/image), hidden during commits.
_SYSTEM_CACHE = Path("/var/lib/containers")
# Debian packages of the base image: the interpreter, its venv module, and `python` itself.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3")
# Nothing in the image reads documentation or translations: removed once everything is installed,
# which makes the tarball a fifth smaller. (dpkg path-exclude options would do the same, but make
# mmdebstrap pipe every package through a filter: extraction then takes three times as long.)
_DROP_DOCS = (
    'rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/usr/share/locale/*'
)
TOOLS = ("podman", "runc", "mmdebstrap")


class Podman:
    """The podman command of one test run: storage, state and caches under ``state``."""

    def __init__(self, state: Path) -> None:
        runc = shutil.which("runc")
        if runc is None:
            raise RuntimeError("runc not on PATH: install the Debian package `runc`")
        self.state = state
        self._dirs = {
            name: state / name
            for name in ("storage", "run", "tmp", "net", "cache", "runc-state", "bin")
        }
        for path in self._dirs.values():
            path.mkdir(mode=0o700, exist_ok=True)
        self._created_system_cache = False
        self._global = [
            "podman",
            f"--root={self._dirs['storage']}",
            f"--runroot={self._dirs['run']}",
            f"--tmpdir={self._dirs['tmp']}",
            f"--network-config-dir={self._dirs['net']}",
            # crun, the default runtime, fails on this kind of machine's cgroups; runc works.
            f"--runtime={self._runc_with_own_state(runc)}",
            # No systemd to ask for cgroups, and no journald to take events.
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]
        self._env = {**os.environ, "TMPDIR": str(self._dirs["tmp"])}

    def _runc_with_own_state(self, runc: str) -> Path:
        """runc with its state under ours: it keeps it in /run/runc unless told otherwise.

        A wrapper rather than --runtime-flag: podman does not pass runtime flags on to the
        cleanup command conmon runs when a container exits, nor does `podman build`.
        """
        wrapper = self._dirs["bin"] / "runc"
        state = shlex.quote(str(self._dirs["runc-state"]))
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(runc)} --root {state} "$@"\n')
        wrapper.chmod(0o700)
        return wrapper

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`podman <args>`, output captured; AssertionError with its output when it fails."""
        return self._execute([*self._global, *args], timeout, check)

    def commit(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """`podman <args>` for commands that write an image (import, build), see the docstring."""
        if os.geteuid() != 0:
            # Rootless podman keeps that cache under XDG_DATA_HOME, which is ours already.
            return self.run(*args, timeout=timeout)
        if not _SYSTEM_CACHE.exists():
            _SYSTEM_CACHE.mkdir(mode=0o700)
            self._created_system_cache = True
        private = [
            "unshare",
            "--mount",
            "--propagation=private",
            "sh",
            "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"',
            "sh",
            str(self._dirs["cache"]),
            str(_SYSTEM_CACHE),
        ]
        return self._execute([*private, *self._global, *args], timeout, check=True)

    def _execute(
        self, argv: Sequence[str], timeout: float, check: bool
    ) -> subprocess.CompletedProcess[str]:
        env = self._env
        if os.geteuid() != 0:
            env = {**env, "XDG_DATA_HOME": str(self._dirs["cache"])}
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv[:8])} ... exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def remove_everything(self) -> None:
        """Every container and image of this storage, then the directory itself."""
        self.run("rm", "--all", "--force", "--time=0", check=False)
        self.run("rmi", "--all", "--force", check=False)
        # The overlay driver bind-mounts its own directory (to make it a private mount) and
        # leaves that mount in place when podman exits.
        for mount_point in sorted(_mounts_under(self.state), key=len, reverse=True):
            subprocess.run(["umount", mount_point], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        if self._created_system_cache:
            # Left only if something else put a file there meanwhile.
            with contextlib.suppress(OSError):
                _SYSTEM_CACHE.rmdir()


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` in this process's mount namespace."""
    inside: list[str] = []
    prefix = str(directory).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        mount_point = line.split(" ")[4].encode().decode("unicode_escape")
        if mount_point.startswith(prefix) or mount_point == prefix.rstrip("/"):
            inside.append(mount_point)
    return inside


def debian_rootfs(
    out: Path, codename: str, sources: Sequence[AptSource], tmp: Path
) -> subprocess.CompletedProcess[str]:
    """A minimal Debian root filesystem tarball with Debian's python3 (mmdebstrap)."""
    argv = [
        "mmdebstrap",
        "--quiet",
        # Essential packages and what the image needs, without apt (nothing installs at run time)
        # and without recommends (mmdebstrap's default): a quarter faster than --variant=apt.
        "--variant=essential",
        f"--include={','.join(BASE_PACKAGES)}",
        f"--customize-hook={_DROP_DOCS}",
        codename,
        str(out),
        *(source.line() for source in sources),
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def import_base(podman: Podman, rootfs: Path, name: str) -> None:
    """The rootfs tarball as image ``name``, with a PATH (an imported tarball has no config)."""
    podman.commit(
        "import",
        "--change=ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        str(rootfs),
        name,
        timeout=300,
    )


def build_image(
    podman: Podman, context: Path, base: str, name: str, pip: PipForBuild, secrets: Path
) -> subprocess.CompletedProcess[str]:
    """`podman build` of the project's Dockerfile on ``base``, with the machine's pip settings."""
    pip_conf = secrets / "pip.conf"
    pip_conf.write_text(pip.config)
    pip_conf.chmod(0o600)
    secret_flags = [f"--secret=id=pip.conf,src={pip_conf}"]
    if pip.ca_bundle is not None:
        secret_flags.append(f"--secret=id=pip-ca,src={pip.ca_bundle}")
    return podman.commit(
        "build",
        # The base exists only in this storage: never ask a registry.
        "--pull=never",
        # Nothing is cached between runs: committing every step as a layer only costs time.
        "--layers=false",
        # Host networking needs no bridge plugin (netavark or CNI) on the machine.
        "--network=host",
        *ulimit_flags(),
        f"--build-arg=PYTHON_IMAGE={base}",
        *secret_flags,
        f"--tag={name}",
        f"--file={context / 'Dockerfile'}",
        str(context),
        timeout=900,
    )
