"""What hostile traffic can make the exporter log (exporter/logs.py): no credential in any line,
whatever the format; a malformed request, a client that hangs up or an accept error is one
line per burst at most, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web

from exporter.demo.simulator import load_campaigns
from exporter.logformat import formatter_for
from exporter.logs import (
    AcceptErrorBursts,
    BurstLog,
    QuietServerErrors,
    RedactingFormatter,
    install_log_filters,
    redact,
)
from tests.helpers import API_KEY, StartSim, read_serving_url, serve, spawn_exporter, wait_for

CREDENTIALS = "cHJvbWV0aGV1czpjaGFuZ2UtbWU="  # prometheus:change-me
TOKEN = "sk_live_0123456789abcdef"


@pytest.mark.parametrize(
    ("line", "kept", "gone"),
    [
        (f"Authorization: Basic {CREDENTIALS}", "Authorization: <redacted>", CREDENTIALS),
        (f"b'authorization: Bearer {TOKEN}\\x01'", "authorization: <redacted>", TOKEN),
        (f'{{"Authorization": "Basic {CREDENTIALS}"}}', '"Authorization": "<redacted>"', "cHJv"),
        (f"sent Bearer {TOKEN} upstream", "Bearer <redacted> upstream", TOKEN),
        ("Cookie: session=abcdef; theme=dark", "Cookie: <redacted>", "abcdef"),
        ("Proxy-Authorization: Digest abc", "Proxy-Authorization: <redacted>", "Digest abc"),
    ],
)
def test_credentials_are_redacted_in_every_shape(line: str, kept: str, gone: str) -> None:
    """Header values and auth-scheme tokens are replaced, the rest of the line kept."""
    redacted = redact(line)
    assert kept in redacted
    assert gone not in redacted


def test_ordinary_lines_pass_unchanged() -> None:
    """Words like "basic" or "authorization" without a credential after them are left alone."""
    for line in (
        "basic auth: 2 user(s)",
        "fetch of campaign cmp_a failed (unauthorized: HTTP 401)",
        "polling 3 campaigns every 30s",
    ):
        assert redact(line) == line


def _record_with_exception() -> logging.LogRecord:
    try:
        raise ValueError(f"bad header b'Authorization: Basic {CREDENTIALS}'")
    except ValueError as exc:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "from %s", ("x",), (ValueError, exc, None)
        )
    record.msg = f"request had Bearer {TOKEN}: %s"
    return record


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_every_format_is_scrubbed_message_and_traceback_alike(fmt: str) -> None:
    """Through the exporter's formatter, neither the message nor the exception text carries
    the credential, in any log format (and JSON stays JSON)."""
    line = RedactingFormatter(formatter_for(fmt)).format(_record_with_exception())
    assert CREDENTIALS not in line
    assert TOKEN not in line
    assert "<redacted>" in line
    if fmt == "json":
        assert json.loads(line)["level"] == "error"


def test_a_burst_is_one_warning_and_the_rest_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 events in a window: one warning, 99 debug lines; the first event after the window
    warns again and says how many came in between."""
    now = [0.0]
    logger = logging.getLogger("tests.burst")
    burst = BurstLog(logger, "malformed HTTP requests", window=60, monotonic=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="tests.burst"):
        for _ in range(100):
            burst.event("answered 400")
        now[0] = 60.0
        burst.event("answered 400")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(warnings) == 2
    assert len(debugs) == 99
    assert "99 more since the last report" in warnings[1]


@pytest.fixture
def log_filters() -> Iterator[None]:
    """The CLI's filters on aiohttp's and asyncio's loggers, removed after the test."""
    install_log_filters()
    yield
    for name in ("aiohttp.server", "asyncio"):
        logger = logging.getLogger(name)
        for item in list(logger.filters):
            if isinstance(item, QuietServerErrors | AcceptErrorBursts):
                logger.removeFilter(item)


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


@pytest.mark.usefixtures("log_filters")
async def test_malformed_requests_to_a_stock_aiohttp_server_log_one_line_without_their_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's own server (the simulator's, the tests') logs a traceback quoting the request
    for each malformed one; behind the filter, 50 of them are one warning and no credential."""
    app = web.Application()
    app.router.add_get("/", _ok)
    server = await serve(app)
    raw = f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {CREDENTIALS}\x01\r\n\r\n".encode()
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(50):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(raw)
                assert (await reader.read()).startswith(b"HTTP/1.0 400")
                writer.close()
    finally:
        await server.close()
    assert CREDENTIALS not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "malformed HTTP requests" in warnings[0].getMessage()


@pytest.mark.usefixtures("log_filters")
async def test_accept_errors_are_one_warning_per_burst_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio reports each failed accept (EMFILE when descriptors run out) with a traceback;
    500 of them are one warning naming the reason."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock, caplog.at_level(logging.DEBUG):
        for _ in range(500):
            try:
                raise OSError(errno.EMFILE, "Too many open files")
            except OSError as exc:
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": sock,
                    }
                )
    above_debug = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert len(above_debug) == 1
    assert above_debug[0].levelno == logging.WARNING
    assert "Too many open files" in above_debug[0].getMessage()
    assert "Traceback" not in caplog.text


# --- the exporter's own log, end to end -----------------------------------------------------


async def _malformed_with_credentials(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The control character makes the Authorization line itself the one aiohttp quotes.
    head = "GET /metrics HTTP/1.1\r\nHost: x\r\n"
    writer.write(f"{head}Authorization: Basic {CREDENTIALS}\x01\r\n\r\n".encode())
    await reader.read()
    writer.close()


async def _hang_up_mid_download(port: int) -> None:
    """A plain /metrics download abandoned after its first bytes, the socket's receive
    buffer kept small so the exporter is still writing when the reset comes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
    await reader.readexactly(1024)
    writer.transport.abort()


@pytest.mark.slow
async def test_the_exporters_log_stays_quiet_and_clean_under_hostile_clients(
    start_simulator: StartSim,
) -> None:
    """The real process at its default log level: 200 malformed requests carrying basic-auth
    credentials and 20 clients hanging up mid-download leave no traceback, no credential,
    and at most one warning line."""
    campaigns = load_campaigns(500)
    sim = await start_simulator(campaigns)
    env = {
        "PATH": "/usr/bin:/bin",
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": sim.api_url,
        "DIALNEXA_CAMPAIGN_IDS": ",".join(c.id for c in campaigns),
        "DIALNEXA_LISTEN_ADDRESS": "127.0.0.1:0",
    }
    process = await spawn_exporter(env, stdout=asyncio.subprocess.DEVNULL)
    try:
        url, _ = await read_serving_url(process)
        assert url.startswith("http://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        await wait_for(lambda: sim.sim.stats.requests >= len(campaigns), within=60, what="a round")
        for _ in range(200):
            await _malformed_with_credentials(port)
        for _ in range(20):
            await _hang_up_mid_download(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = stderr.decode()
    assert CREDENTIALS not in log
    assert "Traceback" not in log
    warnings = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) <= 1, warnings
