"""Benchmark: instructions per fetch, the exporter's path beside a bare aiohttp client's.

CPU time on a shared or virtual machine drifts by tens of percent within seconds, which hides a
change of a few percent. Instructions executed do not drift: this counts them with valgrind
(Debian package ``valgrind``), about a minute per size on a 2-core machine:

    .venv/bin/python -m tests.benchmarks.bench_instructions --campaigns 500

Against one simulator process (N load campaigns), each side runs in a process of its own under
``valgrind --tool=cachegrind --cache-sim=no``, once with one round of N fetches and once with
three; the difference is two rounds, start-up and first round left out. The sides:

- floor: a plain aiohttp session, GET + read and nothing else (bench_exporter's floor);
- exporter: the poller on the exporter's client (API budget, request counters), publishing each
  round into the exposition cache with the exporter's memory tuning, as the exporter does.

Instructions are a proxy, not the figure: they leave out the kernel's work (the floor's socket
calls) and count a publication's string building, which runs fast, as much as the request
path's, which waits on memory. Compare versions with it; measure the ratio with
``bench_exporter --cpu-ratio``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from exporter import loops as event_loops
from exporter.exposition.cache import ExpositionCache
from exporter.polling.poller import Poller
from tests.benchmarks.bench_breakdown import POLL_SECONDS, new_client, settings_for
from tests.benchmarks.bench_exporter import _fetch_all, campaign_ids, start_simulator
from tests.helpers import FakeClock

SIDES = ("floor", "exporter")
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


async def run_side(side: str, api_url: str, n: int, rounds: int) -> None:
    """``rounds`` rounds of ``n`` fetches of one side, in this process."""
    ids = campaign_ids(n)
    if side == "floor":
        # The simulator's CPU is read from /proc by pid; this process stands in for it.
        await _fetch_all(api_url, ids, lambda _c, _b: None, rounds, sim_pid=os.getpid())
        return
    settings = settings_for(api_url)
    clock = FakeClock()
    client = new_client(settings, clock)
    cache = ExpositionCache(tune_memory=True)
    poller = Poller(settings, client, cache.update, campaign_ids=ids, clock=clock)
    try:
        for _ in range(rounds):
            clock.advance(POLL_SECONDS)  # every campaign due again
            if not await poller.poll_once():
                raise RuntimeError("no campaign was due")
    finally:
        await poller.stop_workers()
        await client.close()


def instructions(side: str, api_url: str, n: int, rounds: int) -> int:
    """Instructions a process running ``rounds`` rounds of ``side`` executes, start-up included."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "tests.benchmarks.bench_instructions",
        "--side",
        side,
        "--api-url",
        api_url,
        "--campaigns",
        str(n),
        "--rounds",
        str(rounds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    match = _TOTAL.search(done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"{side} under valgrind failed:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_fetch(side: str, api_url: str, n: int) -> float:
    """Instructions per fetch of ``side`` over two steady rounds."""
    one = instructions(side, api_url, n, 1)
    three = instructions(side, api_url, n, 3)
    return (three - one) / (2 * n)


def main() -> None:
    """Print one line per N: instructions per fetch of each side and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--campaigns", type=int, nargs="+", default=[500])
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:  # one side, in the process valgrind runs
        event_loops.run(run_side(args.side, args.api_url, args.campaigns[0], args.rounds), "uvloop")
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench_instructions: valgrind is not installed (apt-get install valgrind)")
    print("| N | floor, instructions a fetch | exporter | ratio |\n|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.campaigns:
            with contextlib.ExitStack() as stack:
                sim = start_simulator(stack, n, Path(tmp))
                floor = per_fetch("floor", sim.api_url, n)
                exporter = per_fetch("exporter", sim.api_url, n)
            print(
                f"| {n:,} | {floor:,.0f} | {exporter:,.0f} | {exporter / floor:.2f} |", flush=True
            )


if __name__ == "__main__":
    main()
