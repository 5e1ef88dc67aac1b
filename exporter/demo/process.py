"""What the demo's throwaway servers share: duration literals, a process with its own
temporary directory and log, readiness, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}


def duration_seconds(text: str) -> float:
    """A Prometheus or Alertmanager duration literal (``1h30m``, ``15m``, ``500ms``) in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class ServerStartError(Exception):
    """The server exited or did not become ready; the message says why."""


def last_log_line(path: Path) -> str:
    """The last non-blank line of a log file, or "no output"."""
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text("utf-8", "replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


@dataclass
class DemoProcess:
    """A server process started for the demo and the temporary directory it owns."""

    name: str
    process: asyncio.subprocess.Process
    workdir: Path
    url: str
    log_file: IO[bytes]

    @property
    def log_path(self) -> Path:
        """Where the server writes its log (inside the temporary directory)."""
        return self.workdir / f"{self.name}.log"

    async def wait_ready(self) -> None:
        """Wait until /-/ready answers 200; ServerStartError if the process exits first."""
        client_timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                if self.process.returncode is not None:
                    raise ServerStartError(
                        f"{self.name} exited with status {self.process.returncode}: "
                        + last_log_line(self.log_path)
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Terminate the process (killed after ``grace_seconds``) and remove its directory."""
        try:
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.terminate()
                try:
                    await asyncio.wait_for(self.process.wait(), grace_seconds)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                    await self.process.wait()
        finally:
            # Also reached when cancelled mid-stop: never leave the process or the files behind.
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            self.log_file.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


async def launch(
    name: str, argv: Sequence[str], workdir: Path, url: str, ready_seconds: float
) -> DemoProcess:
    """Run ``argv`` logging to workdir/<name>.log and wait until ``url`` is ready.

    On any failure the process is stopped and ``workdir`` removed; ServerStartError says why.
    """
    try:
        log_file = (workdir / f"{name}.log").open("wb")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        # A session of its own: Ctrl+C reaches the demo only, which then stops the server in order.
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    except BaseException:
        log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    running = DemoProcess(name, process, workdir, url, log_file)
    try:
        try:
            async with asyncio.timeout(ready_seconds):
                await running.wait_ready()
        except TimeoutError:
            raise ServerStartError(
                f"{name} not ready after {ready_seconds:g}s: " + last_log_line(running.log_path)
            ) from None
    except BaseException:
        await running.stop()
        raise
    return running
