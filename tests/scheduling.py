"""How the gate's tests are spread over pytest-xdist's workers: work units, longest first.

tests/conftest.py orders the collected tests with ``longest_first`` and gives pytest-xdist the
``LongestFirstScheduling`` scheduler; tests/test_scheduling.py checks both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

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


def longest_first(items: Sequence[pytest.Item]) -> list[pytest.Item]:
    """The LONGEST_FIRST units first (when they hold tests marked long or slow), then the other
    units holding long tests, then those holding slow ones, then the rest; among equals, the units
    with more tests first (loadscope's own guess at what takes longest); each unit's tests
    together and in their order."""
    rank: dict[str, tuple[int, int]] = {}
    size: dict[str, int] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        names = {mark.name for mark in item.iter_markers()}
        here = 0 if names & LONG_MARKERS else 1 if SLOW_MARKER in names else 2
        # Named in LONGEST_FIRST for its marked tests: without them (plain pytest) it is quick.
        longest = longest_rank(unit) if here < 2 else len(LONGEST_FIRST)
        rank[unit] = min(rank.get(unit, (longest, here)), (longest, here))
        size[unit] = size.get(unit, 0) + 1

    def key(item: pytest.Item) -> tuple[int, int, int]:
        unit = work_unit(item.nodeid)
        return (*rank[unit], -size[unit])

    return sorted(items, key=key)


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
