"""Configuration reloads: coalesced requests, parsing off the event loop, refusals that keep
the running list, and the reload status."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from exporter.config import MAX_CAMPAIGNS, MAX_CONFIG_FILE_BYTES
from exporter.polling import reloader as reloader_module
from exporter.polling.reloader import ConfigReloader, ReloadStatus
from tests.helpers import API_KEY, FakeClock, wait_for


class Recorder:
    """Receives campaign lists, noting the thread that parsed them and how long each waits."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.lists: list[tuple[str, ...]] = []
        self.hold = hold

    async def apply(self, campaigns: tuple[str, ...]) -> tuple[int, int]:
        """Record the list (optionally waiting on ``hold`` first, to keep a reload running)."""
        if self.hold is not None:
            await self.hold.wait()
        self.lists.append(campaigns)
        return len(campaigns), 0


def reloader_for(path: Path, recorder: Recorder, clock: FakeClock) -> ConfigReloader:
    """A reloader of ``path`` (with a key in the flags, as the CLI passes settings)."""
    flags: dict[str, Any] = {"api_key": API_KEY, "config_file": str(path)}
    status = ReloadStatus(last_success_timestamp=0.0)
    return ConfigReloader(flags, path, recorder.apply, status, clock)


async def test_a_valid_file_is_applied_and_noted(tmp_path: Path) -> None:
    """A reload hands the new list on and records the success time."""
    path = tmp_path / "config.yaml"
    path.write_text("campaigns: [a, b]\n")
    recorder, clock = Recorder(), FakeClock()
    reloader = reloader_for(path, recorder, clock)
    assert await reloader.reload()
    assert recorder.lists == [("a", "b")]
    assert reloader.status.last_reload_successful
    assert reloader.status.last_success_timestamp == clock.time()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("campaigns: ['../etc']\n", "invalid campaign id"),
        ("campaigns: [a\n", "not valid YAML"),
        ("surprise: 1\n", "unknown key"),
        ("campaigns: [" + ", ".join(f"c{n}" for n in range(MAX_CAMPAIGNS + 1)) + "]\n", "at most"),
        ("campaigns: [a]\n#" + "x" * MAX_CONFIG_FILE_BYTES + "\n", "larger than"),
    ],
    ids=["bad-id", "bad-yaml", "unknown-key", "too-many-ids", "too-large"],
)
async def test_a_bad_file_keeps_the_running_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, problem: str
) -> None:
    """Invalid, oversized or overlong files are refused with one error line; nothing is
    applied and the status says so; the message is short."""
    path = tmp_path / "config.yaml"
    path.write_text(content)
    recorder = Recorder()
    reloader = reloader_for(path, recorder, FakeClock())
    with caplog.at_level(logging.ERROR, logger="exporter.reloader"):
        assert not await reloader.reload()
    assert recorder.lists == []
    assert not reloader.status.last_reload_successful
    [record] = caplog.records
    assert problem in record.getMessage()
    assert len(record.getMessage()) < 500


async def test_parsing_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is read and validated in a worker thread, not on the event loop's."""
    path = tmp_path / "config.yaml"
    path.write_text("campaigns: [a]\n")
    threads: list[threading.Thread] = []
    real = reloader_module.load_settings

    def spying(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(reloader_module, "load_settings", spying)
    assert await reloader_for(path, Recorder(), FakeClock()).reload()
    assert threads
    assert threads[0] is not threading.main_thread()


async def test_a_storm_of_requests_is_merged_into_one_more_reload(tmp_path: Path) -> None:
    """A hundred SIGHUPs while a reload runs lead to one more reload, not a hundred."""
    path = tmp_path / "config.yaml"
    path.write_text("campaigns: [a]\n")
    hold = asyncio.Event()
    recorder, clock = Recorder(hold), FakeClock()
    reloader = reloader_for(path, recorder, clock)
    task = asyncio.create_task(reloader.run(check_every=3600))
    try:
        reloader.request()
        await wait_for(lambda: reloader.reloads == 1, what="the first reload to start")
        for _ in range(100):
            reloader.request()
        hold.set()
        await wait_for(lambda: len(recorder.lists) == 2, what="the merged reload")
        for _ in range(20):  # give a wrongly queued third reload every chance to run
            await asyncio.sleep(0)
        assert reloader.reloads == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_changed_file_is_noticed_on_the_clock(tmp_path: Path) -> None:
    """The file is checked every interval of the injected clock; a change triggers a reload,
    an unchanged file does not."""
    path = tmp_path / "config.yaml"
    path.write_text("campaigns: [a]\n")
    recorder, clock = Recorder(), FakeClock()
    reloader = reloader_for(path, recorder, clock)
    task = asyncio.create_task(reloader.run(check_every=5))
    try:
        await wait_for(lambda: clock.waiting == 1, what="the watcher waiting")
        clock.advance(5)
        await wait_for(lambda: clock.waiting == 1 and reloader.reloads == 0, what="next check")
        path.write_text("campaigns: [a, b, c]\n")
        clock.advance(5)
        await wait_for(lambda: recorder.lists == [("a", "b", "c")], what="the change applied")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
