"""The test suite's own machinery: the one wait_for, and which tests plain pytest runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from tests.helpers import ROOT, wait_for, wait_for_blocking


async def test_wait_for_returns_the_first_truthy_value_of_any_kind_of_condition() -> None:
    """Plain, async and blocking (threaded) conditions are polled until truthy; wait_for
    returns that value, so a caller waits for a result and uses it."""
    calls = {"plain": 0, "async": 0, "thread": 0}

    def plain() -> list[int] | None:
        calls["plain"] += 1
        return [calls["plain"]] if calls["plain"] >= 3 else None

    async def asynchronous() -> str:
        calls["async"] += 1
        return "ready" if calls["async"] >= 2 else ""

    def blocking() -> int:
        assert threading.current_thread() is not threading.main_thread()
        calls["thread"] += 1
        return calls["thread"] if calls["thread"] >= 2 else 0

    assert await wait_for(plain, 5, "plain", interval=0) == [3]
    assert await wait_for(asynchronous, 5, "async", interval=0) == "ready"
    assert await wait_for(blocking, 5, "thread", interval=0, in_thread=True) == 2


async def test_wait_for_fails_after_its_deadline_naming_what_it_awaited() -> None:
    """A condition that never holds fails after ``within`` seconds with a message naming what
    was awaited and the last value seen (not for a plain False)."""
    with pytest.raises(AssertionError, match=r"after 0.05s waiting for the moon; last: \[\]$"):
        await wait_for(list, 0.05, "the moon")
    with pytest.raises(AssertionError, match=r"waiting for a flag$"):
        await wait_for(lambda: False, 0.05, "a flag")


def test_wait_for_blocking_returns_or_fails_the_same_way() -> None:
    """Outside an event loop: the first truthy value, or a failure naming what was awaited."""
    values = iter([None, 0, "", "done"])
    assert wait_for_blocking(lambda: next(values), 5, "values", interval=0) == "done"
    with pytest.raises(AssertionError, match="waiting for nothing"):
        wait_for_blocking(lambda: None, 0.05, "nothing", interval=0.01)


def collected(*args: str) -> tuple[int, int]:
    """(selected, deselected) of ``pytest --collect-only`` with ``args``, in one process."""
    command = ["-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider"]
    # Not measured for coverage when tests/run.sh measures this run: collecting is all it does.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COV_CORE")}
    result = subprocess.run(
        [sys.executable, *command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 5), result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    match = re.search(r"(\d+)(?:/(\d+))? tests? collected(?: \((\d+) deselected\))?", last)
    if match is None:
        assert "no tests collected" in last, last
        deselected = re.search(r"\((\d+) deselected\)", last)
        return 0, int(deselected[1]) if deselected else 0
    return int(match[1]), int(match[3] or 0)


@pytest.mark.slow
def test_plain_pytest_leaves_out_the_marked_tests_and_a_named_file_runs_whole() -> None:
    """Plain pytest deselects the e2e/container/slow/soak/benchmark tests; a file named on the
    command line runs whole, its slow tests included; -m still picks, -m '' all."""
    default, left_out = collected()
    assert default > 0
    assert left_out > 0
    browser = "tests/test_status_page_browser.py"  # both of its tests are marked slow
    assert collected(browser) == (2, 0)
    assert collected(browser, "-m", "not slow") == (0, 2)
    assert collected(browser, "-m", "") == (2, 0)
