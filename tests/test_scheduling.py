"""The gate's work units and their order on pytest-xdist's workers (tests/scheduling.py): the
longest units start first, a worker busy with a long unit takes a quick one next, and the modules
without shared fixtures are split into one unit per test."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tests.scheduling import LongestFirstScheduling, longest_first, work_unit


@dataclass
class FakeItem:
    """What longest_first reads of a collected test: its node id and its markers."""

    nodeid: str
    markers: tuple[str, ...] = ()

    def iter_markers(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=name) for name in self.markers]


@dataclass(eq=False)
class FakeWorker:
    """A worker as the scheduler sees it: the tests it was sent, by their collection index."""

    name: str
    sent: list[list[int]] = field(default_factory=list)
    shutting_down: bool = False

    @property
    def gateway(self) -> SimpleNamespace:
        return SimpleNamespace(id=self.name)

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.append(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def test_work_units_split_only_the_modules_that_share_no_fixture() -> None:
    """A module is one unit, a class another; each test of a split module is its own, and each
    event loop of the floods (their fixture is per module and loop) is one."""
    assert work_unit("tests/test_clock.py::test_a[x]") == "tests/test_clock.py"
    assert work_unit("tests/test_dashboard_scale.py::TestAll::test_a") == (
        "tests/test_dashboard_scale.py::TestAll"
    )
    assert (
        work_unit("tests/test_rules.py::test_a[f.yml-all]")
        == "tests/test_rules.py::test_a[f.yml-all]"
    )
    assert work_unit("tests/test_bench_floods.py::test_a[uvloop]") == (
        "tests/test_bench_floods.py[uvloop]"
    )
    assert work_unit("tests/test_bench_floods.py::test_b[uvloop]") == (
        "tests/test_bench_floods.py[uvloop]"
    )


def test_the_longest_units_come_first_and_keep_their_tests_together() -> None:
    """The units named in LONGEST_FIRST lead in its order, then those with long markers, then slow
    ones, then the rest, the units with more tests first; within a unit the tests keep their
    order."""
    items = [
        FakeItem("tests/test_a_quick.py::test_1"),
        FakeItem("tests/test_a_quick.py::test_2"),
        FakeItem("tests/test_b_quick.py::test_1"),
        FakeItem("tests/test_b_quick.py::test_2"),
        FakeItem("tests/test_b_quick.py::test_3"),
        FakeItem("tests/test_b_slow.py::test_1", ("slow",)),
        FakeItem("tests/test_c_e2e.py::test_1"),
        FakeItem("tests/test_c_e2e.py::test_2", ("e2e",)),
        FakeItem("tests/test_e2e_alertmanager.py::test_1", ("e2e",)),
        FakeItem("tests/test_e2e_alertmanager.py::test_2", ("e2e",)),
        FakeItem("tests/test_rules.py::test_quick"),
        FakeItem("tests/test_rules.py::test_promtool_rule_unit_tests_pass[f.yml-all]", ("slow",)),
        FakeItem("tests/test_container.py::test_1", ("container",)),
        FakeItem("tests/test_soak.py::test_its_helper"),  # named, but no long test in this run
    ]
    ordered = [item.nodeid for item in longest_first(items)]  # type: ignore[arg-type]
    assert ordered == [
        "tests/test_container.py::test_1",
        "tests/test_e2e_alertmanager.py::test_1",
        "tests/test_e2e_alertmanager.py::test_2",
        "tests/test_rules.py::test_promtool_rule_unit_tests_pass[f.yml-all]",
        "tests/test_c_e2e.py::test_1",
        "tests/test_c_e2e.py::test_2",
        "tests/test_b_slow.py::test_1",
        "tests/test_b_quick.py::test_1",
        "tests/test_b_quick.py::test_2",
        "tests/test_b_quick.py::test_3",
        "tests/test_a_quick.py::test_1",
        "tests/test_a_quick.py::test_2",
        "tests/test_rules.py::test_quick",
        "tests/test_soak.py::test_its_helper",
    ]


def test_units_go_out_in_order_and_a_busy_worker_takes_a_quick_one() -> None:
    """Two workers: each starts a long unit (not the quick module with the most tests, as
    loadscope's own order would); each is then handed the last unit of the queue while its long
    test runs, and the next long unit goes to the first worker that finishes."""
    collection = [
        "tests/test_e2e_alertmanager.py::test_fast",  # 0: a long unit of two tests
        "tests/test_e2e_alertmanager.py::test_long",  # 1
        "tests/test_soak.py::test_soak",  # 2: a long unit of one
        "tests/test_upstream_text.py::test_long",  # 3: a long unit, split from its module
        "tests/test_clock.py::test_1",  # 4-8: a quick module with the most tests
        "tests/test_clock.py::test_2",
        "tests/test_clock.py::test_3",
        "tests/test_clock.py::test_4",
        "tests/test_clock.py::test_5",
        "tests/test_models.py::test_1",  # 9-11: the last unit
        "tests/test_models.py::test_2",
        "tests/test_models.py::test_3",
    ]
    config: Any = SimpleNamespace(
        getvalue=lambda name: ["2*popen"] if name == "tx" else None,
        option=SimpleNamespace(loadscopereorder=True),
    )
    scheduler = LongestFirstScheduling(config)
    first, second = FakeWorker("gw0"), FakeWorker("gw1")
    for worker in (first, second):
        scheduler.add_node(worker)  # type: ignore[arg-type]
        scheduler.add_node_collection(worker, collection)  # type: ignore[arg-type]
    scheduler.schedule()
    assert first.sent == [[0, 1], [9, 10, 11]]
    assert second.sent == [[2], [4, 5, 6, 7, 8]]
    for index in (0, 1, 9, 10):  # the first worker ends its long unit and most of the quick one
        scheduler.mark_test_complete(first, index)  # type: ignore[arg-type]
    assert first.sent[-1] == [3]
    assert second.sent == [[2], [4, 5, 6, 7, 8]]
