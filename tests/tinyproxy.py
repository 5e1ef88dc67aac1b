"""A real forward proxy for tests: Debian's tinyproxy, on a loopback port, with its log read back.

tinyproxy runs in the foreground with a configuration written for the test (a free loopback
port, its log in the test's directory, optional Basic credentials), and is stopped afterwards.
Its log names every connection it accepted and the request line it was asked
for: `CONNECT host:port HTTP/1.1` for a tunnel, `GET http://... HTTP/1.1` for a forwarded
request, which is how a test proves that the proxy was, or was not, used.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_for_blocking
from tests.prometheus_server import free_port

_REQUEST = re.compile(r"Request \(file descriptor \d+\): (.*)$", re.MULTILINE)
_CONNECTION = re.compile(r"Connect \(file descriptor \d+\): ")


def tinyproxy_binary() -> str | None:
    """Path of tinyproxy, None when it is not installed (tests/run.sh installs it)."""
    return shutil.which("tinyproxy")


@dataclass
class TinyProxy:
    """A running tinyproxy: its URL, its log, and its process."""

    port: int
    log_file: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    def url(self, credentials: str = "") -> str:
        """``http://[credentials@]127.0.0.1:port``."""
        return f"http://{credentials + '@' if credentials else ''}{self.address}"

    def log(self) -> str:
        """Everything tinyproxy has logged so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def requests(self) -> list[str]:
        """The request lines clients sent it, in order."""
        return _REQUEST.findall(self.log())

    def connections(self) -> int:
        """How many client connections it accepted."""
        return len(_CONNECTION.findall(self.log()))

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_tinyproxy(directory: Path, *, basic_auth: tuple[str, str] | None = None) -> TinyProxy:
    """tinyproxy on a free port of 127.0.0.1, configured and logging in ``directory``."""
    binary = tinyproxy_binary()
    assert binary is not None, "tinyproxy is not installed (Debian package `tinyproxy`)"
    port = free_port()
    log_file = directory / "tinyproxy.log"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        f'LogFile "{log_file}"',
        "LogLevel Info",
        "MaxClients 32",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    config = directory / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [binary, "-d", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = TinyProxy(port, log_file, process)

    def listening() -> bool:
        # Its own word that it listens: a probe connection would show in its log as a client.
        if process.poll() is not None:
            raise RuntimeError(f"tinyproxy exited with status {process.returncode}")
        return "Accepting connections" in proxy.log()

    try:
        wait_for_blocking(listening, 20, f"tinyproxy to listen on port {port}", interval=0.02)
    except (AssertionError, RuntimeError) as exc:
        proxy.stop()
        raise RuntimeError(f"{exc}:\n{proxy.log()}") from exc
    return proxy
