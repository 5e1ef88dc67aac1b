"""The command line: flags as Prometheus exporters spell them, what it refuses, --version,
binding before polling, and the demo and simulator commands serving until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shlex
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

import exporter
from exporter.cli import (
    DEMO_API_KEY,
    TOOLKIT_FLAGS,
    build_parser,
    main,
    program_as_invoked,
    run_demo,
    run_simulator,
)
from tests.helpers import (
    API_KEY,
    PageRow,
    StartSim,
    StatusPageParser,
    campaign,
    parse_samples,
    spawn_exporter,
    value,
    wait_for,
)


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


def test_the_printed_command_is_the_one_the_user_started() -> None:
    """Started as `.venv/bin/dialnexa-exporter demo`, the demo's hint names that path (a
    newcomer without the venv on PATH can paste it); started otherwise, the bare name."""
    assert program_as_invoked(".venv/bin/dialnexa-exporter") == ".venv/bin/dialnexa-exporter"
    assert program_as_invoked("/home/ops/my env/bin/dialnexa-exporter") == (
        "'/home/ops/my env/bin/dialnexa-exporter'"
    )
    assert program_as_invoked("dialnexa-exporter") == "dialnexa-exporter"
    assert program_as_invoked("/home/ops/src/exporter/__main__.py") == ("dialnexa-exporter")


async def test_demo_prints_a_check_command_that_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo prints `check --online` against its own simulator with the key it accepts; run
    as printed, in a process of its own, it exits 0 with every campaign answered."""
    args = build_parser().parse_args(["demo", "--listen-address", "127.0.0.1:0"])

    async def check(session: aiohttp.ClientSession, command: str) -> None:
        assignment, program, *rest = shlex.split(command)
        name, _, key = assignment.partition("=")
        assert (name, key, program) == ("DIALNEXA_API_KEY", DEMO_API_KEY, "dialnexa-exporter")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIALNEXA_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", *rest,
            env={**env, name: key}, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, out.decode()
        assert "6 campaigns fetched: 6 answered" in out.decode()
        assert rest[:2] == ["check", "--online"]

    await serve_until_sigterm(
        lambda: run_demo(args),
        capsys,
        r"\n    (DIALNEXA_API_KEY=\S+ dialnexa-exporter check --online [^\n]+)\n",
        check,
    )


@pytest.mark.slow
@pytest.mark.no_cover  # half a minute of the demo's polling, all covered elsewhere
async def test_demo_page_shows_its_stalled_campaign_and_etas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In the demo (stalls judged in simulated time, like its rules), moving campaigns show an
    ETA, and the stalled one shows as stalled with its last progress."""
    args = build_parser().parse_args(
        ["demo", "--listen-address", "127.0.0.1:0", "--speed", "600",
         "--poll-interval-seconds", "0.2"]
    )  # fmt: skip

    async def check(session: aiohttp.ClientSession, url: str) -> None:
        rows: dict[str, PageRow] = {}

        async def row_is(campaign_id: str, wanted: Callable[[PageRow], bool]) -> bool:
            nonlocal rows
            async with session.get(f"{url}/") as response:
                parsed = StatusPageParser(await response.text())
            rows = {row.cells[0].split("\n")[1].split(" ")[0]: row for row in parsed.rows}
            return campaign_id in rows and wanted(rows[campaign_id])

        await wait_for(
            lambda: row_is("cmp_demo_progress", lambda row: "calls/min" in row.cells[7]),
            what="an ETA for the moving campaign",
        )
        assert re.fullmatch(
            r"\d+ (s|min)\nat [\d,.]+ calls/min", rows["cmp_demo_progress"].cells[7]
        )
        await wait_for(
            lambda: row_is("cmp_demo_stall", lambda row: row.css == "stalled"),
            within=90,
            what="the demo's stalled campaign to show as stalled",
        )
        stalled = rows["cmp_demo_stall"]
        assert stalled.cells[5].startswith("stalled: dialling with calls pending")
        assert re.fullmatch(r"\d+ s ago", stalled.cells[6])
        assert stalled.cells[7] == "— stalled"
        assert "40.0%" in stalled.cells[2]

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
    """A bad value given as a flag over a good variable is reported under the flag's name."""
    monkeypatch.setenv("DIALNEXA_API_KEY", "k")
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    monkeypatch.setenv("DIALNEXA_MAX_CONCURRENCY", "5")
    assert main(["--max-concurrency", "0"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: --max-concurrency: " in err
    assert "DIALNEXA_MAX_CONCURRENCY" not in err


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--log.format", "jsn"], {}, "--log.format"),
        (["--log-format=jsn"], {}, "--log-format"),
        # The last spelling on the line is the value that counts, so the one named.
        (["--log-format", "json", "--log.format", "jsn"], {}, "--log.format"),
        (["check", "--log.format", "jsn"], {}, "--log.format"),
        ([], {"DIALNEXA_LOG_FORMAT": "jsn"}, "DIALNEXA_LOG_FORMAT"),
        # The flag wins over the variable, so its value is the one reported.
        (["--log.format", "jsn"], {"DIALNEXA_LOG_FORMAT": "json"}, "--log.format"),
        (["--config.file", "/nonexistent/x.yml"], {}, "--config.file"),
        (["--api-key-file", "/nonexistent/key"], {"DIALNEXA_API_KEY": ""}, "--api-key-file"),
        (["--web.listen-address", "nowhere"], {}, "--web.listen-address"),
        # A newline, a terminal escape or a bidi override in what is quoted is escaped.
        (
            ["check"],
            {"DIALNEXA_WEB_CONFIG_FILE": "/no/x\n\x1b[2Jw.yml"},
            "DIALNEXA_WEB_CONFIG_FILE",
        ),
        (["--config.file", "/nowhere/\r\x1b]0;t\x07c.yml"], {}, "--config.file"),
        (["--log.format", "js\nn\u202e"], {}, "--log.format"),
        ([], {"DIALNEXA_CAMPAIGN_IDS": "a,b\x1b[31m,c"}, "DIALNEXA_CAMPAIGN_IDS"),
    ],
)
def test_configuration_errors_name_what_the_user_typed(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    named: str,
) -> None:
    """A bad flag is named as typed (alias or toolkit spelling); a bad variable by its name.
    The error is one line that cannot drive the terminal, whatever it quotes."""
    monkeypatch.setenv("DIALNEXA_API_KEY", "k")
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dialnexa-exporter: configuration error: {named}: "), err
    assert err.count("\n") == 1
    assert err[:-1].isprintable(), err
    if named.startswith("--"):
        assert "DIALNEXA_" not in err.split(": ")[2]


