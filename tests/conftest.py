"""Fixtures: the simulator and the exporter on real loopback ports, stopped after each test.

Everything else a test needs (clocks, parsing, promtool, starting servers) is in tests/helpers.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from xdist.scheduler import LoadScopeScheduling

from exporter import loops
from exporter.clock import Clock
from exporter.config import Settings
from exporter.demo.simulator import SimCampaign, Simulator
from exporter.web.server import create_app
from tests.helpers import (
    API_KEY,
    RunningExporter,
    RunningSimulator,
    StartExporter,
    StartSim,
    serve,
)
from tests.scheduling import LongestFirstScheduling, longest_first

# Bytecode is written, so that it is read again. With PYTHONDONTWRITEBYTECODE set (machines and CI
# images set it), every pytest worker rewrote and compiled every test module at collection, and
# every one of the hundreds of Python processes the tests start (exporters, simulators, pytest
# itself) compiled the package anew. Set here, before the test modules are imported and before
# pytest-xdist starts its workers, which inherit the environment. git and the image's build
# context ignore __pycache__.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Modules whose async tests also run on asyncio's own loop, not only on the exporter's default
# (uvloop): TLS (web config, the connection guard), in-process shutdown (the CLI), and the fault
# matrix. Tests of a spawned process choose its loop through DIALNEXA_EVENT_LOOP instead.
BOTH_LOOPS = frozenset({"test_webconfig", "test_fault_matrix", "test_cli", "test_connections"})
# Long tests of those modules whose subject does not depend on the loop: the default loop only.
# The demo's stall and ETA judgement is simulated-time arithmetic (half a minute of real waiting).
ONE_LOOP = frozenset({"test_demo_page_shows_its_stalled_campaign_and_etas"})


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the exporter's default loop; some modules on asyncio's too."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "uvloop": loops.loop_factory("auto")
    }
    module = getattr(item, "module", None)
    name = getattr(item, "originalname", item.name)
    if (
        module is not None
        and module.__name__.rsplit(".", 1)[-1] in BOTH_LOOPS
        and name not in ONE_LOOP
    ):
        factories["asyncio"] = asyncio.new_event_loop
    return factories


def pytest_configure(config: pytest.Config) -> None:
    """Naming files, directories or tests runs them whatever their markers: the marker
    expression in pyproject's addopts (plain `pytest`, the developer's loop) applies only when
    pytest chooses the tests itself; an explicit -m always wins."""
    addopts = config.getini("addopts")
    default = addopts[addopts.index("-m") + 1] if "-m" in addopts[:-1] else None
    explicit = config.args_source is pytest.Config.ArgsSource.ARGS
    if explicit and default is not None and config.option.markexpr == default:
        config.option.markexpr = ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest work units first (tests/scheduling.py), each unit's tests kept together and in
    order: LongestFirstScheduling hands the units out in this order, so the long chains start at
    once and the many short modules fill the workers' ends."""
    items[:] = longest_first(items)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: unknown under -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    """--dist loadscope (pyproject's addopts) runs with LongestFirstScheduling."""
    if config.getvalue("dist") == "loadscope":
        return LongestFirstScheduling(config, log)
    return None


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DIALNEXA_* or proxy variable of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("DIALNEXA_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSim]:
    """Factory: start a simulator with the given campaigns on 127.0.0.1, stopped after the test."""
    servers: list[TestServer] = []

    async def start(
        campaigns: Iterable[SimCampaign] = (), *, api_key: str = API_KEY, speed: float = 1.0
    ) -> RunningSimulator:
        sim = Simulator(campaigns, api_key=api_key, speed=speed)
        server = await serve(sim.app())
        servers.append(server)
        return RunningSimulator(sim, server)

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def start_exporter() -> AsyncIterator[StartExporter]:
    """Factory: start an exporter (settings, a clock) on 127.0.0.1, stopped after the test."""
    started: list[RunningExporter] = []

    async def start(
        settings: Settings, flags: dict[str, object] | None = None, clock: Clock | None = None
    ) -> RunningExporter:
        app = create_app(settings, flags=flags, clock=clock)
        server = await serve(app)
        session = aiohttp.ClientSession(auto_decompress=False)
        running = RunningExporter(app, server, session)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.session.close()
        await running.server.close()
