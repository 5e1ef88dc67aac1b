"""Fixtures: the simulator and the exporter on real loopback ports, stopped after each test.

Everything else a test needs (clocks, parsing, promtool, starting servers) is in tests/helpers.py.
"""

from __future__ import annotations

import asyncio
import os
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


# Markers of the tests that take tens of seconds each (real servers, builds, long waits), and of
# those that take a few.
LONG_MARKERS = frozenset({"e2e", "container", "soak", "benchmark"})
SLOW_MARKER = "slow"
# The longest work units of the whole gate, longest first (measured with --durations on two
# cores; refresh the order when it changes much): each starts before anything shorter, so that no
# worker begins a long one while the others are running out of work.
LONGEST_FIRST = (
    "tests/test_container.py",
    "tests/test_e2e_alertmanager.py",
    "tests/test_bench_floods.py",
    "tests/test_benchmark_smoke.py",
    "tests/test_dashboard_scale.py::TestAllStatusSeries",
    "tests/test_dashboard_scale.py::TestCurrentStatusSeries",
    "tests/test_cli.py::test_demo_page_shows_its_stalled_campaign_and_etas",
    "tests/test_e2e_prometheus.py::test_dashboard_rules_and_alerts_against_a_real_prometheus",
    "tests/test_soak.py",
    "tests/test_e2e_calling_window.py",
    "tests/test_e2e_prometheus.py",
    "tests/test_demo_prometheus.py",
    "tests/test_helpers.py",
    "tests/test_rules.py::test_promtool_rule_unit_tests_pass",
    "tests/test_upstream_text.py",
)
# Modules whose tests share no module- or class-scoped fixture: each of their tests is a work
# unit of its own (see LongestFirstScheduling), so that their long tests run on several workers.
SPLIT_MODULES = frozenset(
    {
        "tests/test_cli.py",
        "tests/test_demo_prometheus.py",
        "tests/test_e2e_prometheus.py",
        "tests/test_rules.py",
        "tests/test_upstream_text.py",
    }
)

# Modules whose tests all take one module-scoped, parametrized fixture (a long run per event
# loop): each parameter's tests are a work unit, so the runs go to two workers and each runs once.
SPLIT_BY_PARAMETER = frozenset({"tests/test_bench_floods.py"})


def work_unit(nodeid: str) -> str:
    """The scope pytest-xdist runs ``nodeid`` in: its module, or its class, or (in the
    SPLIT_MODULES) the test itself, or (in SPLIT_BY_PARAMETER) the module and the parameter."""
    module = nodeid.split("::", 1)[0]
    if module in SPLIT_MODULES:
        return nodeid
    if module in SPLIT_BY_PARAMETER and nodeid.endswith("]"):
        return module + "[" + nodeid.split("[", 1)[1]
    return nodeid.rsplit("::", 1)[0]


def longest_rank(unit: str) -> int:
    """The position of work unit ``unit`` in LONGEST_FIRST (its length when not there)."""
    return next(
        (
            index
            for index, prefix in enumerate(LONGEST_FIRST)
            if unit == prefix or unit.startswith((prefix + "::", prefix + "["))
        ),
        len(LONGEST_FIRST),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The LONGEST_FIRST units first, then the other units holding long tests, then those holding
    slow ones, each unit's tests kept together and in order: LongestFirstScheduling hands the
    units out in this order, so the long chains start at once and the many short modules fill the
    workers' ends."""
    rank: dict[str, tuple[int, int]] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        names = {mark.name for mark in item.iter_markers()}
        here = 0 if names & LONG_MARKERS else 1 if SLOW_MARKER in names else 2
        longest = longest_rank(unit)
        rank[unit] = min(rank.get(unit, (longest, here)), (longest, here))
    items.sort(key=lambda item: rank[work_unit(item.nodeid)])


class LongestFirstScheduling(LoadScopeScheduling):
    """pytest-xdist's loadscope with three changes: the work units go out in the order of the
    collection (pytest_collection_modifyitems puts the longest first; loadscope's default reorders
    them by their number of tests, which starts a module of many short tests before a single
    minute-long one); the SPLIT_MODULES give one unit per test; and a worker still busy with a
    LONGEST_FIRST unit is handed the last unit of the queue (a module of quick tests), not the
    next long one.

    The last is needed because loadscope hands a worker its next unit when two of its tests are
    left (a worker runs a test only once it knows the next one), which for a unit of one or two
    long tests is at once: the next long unit would wait a minute behind it while another worker
    runs out of work."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self.config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)

    def _reschedule(self, node: Any) -> None:
        assigned = self.assigned_work.get(node, {})
        busy_with_a_long_unit = any(
            longest_rank(scope) < len(LONGEST_FIRST) and not all(tests.values())
            for scope, tests in assigned.items()
        )
        if (
            node.shutting_down
            or len(self.workqueue) < 2
            or not busy_with_a_long_unit
            or self._pending_of(assigned) > 2
        ):
            super()._reschedule(node)
            return
        # _assign_work_unit takes the head of the queue: put the tail (the shortest) there.
        self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
        self._assign_work_unit(node)


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
