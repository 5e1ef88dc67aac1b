"""The command line in-process: demo and simulator commands serve, then stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from exporter.cli import JsonFormatter, build_parser, main, run_demo, run_simulator
from tests.helpers import parse_samples, value, wait_for


async def serve_until_sigterm(
    command: Callable[[], Awaitable[None]],
    capsys: pytest.CaptureFixture[str],
    url_pattern: str,
    check: Callable[[aiohttp.ClientSession, str], Awaitable[None]],
) -> None:
    """Run ``command`` as a task, find its URL in stdout, run ``check``, then SIGTERM it."""
    task = asyncio.create_task(command())
    printed = ""

    def url_printed() -> bool:
        nonlocal printed
        printed += capsys.readouterr().out
        return re.search(url_pattern, printed) is not None or task.done()

    try:
        await wait_for(url_printed, what="the command to print its URL")
        assert not task.done(), task.exception()
        match = re.search(url_pattern, printed)
        assert match is not None
        async with aiohttp.ClientSession() as session:
            await check(session, match.group(1))
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, timeout=10)
    finally:
        if not task.done():
            task.cancel()
    assert task.exception() is None


async def test_demo_serves_moving_campaigns(capsys: pytest.CaptureFixture[str]) -> None:
    """`demo` prints its URL, exports the six demo campaigns, and exits on SIGTERM."""
    args = build_parser().parse_args(
        [
            "demo",
            "--listen-address",
            "127.0.0.1:0",
            "--speed",
            "600",
            "--poll-interval-seconds",
            "0.1",
        ]
    )

    async def check(session: aiohttp.ClientSession, url: str) -> None:
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

        async def ready() -> bool:
            nonlocal samples
            async with session.get(f"{url}/metrics") as response:
                samples = parse_samples(await response.text())
            return value(samples, "dialnexa_exporter_campaigns_configured") == 6 and (
                value(samples, "dialnexa_exporter_campaign_up", campaign_id="cmp_demo_legacy") == 1
            )

        await wait_for(ready, what="the demo's first round")
        assert (
            value(
                samples, "dialnexa_campaign_status", campaign_id="cmp_demo_legacy", status="running"
            )
            == 1
        )
        assert (
            value(samples, "dialnexa_campaign_total_leads", campaign_id="cmp_demo_progress") == 3000
        )

    await serve_until_sigterm(
        lambda: run_demo(args), capsys, r"Open (http://127\.0\.0\.1:\d+)/", check
    )


async def test_simulator_command_serves_load_campaigns(capsys: pytest.CaptureFixture[str]) -> None:
    """`simulator --campaigns N` serves N generated campaigns behind the key it was given."""
    args = build_parser().parse_args(
        ["simulator", "--listen-address", "127.0.0.1:0", "--campaigns", "25", "--api-key", "k1"]
    )

    async def check(session: aiohttp.ClientSession, url: str) -> None:
        headers = {"Authorization": "Bearer k1"}
        async with session.get(f"{url}/campaigns/cmp_load_000024", headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["id"] == "cmp_load_000024"
        async with session.get(f"{url}/campaigns/cmp_load_000025", headers=headers) as response:
            assert response.status == 404
        async with session.get(f"{url}/campaigns/cmp_load_000001") as response:
            assert response.status == 401

    await serve_until_sigterm(
        lambda: run_simulator(args), capsys, r"at (http://127\.0\.0\.1:\d+/v1)", check
    )


def test_main_reports_config_errors_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() returns 2 and prints one line naming the setting."""
    monkeypatch.setenv("DIALNEXA_API_KEY", "k")
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "a/b")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "DIALNEXA_CAMPAIGN_IDS" in err


def test_flags_override_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value given as a flag is reported under the setting's variable name."""
    monkeypatch.setenv("DIALNEXA_API_KEY", "k")
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    monkeypatch.setenv("DIALNEXA_MAX_CONCURRENCY", "5")
    assert main(["--max-concurrency", "0"]) == 2
    assert "DIALNEXA_MAX_CONCURRENCY" in capsys.readouterr().err


def test_json_log_lines_are_objects() -> None:
    """The json log format writes one parseable object per record, exception included."""
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("exporter", logging.ERROR, __file__, 1, "bad %s", ("x",), None)
        record.exc_info = sys.exc_info()
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "bad x"
    assert entry["level"] == "error"
    assert "ValueError: boom" in entry["exception"]
