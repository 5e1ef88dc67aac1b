"""Benchmark: floods of idle and half-open connections, plain and TLS, against the real exporter.

Run from the repository root (about a minute and a half):

    .venv/bin/python -m tests.benchmarks.bench_floods
    .venv/bin/python -m tests.benchmarks.bench_floods --source ../old-checkout   # "before"

The simulator and the exporter run as separate processes (``python -m exporter``, the
exporter's open-file limit set to 1024 soft and hard, as on many machines), one exporter on a
plain port and one with TLS (a certificate made for the run), each with the exporter's default
connection settings. For each flood the client (this process) opens ``--connections``
connections as fast as it can, each of one kind:

- ``plain idle``: connects and sends nothing;
- ``plain half request``: sends a request line and one header, never the blank line;
- ``TLS no ClientHello``: connects to the TLS port and sends nothing;
- ``TLS half request``: completes the handshake, then sends half a request.

While the flood's connections are held (``--hold`` seconds) it scrapes ``/metrics`` on fresh
connections and times each scrape (to the last body byte; a scrape that takes over 2 s counts
as failed), and it samples the exporter's RSS (``VmRSS``) and open descriptors
(``/proc/<pid>/fd``). Then it closes the flood and waits up to 5 s for RSS to settle. It prints
one markdown table: RSS before, at its peak and after; descriptors at their peak; how many of
the flood's connections the exporter still held at the end of the hold; scrape latency median
and maximum; and the bytes the exporter logged during the flood.

Nothing is asserted here: tests/test_benchmark_smoke.py-style checks of a short run are in
tests/test_bench_floods_smoke.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exporter.demo.simulator import demo_campaigns
from tests.benchmarks.bench_exporter import Child
from tests.helpers import write_tls_config

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("plain idle", "plain half request", "TLS no ClientHello", "TLS half request")
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"
EXPORTER_NOFILE = 1024
SCRAPE_TIMEOUT = 2.0
API_KEY = "bench-floods-key"
MIB = 1024 * 1024


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_bytes(pid: int, key: str = "VmRSS") -> int:
    """A /proc/<pid>/status memory figure in bytes (0 once the process is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    """Descriptors ``pid`` has open (0 once the process is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def raise_own_file_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit toward ``wanted``; the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class Certificates:
    """A CA, and a certificate for 127.0.0.1 in a web config file."""

    web_config: Path
    client: ssl.SSLContext


def make_certificates(workdir: Path) -> Certificates:
    """A fresh CA and server certificate, and the web config naming them."""
    return Certificates(*write_tls_config(workdir))


@dataclass
class Setup:
    """Where the processes run from and with what."""

    source: Path
    workdir: Path
    event_loop: str | None
    certificates: Certificates
    nofile: int = EXPORTER_NOFILE


def child_env(setup: Setup, extra: dict[str, str]) -> dict[str, str]:
    """This environment without DIALNEXA_* variables, the source on the path, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALNEXA_")}
    env["PYTHONPATH"] = str(setup.source)
    if setup.event_loop is not None:
        env["DIALNEXA_EVENT_LOOP"] = setup.event_loop
    env.update(extra)
    return env


@contextlib.contextmanager
def running_exporter(setup: Setup, api_url: str, tls: bool) -> Iterator[tuple[Child, int]]:
    """An exporter on a fresh loopback port (TLS or plain): (process, port)."""
    port = free_port()
    env = {
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": api_url,
        "DIALNEXA_CAMPAIGN_IDS": ",".join(c.id for c in demo_campaigns()),
        "DIALNEXA_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "DIALNEXA_POLL_INTERVAL_SECONDS": "5",
        "DIALNEXA_LOG_LEVEL": "info",
    }
    if tls:
        env["DIALNEXA_WEB_CONFIG_FILE"] = str(setup.certificates.web_config)
    name = "exporter-tls" if tls else "exporter-plain"
    process = Child(
        [sys.executable, "-m", "exporter"],
        setup.workdir / f"{name}.log",
        child_env(setup, env),
        cwd=setup.source,
        nofile=setup.nofile,
    )
    try:
        process.wait_for_output("serving metrics on", timeout=60)
        yield process, port
    finally:
        process.stop()


# --------------------------------------------------------------------------------- the flood


@dataclass
class Flood:
    """The client side of one flood: its open connections."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    readers: list[asyncio.StreamReader] = field(default_factory=list)
    failed: int = 0

    def still_open(self) -> int:
        """Connections the exporter has not closed (as this side sees them)."""
        return sum(1 for reader in self.readers if not reader.at_eof())

    async def close(self) -> None:
        """Close every connection of the flood."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        self.readers.clear()
        await asyncio.sleep(0)


async def _open_one(kind: str, port: int, client: ssl.SSLContext, flood: Flood) -> None:
    try:
        if kind.startswith("TLS") and kind != "TLS no ClientHello":
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if kind.endswith("half request"):
            writer.write(HALF_REQUEST)
    except (TimeoutError, OSError, ssl.SSLError):
        flood.failed += 1
        return
    flood.readers.append(reader)
    flood.writers.append(writer)


async def open_flood(
    kind: str, port: int, count: int, client: ssl.SSLContext, within: float = 30.0
) -> Flood:
    """Open ``count`` connections of ``kind`` (200 at a time), giving up after ``within`` s."""
    flood = Flood()
    deadline = time.monotonic() + within
    for start in range(0, count, 200):
        batch = [
            asyncio.wait_for(_open_one(kind, port, client, flood), timeout=10)
            for _ in range(min(200, count - start))
        ]
        results = await asyncio.gather(*batch, return_exceptions=True)
        flood.failed += sum(1 for result in results if isinstance(result, BaseException))
        if time.monotonic() > deadline:
            flood.failed += count - start - len(batch)
            break
    return flood


async def scrape(port: int, client: ssl.SSLContext | None) -> float | None:
    """One /metrics on a new connection: seconds to the last body byte, None if it failed."""
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nConnection: close\r\n\r\n")
            body = await reader.read()
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.transport.abort()
    if not body.startswith(b"HTTP/1.1 200") or b"dialnexa_exporter_build_info" not in body:
        return None
    return time.perf_counter() - started


@dataclass
class FloodResult:
    """What one flood did to the exporter."""

    kind: str
    attempted: int
    opened: int
    held_at_end: int
    rss_before: int
    rss_peak: int
    rss_after: int
    fds_before: int
    fds_peak: int
    scrapes: list[float | None]
    log_bytes: int

    @property
    def answered(self) -> list[float]:
        """Latencies of the scrapes that succeeded."""
        return [s for s in self.scrapes if s is not None]


class Sampler:
    """Samples a process's RSS and descriptors every 50 ms in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_peak = 0
        self.fds_peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.rss_peak = max(self.rss_peak, memory_bytes(self.pid))
            self.fds_peak = max(self.fds_peak, open_fds(self.pid))
            await asyncio.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def settled_rss(pid: int, baseline: int, within: float = 5.0) -> int:
    """The lowest RSS seen within ``within`` s, stopping early once near ``baseline``."""
    lowest = memory_bytes(pid)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and lowest > baseline + 8 * MIB:
        await asyncio.sleep(0.1)
        lowest = min(lowest, memory_bytes(pid) or lowest)
    return lowest


async def run_flood(
    kind: str,
    process: Child,
    port: int,
    count: int,
    hold: float,
    scrapes: int,
    client: ssl.SSLContext,
) -> FloodResult:
    """One flood of ``count`` connections of ``kind`` against the exporter on ``port``."""
    scrape_context = client if kind.startswith("TLS") else None
    rss_before, fds_before = memory_bytes(process.pid), open_fds(process.pid)
    log_before = process.log_size()
    with Sampler(process.pid) as sampler:
        flood = await open_flood(kind, port, count, client)
        latencies: list[float | None] = []
        hold_until = time.monotonic() + hold
        for _ in range(scrapes):
            latencies.append(await scrape(port, scrape_context))
        await asyncio.sleep(max(0.0, hold_until - time.monotonic()))
        held = flood.still_open()
        opened = len(flood.writers)
        await flood.close()
        rss_after = await settled_rss(process.pid, rss_before)
    return FloodResult(
        kind=kind,
        attempted=count,
        opened=opened,
        held_at_end=held,
        rss_before=rss_before,
        rss_peak=max(sampler.rss_peak, rss_before),
        rss_after=rss_after,
        fds_before=fds_before,
        fds_peak=max(sampler.fds_peak, fds_before),
        scrapes=latencies,
        log_bytes=process.log_size() - log_before,
    )


async def run_floods(
    setup: Setup, kinds: Sequence[str], count: int, hold: float, scrapes: int
) -> list[FloodResult]:
    """Every flood of ``kinds`` against fresh exporters (one plain, one TLS) sharing a simulator."""
    sim_port = free_port()
    simulator = Child(
        [
            sys.executable,
            "-m",
            "exporter",
            "simulator",
            "--listen-address",
            f"127.0.0.1:{sim_port}",
            "--api-key",
            API_KEY,
        ],
        setup.workdir / "simulator.log",
        child_env(setup, {}),
        cwd=setup.source,
    )
    results: list[FloodResult] = []
    try:
        simulator.wait_for_output("DialNexa API simulator", timeout=60)
        api_url = f"http://127.0.0.1:{sim_port}/v1"
        for tls in (False, True):
            mine = [k for k in kinds if k.startswith("TLS") == tls]
            if not mine:
                continue
            with running_exporter(setup, api_url, tls) as (process, port):
                for kind in mine:
                    result = await run_flood(
                        kind, process, port, count, hold, scrapes, setup.certificates.client
                    )
                    results.append(result)
    finally:
        simulator.stop()
    return results


def run(
    *,
    kinds: Sequence[str] = KINDS,
    count: int = 2000,
    hold: float = 3.0,
    scrapes: int = 10,
    source: Path = REPO_ROOT,
    event_loop: str | None = None,
    workdir: Path | None = None,
    nofile: int = EXPORTER_NOFILE,
) -> list[FloodResult]:
    """Run the floods; ``count`` is lowered when this process cannot open that many sockets."""
    usable = raise_own_file_limit(count + 200) - 200
    count = max(1, min(count, usable))
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="floods-")))
        setup = Setup(source, workdir, event_loop, make_certificates(workdir), nofile)
        return asyncio.run(run_floods(setup, kinds, count, hold, scrapes))


# ------------------------------------------------------------------------------------ report


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def _mib(value: int) -> str:
    return f"{value / MIB:.0f}"


def build_report(results: Sequence[FloodResult], title: str) -> str:
    """One markdown table of the floods."""
    lines = [
        f"### {title}",
        "",
        "| flood | opened | held at end | RSS MiB before → peak → after | fds peak"
        " | /metrics answered | median | max | logged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        answered = r.answered
        median = _ms(sorted(answered)[len(answered) // 2]) if answered else "—"
        worst = _ms(max(answered)) if answered else "—"
        lines.append(
            f"| {r.kind} ({r.attempted:,}) | {r.opened:,} | {r.held_at_end:,}"
            f" | {_mib(r.rss_before)} → {_mib(r.rss_peak)} → {_mib(r.rss_after)}"
            f" | {r.fds_peak:,} | {len(answered)}/{len(r.scrapes)} | {median} | {worst}"
            f" | {r.log_bytes:,} B |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the floods, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="connections per flood")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the flood is held")
    parser.add_argument("--scrapes", type=int, default=10, help="scrapes during each flood")
    parser.add_argument(
        "--source", type=Path, default=REPO_ROOT, help="checkout whose exporter is measured"
    )
    parser.add_argument("--event-loop", default=None, help="DIALNEXA_EVENT_LOOP for the exporter")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}"
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    results = run(
        kinds=kinds,
        count=args.connections,
        hold=args.hold,
        scrapes=args.scrapes,
        source=args.source.resolve(),
        event_loop=args.event_loop,
    )
    loop = args.event_loop or "default"
    print(build_report(results, f"{args.source.resolve().name}, event loop {loop}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
