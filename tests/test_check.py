"""`dialnexa-exporter check`: the configuration summary, and --online against the simulator."""

from __future__ import annotations

import asyncio
import io
import os

import pytest
from pydantic import SecretStr

from exporter.api.client import DialNexaClient, client_for
from exporter.api.models import Campaign, CampaignStatus
from exporter.check import Result, describe, run_check, summary
from exporter.cli import main
from exporter.clock import SystemClock
from exporter.config import load_settings
from exporter.demo.simulator import Fault, FaultKind
from tests.helpers import (
    API_KEY,
    StartSim,
    campaign,
    exporter_settings,
    hostile_upstream,
    spawn_exporter,
    unprintable,
    upstream_running,
)


def test_summary_says_what_would_run_without_the_key() -> None:
    """Campaigns, shard, intervals, limits, API URL and where the key comes from; not the key."""
    settings = load_settings(
        {
            "api_key": SecretStr(API_KEY),
            "campaign_ids": ["a", "b", "c", "d"],
            "api_url": "https://api.example.test/v1",
            "shard_count": 2,
            "shard_index": 1,
            "poll_interval_seconds": 15,
            "calling_window": "mon-fri 09:00-20:00 Europe/Berlin",
        }
    )
    text = "\n".join(summary(settings))
    assert "calling window Mon-Fri 09:00-20:00 Europe/Berlin, stalled after 900s" in text
    assert "4 campaigns configured" in text
    assert "in shard 1 of 2" in text
    assert "https://api.example.test/v1 (key from DIALNEXA_API_KEY)" in text
    assert "poll every 15s" in text
    assert API_KEY not in text


async def test_offline_check_exits_0_and_fetches_nothing(start_simulator: StartSim) -> None:
    """Without --online nothing is fetched; the summary is printed and the status is 0."""
    sim = await start_simulator([campaign("cmp_a")])
    out = io.StringIO()
    assert await run_check(exporter_settings(sim, ["cmp_a"]), online=False, out=out) == 0
    assert out.getvalue().startswith("configuration OK: 1 campaign configured,")
    assert sim.sim.stats.requests == 0


async def test_online_check_reports_each_campaign_and_fails_when_one_fails(
    start_simulator: StartSim,
) -> None:
    """One line per campaign: status and counts, or the reason label with the HTTP code; a
    summary; exit 1 when any failed, and the key never printed."""
    sim = await start_simulator(
        [campaign("cmp_ok", total_leads=1200), campaign("cmp_gone"), campaign("cmp_locked")]
    )
    sim.sim.remove("cmp_gone")
    sim.sim.set_fault(Fault(FaultKind.STATUS, status=403), "cmp_locked")
    sim.sim.set_fault(Fault(FaultKind.HTML), "cmp_html")
    ids = ["cmp_ok", "cmp_gone", "cmp_locked", "cmp_html"]
    out = io.StringIO()
    assert await run_check(exporter_settings(sim, ids), online=True, out=out) == 1
    lines = out.getvalue().splitlines()
    per_campaign = lines[-5:-1]
    assert [line.split()[0] for line in per_campaign] == ids
    assert per_campaign[0].startswith("cmp_ok  ok  active 'Campaign cmp_ok': ")
    assert "of 1200 calls completed" in per_campaign[0]
    assert per_campaign[1].startswith("cmp_gone  FAILED  not_found (HTTP 404)")
    assert per_campaign[2].startswith("cmp_locked  FAILED  forbidden (HTTP 403)")
    assert per_campaign[3].startswith("cmp_html  FAILED  invalid_response (HTTP 200)")
    assert lines[-1] == (
        "4 campaigns fetched: 1 answered, 3 failed (forbidden 1, invalid_response 1, not_found 1)"
    )
    assert API_KEY not in out.getvalue()


async def test_online_check_passes_when_every_campaign_answers(start_simulator: StartSim) -> None:
    """Every campaign answered: exit 0, and the same limits as the exporter (concurrency)."""
    ids = [f"cmp_{n}" for n in range(12)]
    sim = await start_simulator([campaign(cid) for cid in ids])
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=0.05))
    out = io.StringIO()
    settings = exporter_settings(sim, ids, max_concurrency=3)
    assert await run_check(settings, online=True, out=out) == 0
    assert out.getvalue().splitlines()[-1] == "12 campaigns fetched: 12 answered"
    assert sim.sim.stats.max_in_flight <= 3


async def test_a_wrong_key_is_reported_per_campaign(start_simulator: StartSim) -> None:
    """The key the API refuses shows as unauthorized (HTTP 401) for every campaign."""
    sim = await start_simulator([campaign("cmp_a")], api_key="another-key")
    out = io.StringIO()
    assert await run_check(exporter_settings(sim, ["cmp_a"]), online=True, out=out) == 1
    assert "cmp_a  FAILED  unauthorized (HTTP 401)" in out.getvalue()


def test_hostile_names_cannot_drive_the_terminal() -> None:
    """A campaign name with escape sequences or newlines is printed escaped, on one line."""
    record = Campaign("cmp_x", name="\x1b[2J\x1b[31mowned\nfake line", status=CampaignStatus.PAUSED)
    line = describe(Result("cmp_x", record))
    assert "\x1b" not in line
    assert "\n" not in line
    assert "\\x1b[2J" in line


