"""The API key never leaves the Authorization header: not in logs, pages, errors or reprs.

The exporter runs through every failure mode of the simulator (in-process with caplog at DEBUG,
and as a real ``python -m exporter`` process at debug level, text and JSON logs), with the key
from the environment and from DIALNEXA_API_KEY_FILE; everything it emits is searched for the
key, its first 8 characters and its last 12.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import signal
import socket
import traceback
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from exporter.api.client import DialNexaClient, FetchError, create_session
from exporter.config import ConfigError, Settings, load_settings
from exporter.demo.simulator import Fault, FaultKind
from exporter.logformat import JsonFormatter
from exporter.polling.poller import Poller
from exporter.web.server import SETTINGS
from tests.helpers import (
    RunningExporter,
    RunningSimulator,
    StartExporter,
    StartSim,
    campaign,
    serve,
    spawn_exporter,
    wait_for,
)

KEY = "sk_live_SECRET_7f3a9c2e5b1d4f60a8e2c9b7d1f3a5e7"
NEEDLES = (KEY, KEY[:8], KEY[-12:])
ENDPOINTS = ("/metrics", "/", "/healthz", "/readyz", "/no-such-page")


def fault_table(other_host: str) -> dict[str, Fault | None]:
    """One campaign per failure mode of the simulator (None: answers normally)."""
    reflect = {  # hostile upstream: the key reflected into unusable fields of a 200 body
        "reflect_count": {"total_leads": KEY},
        "reflect_id": {"id": KEY},
        "reflect_status": {"status": [KEY]},
        "reflect_created": {"created_at": KEY},
    }
    table: dict[str, Fault | None] = {
        "ok": None,
        "s500": Fault(FaultKind.STATUS, status=500),
        "s502": Fault(FaultKind.STATUS, status=502),
        "s401": Fault(FaultKind.STATUS, status=401),
        "s403": Fault(FaultKind.STATUS, status=403),
        "s400": Fault(FaultKind.STATUS, status=400),
        "s404": Fault(FaultKind.STATUS, status=404),
        "ra_seconds": Fault(FaultKind.RATE_LIMIT, retry_after="1"),
        "ra_none": Fault(FaultKind.RATE_LIMIT),
        "slow": Fault(FaultKind.SLOW, delay=5),
        "drip": Fault(FaultKind.DRIP, delay=0.1),
        "bad_json": Fault(FaultKind.BAD_JSON),
        "empty": Fault(FaultKind.EMPTY),
        "html": Fault(FaultKind.HTML),
        "array": Fault(FaultKind.ARRAY),
        "wrong_id": Fault(FaultKind.WRONG_ID),
        "redirect_away": Fault(FaultKind.REDIRECT, status=307, location=other_host),
        "redirect_loop": Fault(
            FaultKind.REDIRECT, status=302, location="/v1/campaigns/redirect_loop"
        ),
        "huge": Fault(FaultKind.HUGE, size=5 * 1024 * 1024),
        "huge_chunked": Fault(FaultKind.HUGE, size=5 * 1024 * 1024, chunked=True),
        "disconnect": Fault(FaultKind.DISCONNECT),
        "html_with_key": Fault(FaultKind.BODY, body=f"<html>token {KEY}</html>".encode()),
        "bad_json_with_key": Fault(FaultKind.BODY, body=f'{{"error": "{KEY}'.encode()),
    }
    for name, fields in reflect.items():
        body = {"id": name, "name": "reflected", **fields}
        table[name] = Fault(FaultKind.BODY, body=json.dumps(body).encode())
    return table


def every_fault_kind_is_used() -> None:
    """The table covers every FaultKind the simulator has."""
    kinds = {f.kind for f in fault_table("http://x.invalid/").values() if f is not None}
    assert kinds == set(FaultKind)


class Haystack:
    """Everything the exporter emitted, labelled, to search for the key."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        """Remember one emitted text."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.items.append((where, text))

    def assert_clean(self, minimum: int) -> None:
        """No needle anywhere; and enough was gathered for that to mean something."""
        assert len(self.items) >= minimum, [where for where, _ in self.items]
        leaks = [
            (where, needle) for where, text in self.items for needle in NEEDLES if needle in text
        ]
        assert leaks == [], leaks