@pytest.mark.parametrize("command", ["demo", "simulator"])
@pytest.mark.parametrize("argv", [["--log.format", "jsn"], ["--log.level", "loud"]])
def test_demo_and_simulator_refuse_a_bad_log_setting(
    capsys: pytest.CaptureFixture[str], command: str, argv: list[str]
) -> None:
    """The demo's and simulator's own log flags are checked too, not silently replaced."""
    with pytest.raises(SystemExit) as info:
        main([command, *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}/" in err
    assert "invalid choice" in err


@pytest.mark.parametrize(("field", "flag"), sorted(TOOLKIT_FLAGS.items()))
def test_toolkit_flags_and_their_aliases_set_the_same_setting(field: str, flag: str) -> None:
    """--web.listen-address and --listen-address (and the others) are one setting."""
    alias = "--" + field.replace("_", "-")
    parser = build_parser()
    assert getattr(parser.parse_args([flag, "x"]), field) == "x"
    assert getattr(parser.parse_args([alias, "y"]), field) == "y"


@pytest.mark.parametrize(
    "argv",
    [
        ["--poll-interval", "5"],
        ["--web.listen", ":1"],
        ["--log.lev", "debug"],
        ["demo", "--spe", "2"],
        ["check", "--onl"],
    ],
)
def test_abbreviated_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's prefix matching is off: a shortened flag is an error, not a guess."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "invalid choice" in err


SECRET = "sk_live_do_not_print_me_0123456789"


@pytest.mark.parametrize(
    "argv",
    [
        ["--api-key", SECRET],
        [f"--api-key={SECRET}"],
        ["check", "--api-key", SECRET],
        ["--api-keyy", SECRET],
        [f"--apikey={SECRET}"],
        [SECRET],
        ["--max-concurrency", "5", SECRET],
        ["demo", "--speed", SECRET],
    ],
)
def test_a_key_on_the_command_line_is_refused_without_being_repeated(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--api-key VALUE (and a value after a mistyped flag) exits 2; the value is never shown."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.err + captured.out
    if argv[0] == "--api-key" or argv[0].startswith("--api-key="):
        assert "DIALNEXA_API_KEY" in captured.err


def test_version_names_the_versions_that_matter(capsys: pytest.CaptureFixture[str]) -> None:
    """--version: name and version, Python, aiohttp and platform; exit 0."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dialnexa-exporter {exporter.__version__}\n")
    assert f"python {platform.python_version()}" in out
    assert f"aiohttp {aiohttp.__version__}" in out
    assert "httptools" not in out
    assert platform.platform() in out


@pytest.mark.slow
async def test_a_taken_port_stops_start_up_before_any_request(
    start_simulator: StartSim,
) -> None:
    """The port is bound before polling: when it is taken, the process exits 2 naming the
    listen address setting, and the API never saw a request."""
    sim = await start_simulator([campaign("cmp_a")])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DIALNEXA_API_KEY": API_KEY,
            "DIALNEXA_API_URL": sim.api_url,
            "DIALNEXA_CAMPAIGN_IDS": "cmp_a",
        }
        process = await spawn_exporter(env, "--web.listen-address", f"127.0.0.1:{port}")
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "configuration error: --web.listen-address: " in lines[0]  # as typed
    assert f"127.0.0.1:{port}" in lines[0]
    assert sim.sim.stats.requests == 0


def test_a_removed_setting_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who still sets DIALNEXA_HTTP_CLIENT gets one line naming it, exit 2, no trace."""
    monkeypatch.setenv("DIALNEXA_API_KEY", "k" * 20)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    monkeypatch.setenv("DIALNEXA_HTTP_CLIENT", "builtin")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "DIALNEXA_HTTP_CLIENT: was removed" in err
    assert "Traceback" not in err
