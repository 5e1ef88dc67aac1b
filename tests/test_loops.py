"""Choosing the event loop: uvloop by default where installed, asyncio's on request."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from exporter import loops
from exporter.config import ConfigError
from tests.helpers import (
    API_KEY,
    StartExporter,
    StartSim,
    campaign,
    exporter_settings,
    parse_samples,
    read_serving_url,
    spawn_exporter,
    value,
    wait_for,
)


def test_auto_means_uvloop_where_it_is_installed() -> None:
    """On this platform uvloop is a dependency, so auto picks it; asyncio picks asyncio's."""
    assert loops.uvloop_available()
    assert loops.loop_name(loops.loop_factory("auto")()) == "uvloop"
    assert loops.loop_name(loops.loop_factory("asyncio")()) == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where uvloop has no wheels (Windows), auto runs asyncio's loop and asking for uvloop
    is a one-line configuration error naming the setting."""
    monkeypatch.setattr(loops, "uvloop_available", lambda: False)
    assert loops.loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(ConfigError, match="DIALNEXA_EVENT_LOOP: uvloop is not installed"):
        loops.loop_factory("uvloop")


async def test_the_tests_run_on_the_exporters_default_loop() -> None:
    """The suite's async tests run on uvloop (the exporter's default), as the issue asks."""
    assert loops.loop_name() == "uvloop"
    assert loops.loop_description().startswith("uvloop ")


def test_outside_a_loop_the_name_says_so() -> None:
    """No running loop: 'none', not an exception."""
    assert loops.loop_name() == "none"


def test_run_uses_the_chosen_loop() -> None:
    """loops.run runs the coroutine to completion on a new loop of the chosen kind."""

    async def which() -> str:
        return loops.loop_name()

    assert loops.run(which(), "asyncio") == "asyncio"
    assert loops.run(which(), "uvloop") == "uvloop"


async def test_build_info_names_the_loop(
    start_simulator: StartSim, start_exporter: StartExporter
) -> None:
    """dialnexa_exporter_build_info carries the loop the exporter runs on."""
    sim = await start_simulator([campaign("cmp_a")])
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"]))
    samples = await exporter.samples()
    names = {dict(labels).get("event_loop") for name, labels in samples if "build_info" in name}
    assert names == {loops.loop_name()}


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
async def test_the_process_logs_its_loop_and_stops_cleanly_on_either(
    start_simulator: StartSim, choice: str
) -> None:
    """The real process runs on the chosen loop (its start-up line and build info say which),
    serves, and exits 0 on SIGTERM: signal handling works on both loops."""
    sim = await start_simulator([campaign("cmp_a")])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": sim.api_url,
        "DIALNEXA_CAMPAIGN_IDS": "cmp_a",
        "DIALNEXA_EVENT_LOOP": choice,
    }
    process = await spawn_exporter(env, "--web.listen-address", "127.0.0.1:0")
    url, line = await read_serving_url(process)
    assert f"(event loop: {choice}".encode() in line
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            async with session.get(f"{url}/metrics") as response:
                samples = parse_samples(await response.text())
            return value(samples, "dialnexa_exporter_campaign_up", campaign_id="cmp_a") == 1

        await wait_for(up, what="the campaign fetched")
        async with session.get(f"{url}/metrics") as response:
            assert f'event_loop="{choice}"' in await response.text()
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0
