"""Egress proxies: HTTPS_PROXY / HTTP_PROXY / NO_PROXY, tried against a real tinyproxy.

The API is the project's simulator, over TLS (trustme certificates) or plain HTTP; the proxy is
Debian's tinyproxy started by the test on loopback, whose log names every connection and request
line it got, or a scripted proxy that records every byte the exporter sends it, for what tinyproxy
cannot show: that an https:// API's key only ever travels inside the TLS tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.api.client import (
    ConnectionFailedError,
    DialNexaClient,
    RequestTimeoutError,
    create_session,
    proxy_for,
    request_headers,
)
from exporter.config import ConfigError
from exporter.demo.simulator import Simulator
from exporter.polling.outcome import Reason, error_reason
from tests.helpers import (
    API_KEY,
    RunningSimulator,
    StartExporter,
    StartSim,
    campaign,
    exporter_settings,
    spawn_exporter,
    trusting,
    value,
    wait_for,
)
from tests.prometheus_server import free_port
from tests.tinyproxy import TinyProxy, start_tinyproxy, tinyproxy_binary

USER = "alice"
PASSWORD = "pr0xy-S3cret-pw"  # the test proxy's password, to be found nowhere
CREDENTIALS = f"{USER}:{PASSWORD}"
# Every form the proxy credentials could leak in: as typed, in a Basic header, the password alone.
LEAKS = (PASSWORD, CREDENTIALS, base64.b64encode(CREDENTIALS.encode()).decode())

needs_tinyproxy = pytest.mark.skipif(
    tinyproxy_binary() is None, reason="tinyproxy not installed (tests/run.sh installs it)"
)


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., TinyProxy]]:
    """Factory: a tinyproxy on loopback (optionally with Basic credentials), stopped after."""
    started: list[TinyProxy] = []

    def start(basic_auth: tuple[str, str] | None = None) -> TinyProxy:
        directory = tmp_path / f"tinyproxy-{len(started)}"
        directory.mkdir()
        proxy = start_tinyproxy(directory, basic_auth=basic_auth)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@dataclass
class TlsApi:
    """The simulator served over TLS, and the CA its certificate comes from."""

    sim: RunningSimulator
    ca: trustme.CA

    def trust(self) -> ssl.SSLContext:
        """A client context trusting the simulator's CA."""
        return trusting(self.ca)


@pytest.fixture
async def tls_api() -> AsyncIterator[TlsApi]:
    """The simulator with campaign cmp_a on https://127.0.0.1:<port>/v1."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    sim = Simulator([campaign("cmp_a")], api_key=API_KEY)
    server = TestServer(sim.app(), host="127.0.0.1", port=0)
    await server.start_server(ssl=context)
    yield TlsApi(RunningSimulator(sim, server), ca)
    await server.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., DialNexaClient]]:
    """Factory: the API client for a URL, its proxy chosen from the environment as at start-up."""
    made: list[DialNexaClient] = []

    def make(api_url: str, trust: ssl.SSLContext | None = None) -> DialNexaClient:
        headers = request_headers(SecretStr(API_KEY))  # in the session, as client_for has it
        session = create_session(4, trust, proxy=proxy_for(api_url), headers=headers)
        client = DialNexaClient(session, api_url, SecretStr(API_KEY), timeout_seconds=5)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


# --- a scripted proxy that records what it is sent --------------------------------------------


@dataclass
class RecordingProxy:
    """A forward proxy on loopback that records every byte a client sends it.

    ``mode`` says what it does with a request head: ``tunnel`` answers a CONNECT and pipes
    both ways, as a real proxy does; ``answer`` sends ``reply`` and closes; ``close`` closes
    without a word; ``hang`` never answers.
    """

    mode: str = "tunnel"
    reply: bytes = b""
    received: bytearray = field(default_factory=bytearray)
    heads: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.received += head
            self.heads.append(head)
            if self.mode == "hang":
                await asyncio.Event().wait()
            if self.mode in ("answer", "close"):
                writer.write(self.reply)
                await writer.drain()
                return
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            assert method == b"CONNECT", "the scripted proxy tunnels only"
            host, _, port = target.decode().rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(
                self._pipe(reader, up_writer, record=True), self._pipe(up_reader, writer)
            )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, record: bool = False
    ) -> None:
        try:
            while chunk := await source.read(65536):
                if record:
                    self.received += chunk
                sink.write(chunk)
                await sink.drain()
        finally:
            sink.close()


@pytest.fixture
async def recording_proxy() -> AsyncIterator[Callable[..., Awaitable[RecordingProxy]]]:
    """Factory: a started RecordingProxy, stopped after the test."""
    started: list[RecordingProxy] = []

    async def start(mode: str = "tunnel", reply: bytes = b"") -> RecordingProxy:
        proxy = RecordingProxy(mode, reply)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


# --- through tinyproxy ------------------------------------------------------------------------


@needs_tinyproxy
async def test_https_api_goes_through_a_connect_tunnel(
    monkeypatch: pytest.MonkeyPatch,
    proxies: Callable[..., TinyProxy],
    tls_api: TlsApi,
    clients: Callable[..., DialNexaClient],
) -> None:
    """HTTPS_PROXY: an https:// API is reached through tinyproxy, by CONNECT only."""
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    api_url = tls_api.sim.api_url
    client = clients(api_url, tls_api.trust())
    for _ in range(3):
        assert (await client.fetch_campaign("cmp_a")).id == "cmp_a"
    port = tls_api.sim.server.port
    # One tunnel, kept alive for the three requests; the proxy never saw a request line of its
    # own, so never the key either.
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
    assert tls_api.sim.sim.stats.requests == 3
    assert API_KEY not in proxy.log()