def exception_texts(exc: BaseException, *, suppressed: bool = False) -> Iterable[str]:
    """str, repr, args and traceback of an exception and of the exceptions chained to it.

    The chain is followed as Python prints it (``__cause__``, or ``__context__`` unless
    suppressed by ``raise ... from None``); with ``suppressed`` every context is followed too.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield "".join(traceback.format_exception(current))
        if current.__cause__ is not None:
            stack.append(current.__cause__)
        context = current.__context__
        if context is not None and (suppressed or not current.__suppress_context__):
            stack.append(context)


@contextlib.asynccontextmanager
async def recording_host() -> AsyncIterator[tuple[str, list[str | None]]]:
    """Another origin that records the Authorization header of any request it gets."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await serve(app)
    try:
        yield str(server.make_url("/v1/campaigns/elsewhere")), seen
    finally:
        await server.close()


async def start_faulty_simulator(
    start_simulator: StartSim, other: str
) -> tuple[RunningSimulator, list[str]]:
    """A simulator accepting KEY with one campaign per failure mode."""
    table = fault_table(other)
    sim = await start_simulator([campaign(cid) for cid in table], api_key=KEY, speed=0.0)
    for cid, fault in table.items():
        if fault is not None:
            sim.sim.set_fault(fault, cid)
    return sim, list(table)


def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def attempts_seen(text: str, campaign_ids: Iterable[str]) -> bool:
    """Every campaign has had at least two fetches end (success or counted error)."""
    done: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'dialnexa_exporter_campaign_errors_total\{campaign_id="([^"]+)",', line)
        if match:
            done[match[1]] = done.get(match[1], 0) + float(line.rsplit(" ", 1)[1])
        match = re.match(r'dialnexa_exporter_campaign_up\{campaign_id="([^"]+)"\} 1', line)
        if match:
            done[match[1]] = done.get(match[1], 0) + 2
    return all(done.get(cid, 0) >= 2 for cid in campaign_ids)