def test_check_with_a_bad_configuration_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same validation as start-up: one line naming the setting, exit 2."""
    monkeypatch.setenv("DIALNEXA_API_KEY", API_KEY)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "../etc")
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "DIALNEXA_CAMPAIGN_IDS" in err
    assert API_KEY not in err


def test_check_names_the_proxy_and_refuses_one_that_cannot_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary says which proxy the API is reached through, without its credentials; a
    proxy variable start-up would refuse fails the offline check too, naming it (exit 2)."""
    monkeypatch.setenv("DIALNEXA_API_KEY", API_KEY)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pr0xy-pw@proxy.example:3128")
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "(key from DIALNEXA_API_KEY), through the proxy http://proxy.example:3128\n" in out
    assert "pr0xy-pw" not in out
    assert "alice" not in out
    monkeypatch.setenv("HTTPS_PROXY", "https://alice:pr0xy-pw@proxy.example:3128")
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialnexa-exporter: configuration error: HTTPS_PROXY: ")
    assert "pr0xy-pw" not in err


@pytest.mark.slow
async def test_check_command_exit_status_from_the_shell(start_simulator: StartSim) -> None:
    """The real process: `check --online` exits 1 with a failing campaign, 0 once it answers."""
    sim = await start_simulator([campaign("cmp_a")])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": sim.api_url,
        "DIALNEXA_CAMPAIGN_IDS": "cmp_a,cmp_missing",
    }
    process = await spawn_exporter(env, "check", "--online")
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert b"cmp_missing  FAILED  not_found (HTTP 404)" in stdout
    env["DIALNEXA_CAMPAIGN_IDS"] = "cmp_a"
    process = await spawn_exporter(env, "check", "--online")
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stdout
    assert API_KEY.encode() not in stdout


async def test_an_api_that_does_not_answer_is_reported_as_such(start_simulator: StartSim) -> None:
    """A timeout has no HTTP code: the line says so."""
    sim = await start_simulator([campaign("cmp_a")])
    sim.sim.set_fault(Fault(FaultKind.SLOW, delay=5))
    out = io.StringIO()
    settings = exporter_settings(sim, ["cmp_a"], request_timeout_seconds=0.2)
    assert await run_check(settings, online=True, out=out) == 1
    assert "cmp_a  FAILED  timeout (no HTTP answer)" in out.getvalue()


class FailingFor:
    """The exporter's own client, but one campaign's fetch raises what no FetchError stands for."""

    def __init__(self, client: DialNexaClient, campaign_id: str) -> None:
        self._client = client
        self._campaign_id = campaign_id

    async def fetch_campaign(self, campaign_id: str) -> Campaign:
        """The real fetch, or a bug's exception for the chosen campaign."""
        if campaign_id == self._campaign_id:
            raise ValueError("a bug \x1bc nobody foresaw")
        return await self._client.fetch_campaign(campaign_id)


async def test_every_line_and_the_summary_print_whatever_one_fetch_raises(
    start_simulator: StartSim,
) -> None:
    """An unexpected exception in one fetch: that campaign's line says so, the others and the
    summary are printed, exit 1, no traceback."""
    ids = ["cmp_a", "cmp_bug", "cmp_c"]
    sim = await start_simulator([campaign(cid) for cid in ids])
    settings = exporter_settings(sim, ids)
    client = client_for(settings, SystemClock())
    out = io.StringIO()
    try:
        status = await run_check(
            settings, online=True, out=out, client=FailingFor(client, "cmp_bug")
        )
    finally:
        await client.close()
    assert status == 1
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines[-4:-1]] == ids
    assert lines[-3] == (
        "cmp_bug  FAILED  unexpected_error (no HTTP answer): "
        "ValueError: a bug \\x1bc nobody foresaw"
    )
    assert lines[-1] == "3 campaigns fetched: 2 answered, 1 failed (unexpected_error 1)"
    assert "Traceback" not in out.getvalue()


async def test_online_output_carries_no_terminal_control_characters() -> None:
    """A campaign named with 60 backspaces, ESC c and a vertical tab, and a redirect to a
    Location holding them: `check --online` prints both escaped, every line whole."""
    async with upstream_running(hostile_upstream) as upstream:
        settings = load_settings(
            {
                "api_url": upstream.api_url,
                "api_key": SecretStr(API_KEY),
                "campaign_ids": ["cmp_name", "cmp_loc"],
            }
        )
        out = io.StringIO()
        assert await run_check(settings, online=True, out=out) == 1
    text = out.getvalue()
    assert unprintable(text) == set()
    name_line, location_line = text.splitlines()[-3:-1]
    assert name_line.startswith("cmp_name  ok  active '" + "\\x08" * 60 + "\\x1bc\\x0b'")
    assert location_line.startswith("cmp_loc  FAILED  invalid_response (HTTP 302): redirect to")
    assert "\\x08" * 60 + "\\x1bc\\x0b" in location_line