@needs_tinyproxy
async def test_http_api_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
    proxies: Callable[..., TinyProxy],
    start_simulator: StartSim,
    clients: Callable[..., DialNexaClient],
) -> None:
    """HTTP_PROXY: an http:// API is asked through tinyproxy, with absolute request lines."""
    proxy = proxies()
    sim = await start_simulator([campaign("cmp_a")])
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # for https only: not used here
    client = clients(sim.api_url)
    assert (await client.fetch_campaign("cmp_a")).id == "cmp_a"
    assert proxy.requests() == [f"GET {sim.api_url}/campaigns/cmp_a HTTP/1.1"]
    assert sim.sim.stats.requests == 1


@needs_tinyproxy
@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "api.example.com, 127.0.0.1", "*", "127.0.0.1:1234,127.0.0.1"]
)
async def test_no_proxy_sends_the_api_past_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
    proxies: Callable[..., TinyProxy],
    tls_api: TlsApi,
    clients: Callable[..., DialNexaClient],
    no_proxy: str,
) -> None:
    """NO_PROXY naming the API's host: the API answers and the proxy gets no connection."""
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy)
    client = clients(tls_api.sim.api_url, tls_api.trust())
    assert (await client.fetch_campaign("cmp_a")).id == "cmp_a"
    assert tls_api.sim.sim.stats.requests == 1
    assert proxy.connections() == 0


@needs_tinyproxy
async def test_no_proxy_for_another_host_leaves_the_proxy_in_use(
    monkeypatch: pytest.MonkeyPatch,
    proxies: Callable[..., TinyProxy],
    tls_api: TlsApi,
    clients: Callable[..., DialNexaClient],
) -> None:
    """NO_PROXY naming other hosts only (lower-case spelling): the proxy is still used."""
    proxy = proxies()
    monkeypatch.setenv("https_proxy", proxy.url())
    monkeypatch.setenv("no_proxy", "localhost,.internal.example,127.0.0.10")
    client = clients(tls_api.sim.api_url, tls_api.trust())
    assert (await client.fetch_campaign("cmp_a")).id == "cmp_a"
    assert proxy.connections() == 1