async def collect_endpoints(
    session: aiohttp.ClientSession, base: str, haystack: Haystack, label: str
) -> None:
    """Every endpoint's body (and /metrics gzipped) into the haystack."""
    for path in ENDPOINTS:
        async with session.get(base + path, headers={"Accept-Encoding": "identity"}) as response:
            haystack.add(f"{label} {path} headers", repr(dict(response.headers)))
            haystack.add(f"{label} {path}", await response.read())
    async with session.get(base + "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        body = await response.read()
        assert response.headers.get("Content-Encoding") == "gzip"
        haystack.add(f"{label} /metrics gzip", gzip.decompress(body))


def collect_object_reprs(settings: Settings, poller: Poller, haystack: Haystack, label: str) -> int:
    """repr/str of Settings, the poller, the client and everything they hold; returns #clients."""
    haystack.add(f"{label} repr(settings)", repr(settings))
    haystack.add(f"{label} str(settings)", str(settings))
    haystack.add(f"{label} settings json", settings.model_dump_json())
    haystack.add(f"{label} settings dump", repr(settings.model_dump()))
    haystack.add(f"{label} repr(poller)", repr(poller))
    haystack.add(f"{label} vars(poller)", repr(vars(poller)))
    held = list(vars(poller).values())
    for part in list(held):  # the poller's parts (the round runner holds the client)
        if hasattr(part, "__dict__") and not isinstance(part, type):
            haystack.add(f"{label} vars({type(part).__name__})", repr(vars(part)))
            held.extend(vars(part).values())
    clients = {id(v): v for v in held if isinstance(v, DialNexaClient)}.values()
    for client in clients:
        haystack.add(f"{label} repr(client)", repr(client))
        haystack.add(f"{label} str(client)", str(client))
        haystack.add(f"{label} vars(client)", repr(vars(client)))
        session = vars(client)["_session"]  # what sends the headers
        haystack.add(f"{label} repr(session)", repr(session))
    return len(clients)


def collect_logs(caplog: pytest.LogCaptureFixture, haystack: Haystack) -> None:
    """Every captured record, as the text and the JSON formatters would write it."""
    text_format = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    json_format = JsonFormatter()
    for record in caplog.records:
        haystack.add(f"log {record.name}", text_format.format(record))
        haystack.add(f"json log {record.name}", json_format.format(record))
        if record.exc_info and record.exc_info[1] is not None:
            for text in exception_texts(record.exc_info[1]):
                haystack.add(f"log exception {record.name}", text)
    haystack.add("caplog.text", caplog.text)


async def test_in_process_exporters_never_show_the_key(
    start_simulator: StartSim,
    start_exporter: StartExporter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Key from env and file; every fault, 401 key, refused and DNS: no key in any output."""
    caplog.set_level(logging.DEBUG)
    haystack = Haystack()
    async with recording_host() as (other, other_seen):
        sim, ids = await start_faulty_simulator(start_simulator, other)
        rejecting = await start_simulator(
            [campaign("cmp_a"), campaign("cmp_b")], api_key="another-key"
        )
        key_file = tmp_path / "api-key"
        key_file.write_text(f"\n  {KEY}  \n")
        base = {
            "poll_interval_seconds": 0.05,
            "request_timeout_seconds": 0.3,
            "listen_address": "127.0.0.1:0",
            "log_level": "debug",
        }
        # key from the environment / from the key file, as a deployment would set them
        monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
        from_env = [
            load_settings({**base, "api_url": sim.api_url, "campaign_ids": ids}),
            load_settings(
                {
                    **base,
                    "api_url": f"http://127.0.0.1:{closed_port()}/v1",
                    "campaign_ids": ["cmp_x"],
                }
            ),
        ]
        monkeypatch.delenv("DIALNEXA_API_KEY")
        monkeypatch.setenv("DIALNEXA_API_KEY_FILE", str(key_file))
        from_file = [
            load_settings(
                {**base, "api_url": rejecting.api_url, "campaign_ids": ["cmp_a", "cmp_b"]}
            ),
            load_settings(
                {**base, "api_url": "http://dialnexa-api.invalid/v1", "campaign_ids": ["cmp_y"]}
            ),
        ]
        monkeypatch.delenv("DIALNEXA_API_KEY_FILE")
        for settings in from_env + from_file:
            assert settings.api_key is not None
            assert settings.api_key.get_secret_value() == KEY
        exporters = [await start_exporter(settings) for settings in from_env + from_file]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for exporter in exporters:
                campaign_ids = exporter.poller.campaign_ids

                async def fetched_twice(
                    exporter: RunningExporter = exporter, ids: Any = campaign_ids
                ) -> bool:
                    return attempts_seen(await exporter.metrics_text(), ids)

                await wait_for(fetched_twice, what="two fetches of every campaign")
            for number, exporter in enumerate(exporters):
                label = f"exporter {number}"
                await collect_endpoints(session, exporter.url.rstrip("/"), haystack, label)
                clients = collect_object_reprs(
                    exporter.app[SETTINGS], exporter.poller, haystack, label
                )
                assert clients == 1
        assert other_seen == []  # the redirect elsewhere was refused before any request
    assert rejecting.sim.stats.requests >= 4  # the rejected key really was tried
    collect_logs(caplog, haystack)
    assert any("failed (unauthorized" in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    haystack.assert_clean(minimum=len(exporters) * 20)


async def test_client_errors_never_carry_the_key(start_simulator: StartSim) -> None:
    """str, repr, args and traceback of every FetchError (and its chain) for every fault."""
    haystack = Haystack()
    async with recording_host() as (other, other_seen):
        sim, ids = await start_faulty_simulator(start_simulator, other)
        targets = [(sim.api_url, cid) for cid in ids if cid != "ok"]
        targets += [
            (f"http://127.0.0.1:{closed_port()}/v1", "cmp_x"),
            ("http://dialnexa-api.invalid/v1", "cmp_y"),
            (sim.api_url, "cmp_unknown"),
        ]
        errors: list[FetchError] = []
        for url, cid in targets:
            session = create_session(4)
            client = DialNexaClient(session, url, SecretStr(KEY), timeout_seconds=0.3)
            haystack.add("repr(client)", repr(client))
            haystack.add("repr(session)", repr(session))
            with pytest.raises(FetchError) as info:
                await client.fetch_campaign(cid)
            await client.close()
            errors.append(info.value)
        assert other_seen == []
    assert len(errors) == len(targets)
    for (_, cid), error in zip(targets, errors, strict=True):
        # Our own key is in no exception object at all, however deep one looks; a key that a
        # hostile upstream reflected into the body may sit in a suppressed context (the
        # pydantic error), which is never printed: there, check what Python would print.
        deep = not cid.startswith(("reflect_", "html_with_key", "bad_json_with_key"))
        for text in exception_texts(error, suppressed=deep):
            haystack.add(f"{type(error).__name__} ({cid})", text)
    haystack.assert_clean(minimum=len(targets) * 4)


@pytest.mark.parametrize(
    ("variable", "bad_value", "setting"),
    [
        ("DIALNEXA_POLL_INTERVAL_SECONDS", "-1", "DIALNEXA_POLL_INTERVAL_SECONDS"),
        ("DIALNEXA_POLL_INTERVAL_SECONDS", KEY, "DIALNEXA_POLL_INTERVAL_SECONDS"),
        ("DIALNEXA_LOG_LEVEL", KEY, "DIALNEXA_LOG_LEVEL"),
        ("DIALNEXA_API_URL", f"https://user:{KEY}@api.example.com/v1", "DIALNEXA_API_URL"),
        ("DIALNEXA_API_URL", f"ftp://{KEY}.example.com/v1", "DIALNEXA_API_URL"),
        ("DIALNEXA_LISTEN_ADDRESS", KEY, "DIALNEXA_LISTEN_ADDRESS"),
        ("DIALNEXA_MAX_CONCURRENCY", KEY, "DIALNEXA_MAX_CONCURRENCY"),
        ("DIALNEXA_API_KEY", KEY + "\x07", "DIALNEXA_API_KEY"),
        ("DIALNEXA_API_KEY", KEY + "\nsecond line", "DIALNEXA_API_KEY"),
        ("DIALNEXA_API_KEY_FILE", "/nonexistent/api-key", "DIALNEXA_API_KEY_FILE"),
    ],
    ids=lambda value: value if len(value) < 40 and KEY[:8] not in value else "key-in-value",
)
def test_configuration_errors_never_carry_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, bad_value: str, setting: str
) -> None:
    """A bad setting while the key is set (or the key itself bad): ConfigError names it, no key."""
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    monkeypatch.setenv(variable, bad_value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == setting
    haystack = Haystack()
    for text in exception_texts(info.value):
        haystack.add("ConfigError", text)
    haystack.assert_clean(minimum=4)


# --- the real process --------------------------------------------------------------------


async def read_stream(stream: asyncio.StreamReader, into: bytearray) -> None:
    """Append everything from ``stream`` to ``into`` until EOF."""
    while chunk := await stream.read(65536):
        into.extend(chunk)


def child_environment(**values: str) -> dict[str, str]:
    """A minimal environment for the exporter process."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values}


@pytest.mark.slow
@pytest.mark.parametrize(("log_format", "key_source"), [("text", "env"), ("json", "file")])
async def test_process_at_debug_level_never_shows_the_key(
    start_simulator: StartSim, tmp_path: Path, log_format: str, key_source: str
) -> None:
    """`python -m exporter` at debug level through every fault: no key on stderr/stdout/pages."""
    haystack = Haystack()
    async with recording_host() as (other, other_seen):
        sim, ids = await start_faulty_simulator(start_simulator, other)
        env = child_environment(
            DIALNEXA_API_URL=sim.api_url,
            DIALNEXA_CAMPAIGN_IDS=",".join(ids),
            DIALNEXA_LISTEN_ADDRESS="127.0.0.1:0",
            DIALNEXA_POLL_INTERVAL_SECONDS="0.05",
            DIALNEXA_REQUEST_TIMEOUT_SECONDS="0.3",
            DIALNEXA_LOG_LEVEL="debug",
            DIALNEXA_LOG_FORMAT=log_format,
        )
        if key_source == "env":
            env["DIALNEXA_API_KEY"] = KEY
        else:
            key_file = tmp_path / "api-key"
            key_file.write_text(KEY + "\n")
            env["DIALNEXA_API_KEY_FILE"] = str(key_file)
        process = await spawn_exporter(env)
        assert process.stdout is not None
        assert process.stderr is not None
        stdout, stderr = bytearray(), bytearray()
        readers = [
            asyncio.create_task(read_stream(process.stdout, stdout)),
            asyncio.create_task(read_stream(process.stderr, stderr)),
        ]
        try:
            await wait_for(
                lambda: (
                    re.search(rb"serving metrics on http://[\d.]+:(\d+)/metrics", stderr)
                    is not None
                ),
                within=30,
                what="the exporter to serve",
            )
            match = re.search(rb"serving metrics on http://[\d.]+:(\d+)/metrics", stderr)
            assert match is not None
            base = f"http://127.0.0.1:{int(match[1])}"
            async with aiohttp.ClientSession(auto_decompress=False) as session:

                async def fetched_twice() -> bool:
                    async with session.get(
                        base + "/metrics", headers={"Accept-Encoding": "identity"}
                    ) as r:
                        return attempts_seen(await r.text(), ids)

                await wait_for(fetched_twice, within=30, what="two fetches of every campaign")
                await collect_endpoints(session, base, haystack, "process")
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                code = await process.wait()
                await asyncio.gather(*readers)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            for reader in readers:
                reader.cancel()
        assert other_seen == []
    assert code == 0, stderr.decode(errors="replace")[-2000:]
    log = stderr.decode("utf-8", "replace")
    assert "Traceback" not in log
    assert "DEBUG" in log.upper()
    assert "failed (unauthorized" in log
    if log_format == "json":
        for line in log.splitlines():
            if line.strip():
                assert isinstance(json.loads(line), dict), line
    haystack.add("stderr", bytes(stderr))
    haystack.add("stdout", bytes(stdout))
    haystack.assert_clean(minimum=len(ENDPOINTS) * 2 + 3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "bad_value"),
    [
        ("DIALNEXA_POLL_INTERVAL_SECONDS", KEY),
        ("DIALNEXA_API_URL", f"https://user:{KEY}@api.example.com/v1"),
        ("DIALNEXA_API_KEY", KEY + "\x07"),
    ],
    ids=["key-as-interval", "key-in-url", "key-with-control-char"],
)
async def test_process_configuration_error_never_shows_the_key(
    variable: str, bad_value: str
) -> None:
    """With the key set, a bad setting exits 2 with one line naming the setting and no key."""
    env = child_environment(
        DIALNEXA_API_KEY=KEY, DIALNEXA_CAMPAIGN_IDS="cmp_a", DIALNEXA_LOG_LEVEL="debug"
    )
    env[variable] = bad_value
    process = await spawn_exporter(env)
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode == 2
    text = stderr.decode("utf-8", "replace")
    assert variable in text
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    haystack = Haystack()
    haystack.add("stderr", stderr)
    haystack.add("stdout", stdout)
    haystack.assert_clean(minimum=2)


def test_fault_table_covers_every_fault_kind() -> None:
    """The secrets run goes through every fault mode the simulator has."""
    every_fault_kind_is_used()


def test_haystack_finds_a_leak() -> None:
    """The search itself works: the key, its prefix or its tail anywhere is reported."""
    for needle in NEEDLES:
        haystack = Haystack()
        haystack.add("somewhere", f"Authorization: Bearer {needle}...")
        with pytest.raises(AssertionError):
            haystack.assert_clean(minimum=1)