@needs_tinyproxy
async def test_proxy_credentials_open_the_proxy_and_show_nowhere(
    monkeypatch: pytest.MonkeyPatch,
    proxies: Callable[..., TinyProxy],
    tls_api: TlsApi,
    start_simulator: StartSim,
    clients: Callable[..., DialNexaClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """user:password in HTTPS_PROXY / HTTP_PROXY opens tinyproxy's BasicAuth, on both paths,
    and is in no log record (any level, aiohttp's included) nor in the client's repr."""
    caplog.set_level(logging.DEBUG)
    proxy = proxies(basic_auth=(USER, PASSWORD))
    sim = await start_simulator([campaign("cmp_b")])
    monkeypatch.setenv("HTTPS_PROXY", proxy.url(CREDENTIALS))
    monkeypatch.setenv("HTTP_PROXY", proxy.url(CREDENTIALS))
    tunnelled = clients(tls_api.sim.api_url, tls_api.trust())
    forwarded = clients(sim.api_url)
    assert (await tunnelled.fetch_campaign("cmp_a")).id == "cmp_a"
    assert (await forwarded.fetch_campaign("cmp_b")).id == "cmp_b"
    assert [line.split()[0] for line in proxy.requests()] == ["CONNECT", "GET"]
    seen = caplog.text + repr(tunnelled) + repr(forwarded)
    assert "go through the proxy http://127.0.0.1:" in caplog.text  # said once, without them
    for leak in (*LEAKS, USER + ":"):
        assert leak not in seen


@needs_tinyproxy
@pytest.mark.parametrize("credentials", ["", f"{USER}:wrong-password"])
async def test_a_proxy_refusing_the_credentials_is_a_typed_failure(
    monkeypatch: pytest.MonkeyPatch,
    proxies: Callable[..., TinyProxy],
    tls_api: TlsApi,
    clients: Callable[..., DialNexaClient],
    credentials: str,
) -> None:
    """No or wrong proxy credentials: a connection failure saying the proxy refused the
    tunnel (with its status), not a word of the credentials; the API saw nothing."""
    proxy = proxies(basic_auth=(USER, PASSWORD))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url(credentials))
    client = clients(tls_api.sim.api_url, tls_api.trust())
    with pytest.raises(ConnectionFailedError) as info:
        await client.fetch_campaign("cmp_a")
    port = tls_api.sim.server.port
    # tinyproxy asks for credentials with 407 and refuses wrong ones with 401.
    assert re.fullmatch(
        rf"the proxy refused a tunnel to 127\.0\.0\.1:{port}: "
        r"(407 Proxy Authentication Required|401 Unauthorized)",
        str(info.value),
    ), str(info.value)
    assert error_reason(info.value) == Reason.CONNECTION
    assert "wrong-password" not in str(info.value) + repr(info.value)
    assert tls_api.sim.sim.stats.requests == 0


@needs_tinyproxy
@pytest.mark.slow
async def test_the_exporter_process_through_an_authenticated_proxy_leaks_nothing(
    proxies: Callable[..., TinyProxy], tls_api: TlsApi, tmp_path: Path
) -> None:
    """The real process, HTTPS_PROXY with credentials and debug logs: campaigns are served
    through tinyproxy's tunnel, and the credentials are in no log line, metric or page."""
    proxy = proxies(basic_auth=(USER, PASSWORD))
    ca_file = tmp_path / "ca.pem"
    tls_api.ca.cert_pem.write_to_path(str(ca_file))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": tls_api.sim.api_url,
        "DIALNEXA_CAMPAIGN_IDS": "cmp_a",
        "DIALNEXA_LISTEN_ADDRESS": "127.0.0.1:0",
        "DIALNEXA_POLL_INTERVAL_SECONDS": "0.2",
        "DIALNEXA_LOG_LEVEL": "debug",
        "HTTPS_PROXY": proxy.url(CREDENTIALS),
        "SSL_CERT_FILE": str(ca_file),  # the trust store that holds the simulator's CA
    }
    process = await spawn_exporter(env)
    try:
        assert process.stderr is not None
        first_lines = b""
        while b"serving metrics on " not in first_lines:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            assert line, first_lines.decode()
            first_lines += line
        match = re.search(rb"serving metrics on (http://[^/\s]+)/", first_lines)
        assert match is not None
        base = match.group(1).decode()
        pages: dict[str, str] = {}
        async with aiohttp.ClientSession() as session:

            async def served() -> bool:
                async with session.get(f"{base}/metrics") as response:
                    pages["metrics"] = await response.text()
                return "\ndialnexa_campaign_info{" in pages["metrics"]

            await wait_for(served, what="campaign series fetched through the proxy")
            async with session.get(f"{base}/") as response:
                pages["status"] = await response.text()
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        rest = await asyncio.wait_for(process.stderr.read(), 30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = (first_lines + rest).decode()
    assert "go through the proxy http://127.0.0.1:" in log
    assert proxy.requests()[0] == f"CONNECT 127.0.0.1:{tls_api.sim.server.port} HTTP/1.1"
    for leak in (*LEAKS, USER + ":"):
        for where, text in (("log", log), *pages.items()):
            assert leak not in text, f"{leak!r} in the {where}"
    assert API_KEY not in proxy.log()


# --- the key never reaches the proxy on the https path ----------------------------------------


async def test_the_proxy_sees_a_connect_and_ciphertext_only(
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: Callable[..., Awaitable[RecordingProxy]],
    tls_api: TlsApi,
    clients: Callable[..., DialNexaClient],
) -> None:
    """Every byte the exporter sends a proxy for an https:// API: one CONNECT head with the
    proxy credentials and none of the request's headers, then TLS; the key is in none."""
    proxy = await recording_proxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", f"http://{CREDENTIALS}@"))
    client = clients(tls_api.sim.api_url, tls_api.trust())
    for _ in range(2):
        assert (await client.fetch_campaign("cmp_a")).id == "cmp_a"
    port = tls_api.sim.server.port
    (head,) = proxy.heads
    lines = head.decode().split("\r\n")
    assert lines[0] == f"CONNECT 127.0.0.1:{port} HTTP/1.1"
    names = {line.split(":", 1)[0].lower() for line in lines[1:] if line}
    # aiohttp's own defaults for a CONNECT; none of the request's headers, its key least.
    assert names <= {"host", "proxy-authorization", "user-agent", "accept", "accept-encoding"}
    assert f"Proxy-Authorization: Basic {LEAKS[2]}" in lines
    assert proxy.received.startswith(head)
    assert proxy.received[len(head)] == 0x16  # a TLS handshake record follows the head
    for secret in (API_KEY, "Bearer", "\r\nAuthorization:", "/v1/campaigns"):
        assert secret.encode() not in proxy.received


# --- a proxy that is down or refuses ----------------------------------------------------------


async def test_a_proxy_that_is_down_is_a_typed_counted_failure(
    monkeypatch: pytest.MonkeyPatch,
    start_simulator: StartSim,
    start_exporter: StartExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HTTP_PROXY at a closed port: each fetch fails as 'connection', counted in the metrics,
    and the log names the proxy's address, not the API's; the API is never reached."""
    caplog.set_level(logging.INFO)
    sim = await start_simulator([campaign("cmp_a")])
    closed = free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://{CREDENTIALS}@127.0.0.1:{closed}")
    exporter = await start_exporter(exporter_settings(sim, ["cmp_a"]))
    errors = "dialnexa_exporter_campaign_errors_total"
    samples = await exporter.wait_published(
        lambda s: (value(s, errors, campaign_id="cmp_a", reason="connection") or 0) >= 2,
        "two failed fetches counted",
    )
    assert (value(samples, "dialnexa_exporter_api_requests_total", code="error") or 0) >= 2
    assert value(samples, "dialnexa_exporter_campaign_up", campaign_id="cmp_a") == 0
    assert f"cannot connect to the proxy 127.0.0.1:{closed}: " in caplog.text
    assert sim.sim.stats.requests == 0
    for leak in LEAKS:
        assert leak not in caplog.text + await exporter.metrics_text()


@pytest.mark.parametrize(
    ("mode", "reply", "expected"),
    [
        pytest.param(
            "answer",
            b"HTTP/1.1 403 \x1b[2J\x08\x08Go away\r\nContent-Length: 0\r\n\r\n",
            "the proxy refused a tunnel to 127.0.0.1:{port}: 403 Forbidden",
            id="refused-with-control-characters",
        ),
        pytest.param(
            "answer",
            b"HTTP/1.1 599 " + b"x" * 5000 + b"\r\n\r\n",
            "the proxy refused a tunnel to 127.0.0.1:{port}: 599 error",
            id="odd-status-long-phrase",
        ),
        pytest.param(
            "answer",
            b"HTTP/1.1 200 OK\r\n\r\nnot a TLS record at all",
            None,
            id="tunnel-to-garbage",
        ),
        pytest.param("close", b"", None, id="closed-without-a-word"),
        pytest.param("answer", b"\x00\xff garbage\r\n\r\n", None, id="not-http"),
    ],
)
async def test_a_misbehaving_proxy_is_a_typed_failure(
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: Callable[..., Awaitable[RecordingProxy]],
    tls_api: TlsApi,
    clients: Callable[..., DialNexaClient],
    mode: str,
    reply: bytes,
    expected: str | None,
) -> None:
    """Refusals (with hostile text), odd answers, garbage and closed connections from the proxy:
    each a ConnectionFailedError with a one-line reason and no text of the proxy's own."""
    proxy = await recording_proxy(mode, reply)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    client = clients(tls_api.sim.api_url, tls_api.trust())
    with pytest.raises(ConnectionFailedError) as info:
        await client.fetch_campaign("cmp_a")
    message = str(info.value)
    if expected is not None:
        assert message == expected.format(port=tls_api.sim.server.port)
    assert message.isprintable()
    assert "Go away" not in message
    assert len(message) < 200
    assert error_reason(info.value) == Reason.CONNECTION
    assert tls_api.sim.sim.stats.requests == 0


async def test_a_proxy_that_never_answers_meets_the_request_deadline(
    monkeypatch: pytest.MonkeyPatch,
    recording_proxy: Callable[..., Awaitable[RecordingProxy]],
    tls_api: TlsApi,
) -> None:
    """A proxy holding the CONNECT unanswered: the whole-request deadline ends the fetch."""
    proxy = await recording_proxy("hang")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    session = create_session(4, tls_api.trust(), proxy=proxy_for(tls_api.sim.api_url))
    client = DialNexaClient(session, tls_api.sim.api_url, SecretStr(API_KEY), timeout_seconds=0.5)
    try:
        with pytest.raises(RequestTimeoutError):
            await client.fetch_campaign("cmp_a")
    finally:
        await client.close()
    assert len(proxy.heads) == 1


# --- what the environment may say -------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("HTTPS_PROXY", f"https://{CREDENTIALS}@proxy.example:3128"),
        ("HTTPS_PROXY", f"socks5://{CREDENTIALS}@proxy.example:1080"),
        ("https_proxy", f"http://{CREDENTIALS}@proxy.example:3128/some/path"),
        ("HTTPS_PROXY", f"http://{CREDENTIALS}@"),
        ("HTTPS_PROXY", f"http://{CREDENTIALS}@proxy.example:99999"),
        ("HTTPS_PROXY", f"http://{CREDENTIALS}@[::1"),
    ],
)
def test_a_proxy_value_that_cannot_work_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    """A proxy URL aiohttp cannot use: ConfigError naming the variable, never its value."""
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError) as info:
        proxy_for("https://api.dialnexa.com/v1")
    assert info.value.setting == variable
    for leak in (*LEAKS, "proxy.example"):
        assert leak not in str(info.value)


def test_which_variable_applies_to_which_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY for https, HTTP_PROXY for http, lower case first, scheme-less means http,
    blank means unset, NO_PROXY by host suffix; ALL_PROXY is not read."""
    monkeypatch.setenv("ALL_PROXY", "http://all.example:1")
    assert proxy_for("https://api.dialnexa.com/v1") is None
    monkeypatch.setenv("HTTP_PROXY", "http://plain.example:3128")
    assert proxy_for("https://api.dialnexa.com/v1") is None
    assert str(proxy_for("http://api.dialnexa.com/v1")) == "http://plain.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "tunnel.example:8080")
    assert str(proxy_for("https://api.dialnexa.com/v1")) == "http://tunnel.example:8080"
    monkeypatch.setenv("https_proxy", "http://lower.example:3128")
    assert str(proxy_for("https://api.dialnexa.com/v1")) == "http://lower.example:3128"
    monkeypatch.setenv("https_proxy", "  ")
    assert str(proxy_for("https://api.dialnexa.com/v1")) == "http://tunnel.example:8080"
    monkeypatch.setenv("NO_PROXY", ".dialnexa.com")
    assert proxy_for("https://api.dialnexa.com/v1") is None
    assert proxy_for("https://api.dialnexa.com.evil.example/v1") is not None
    monkeypatch.setenv("NO_PROXY", "dialnexa.com")
    assert proxy_for("https://api.dialnexa.com/v1") is None
