"""The HTTP server under hostile clients: the connection guard's cap, deadlines and shedding,
plain and TLS (exporter/web/connections.py, exporter/web/tls_stream.py), and the requests it refuses
(exporter/web/request_policy.py). Every test attacks the exporter served as the CLI serves it, on a
real loopback port; deadlines move on an injected clock, never by sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import resource
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter.web.connections import (
    COLLECT_AFTER_CLOSED,
    GUARD,
    ConnectionGuard,
    ConnectionLimits,
    Phase,
    guard_connections,
    raise_open_file_limit,
)
from exporter.web.server import create_app
from exporter.web.webconfig import listening_context
from tests.helpers import (
    OffsetClock,
    StartSim,
    campaign,
    exporter_settings,
    parse_samples,
    serve_guarded,
    value,
    wait_for,
    write_tls_config,
)

HEADER_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 4.0
RESPONSE_TIMEOUT = 20.0
CAP = 8
LIMITS: dict[str, Any] = {
    "max_connections": CAP,
    "http_header_timeout_seconds": HEADER_TIMEOUT,
    "http_idle_timeout_seconds": IDLE_TIMEOUT,
    "tls_handshake_timeout_seconds": HANDSHAKE_TIMEOUT,
    "http_response_timeout_seconds": RESPONSE_TIMEOUT,
}
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n"


@dataclass
class Peer:
    """One client connection, as raw bytes."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def closed(self) -> bool:
        """True once the server closed the connection (FIN or reset)."""
        return (
            self.reader.at_eof()
            or self.reader.exception() is not None
            or self.writer.transport.is_closing()
        )

    async def response(self) -> bytes:
        """One whole HTTP response (head and Content-Length body)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        return head + body

    def close(self) -> None:
        """Drop the connection."""
        self.writer.transport.abort()


@dataclass
class Served:
    """The exporter (or a test app) behind its guard on a loopback port."""

    app: web.Application
    port: int
    clock: OffsetClock
    client_tls: ssl.SSLContext | None
    peers: list[Peer]

    @property
    def guard(self) -> ConnectionGuard:
        """The app's connection guard."""
        return self.app[GUARD]

    async def connect(self, *, handshake: bool = True) -> Peer:
        """A new connection; on a TLS port, with the handshake done unless told otherwise."""
        context = self.client_tls if handshake else None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=context)
        peer = Peer(reader, writer)
        self.peers.append(peer)
        return peer

    async def scrape(self) -> int:
        """GET /metrics on a new connection; the status."""
        status, _ = await self.scrape_text()
        return status

    async def scrape_text(self) -> tuple[int, str]:
        """GET /metrics on a new connection; the status and the body."""
        scheme = "https" if self.client_tls is not None else "http"
        connector = aiohttp.TCPConnector(ssl=self.client_tls or False, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{scheme}://127.0.0.1:{self.port}/metrics") as response,
        ):
            return response.status, await response.text()

    def expire_after(self, seconds: float) -> int:
        """Move the clock on and let the guard close what is past its deadline."""
        self.clock.advance(seconds)
        return self.guard.expire()


Start = Callable[..., Awaitable[Served]]


@pytest.fixture
async def start_guarded(start_simulator: StartSim, tmp_path: Path) -> AsyncIterator[Start]:
    """Factory: the exporter served through its guard (TLS when asked), stopped after."""
    runners: list[web.AppRunner] = []
    all_peers: list[Peer] = []

    async def start(*, tls: bool = False, **overrides: Any) -> Served:
        sim = await start_simulator([campaign("cmp_a")])
        settings_overrides = {**LIMITS, **overrides}
        client_tls = None
        if tls:
            config, client_tls = write_tls_config(tmp_path)
            settings_overrides["web_config_file"] = str(config)
        clock = OffsetClock()
        app = create_app(exporter_settings(sim, ["cmp_a"], **settings_overrides), clock=clock)
        runner, port = await serve_guarded(app, listening_context(app))
        runners.append(runner)
        return Served(app, port, clock, client_tls, all_peers)

    yield start
    for peer in all_peers:
        peer.close()
    for runner in runners:
        await runner.cleanup()


# --- the cap --------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-no-client-hello"])
async def test_a_flood_of_idle_connections_is_capped_and_scrapes_are_answered(
    start_guarded: Start, tls: bool
) -> None:
    """40 connections that send nothing (on the TLS port: not even a ClientHello): the
    oldest are closed as newer ones come, at most the cap stay open, and a scrape on a new
    connection is answered."""
    served = await start_guarded(tls=tls)
    peers = [await served.connect(handshake=False) for _ in range(40)]
    await wait_for(lambda: all(p.closed() for p in peers[:-CAP]), what="the oldest shed")
    assert served.guard.open_connections <= CAP
    assert not any(p.closed() for p in peers[-CAP + 1 :])
    assert await served.scrape() == 200
    assert served.guard.counts["shed"] >= 40 - CAP


async def test_the_guard_shows_in_the_metrics(start_guarded: Start) -> None:
    """What the guard did is exported: connections open and allowed, accepted, and closed by
    reason, so that an operator sees a flood in Prometheus."""
    served = await start_guarded()
    peers = [await served.connect(handshake=False) for _ in range(20)]
    await wait_for(lambda: all(p.closed() for p in peers[:-CAP]), what="the oldest shed")
    status, text = await served.scrape_text()
    assert status == 200
    samples = parse_samples(text)
    assert value(samples, "dialnexa_exporter_http_connections_max") == CAP
    assert 1 <= (value(samples, "dialnexa_exporter_http_connections") or 0) <= CAP
    assert (value(samples, "dialnexa_exporter_http_connections_accepted_total") or 0) >= 21
    closed = "dialnexa_exporter_http_connections_closed_total"
    assert (value(samples, closed, reason="shed") or 0) >= 20 - CAP
    assert value(samples, closed, reason="refused") == 0
    assert value(samples, closed, reason="timed_out") == 0


async def test_a_kept_alive_scraper_is_shed_after_every_unproven_connection(
    start_guarded: Start,
) -> None:
    """A connection that has been answered idles last in the shedding order: a flood of
    newer connections that sent nothing is shed before it, and it answers again."""
    served = await start_guarded()
    scraper = await served.connect()
    scraper.writer.write(REQUEST)
    assert (await scraper.response()).startswith(b"HTTP/1.1 200")
    flood = [await served.connect() for _ in range(3 * CAP)]
    await wait_for(lambda: sum(p.closed() for p in flood) >= 2 * CAP, what="the flood shed")
    assert not scraper.closed()
    scraper.writer.write(REQUEST)
    assert (await scraper.response()).startswith(b"HTTP/1.1 200")


# --- deadlines ------------------------------------------------------------------------------


async def test_headers_trickled_byte_by_byte_are_cut_off_at_the_header_deadline(
    start_guarded: Start,
) -> None:
    """Slowloris: a request's headers sent a little at a time do not extend the deadline,
    which runs from the connection's start."""
    served = await start_guarded()
    peer = await served.connect()
    for piece in (b"GET /metrics HTTP/1.1\r\n", b"Host: exporter\r\n", b"X-A: 1\r\n"):
        peer.writer.write(piece)
        await peer.writer.drain()
        assert served.expire_after(HEADER_TIMEOUT / 4) == 0
    assert not peer.closed()
    assert served.expire_after(HEADER_TIMEOUT / 4 + 0.1) == 1
    await wait_for(peer.closed, what="the slow request closed")


async def test_a_connection_that_never_sends_is_closed_at_the_header_deadline(
    start_guarded: Start,
) -> None:
    """A new connection has header_timeout, not the idle timeout, to send its request."""
    served = await start_guarded()
    peer = await served.connect()
    assert served.expire_after(HEADER_TIMEOUT - 0.5) == 0
    assert served.expire_after(1.0) == 1
    await wait_for(peer.closed, what="the silent connection closed")


async def test_a_kept_alive_connection_idles_until_the_idle_deadline(start_guarded: Start) -> None:
    """After an answer the connection may idle for idle_timeout (longer than the header
    deadline), and a later request on it is answered; then it is closed."""
    served = await start_guarded()
    peer = await served.connect()
    peer.writer.write(REQUEST)
    await peer.response()
    assert served.expire_after(HEADER_TIMEOUT + 1) == 0
    peer.writer.write(REQUEST)
    assert (await peer.response()).startswith(b"HTTP/1.1 200")
    assert served.expire_after(IDLE_TIMEOUT - 1) == 0
    assert served.expire_after(2) == 1
    await wait_for(peer.closed, what="the idle connection closed")


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02"], ids=["nothing", "half-hello"])
async def test_a_tls_handshake_is_cut_off_at_its_deadline(
    start_guarded: Start, sent: bytes
) -> None:
    """A TLS connection that sends nothing or a ClientHello's first bytes is closed when
    tls_handshake_timeout passes."""
    served = await start_guarded(tls=True)
    peer = await served.connect(handshake=False)
    if sent:
        peer.writer.write(sent)
    assert served.expire_after(HANDSHAKE_TIMEOUT - 0.5) == 0
    assert not peer.closed()
    assert served.expire_after(1.0) == 1
    await wait_for(peer.closed, what="the handshake cut off")


async def test_plain_http_to_the_tls_port_is_closed_at_once(start_guarded: Start) -> None:
    """A request in the clear on the TLS port fails the handshake: the connection is closed
    then, not held until the handshake deadline, and nothing of /metrics is sent."""
    served = await start_guarded(tls=True)
    peer = await served.connect(handshake=False)
    peer.writer.write(REQUEST)
    with contextlib.suppress(ConnectionError):
        answer = await asyncio.wait_for(peer.reader.read(65536), 10)
        assert b"dialnexa" not in answer
    await wait_for(peer.closed, what="the connection closed")
    assert served.guard.counts["timed_out"] == 0


# --- a small app of its own: requests that stay in the handler ------------------------------

RELEASE = web.AppKey("release", asyncio.Event)


async def _stuck(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.Response(text="done\n")


@pytest.fixture
async def stuck_app() -> AsyncIterator[Served]:
    """An app whose every request waits for RELEASE, guarded with a cap of 2."""
    clock = OffsetClock()
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/", _stuck)
    limits = ConnectionLimits(max_connections=2, response_timeout=RESPONSE_TIMEOUT)
    guard_connections(app, limits, monotonic=clock.monotonic)
    runner, port = await serve_guarded(app)
    served = Served(app, port, clock, None, [])
    yield served
    app[RELEASE].set()
    for peer in served.peers:
        peer.close()
    await runner.cleanup()


async def _busy_peers(served: Served, count: int) -> list[Peer]:
    peers = []
    for _ in range(count):
        peer = await served.connect()
        peer.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        peers.append(peer)
    await wait_for(
        lambda: served.guard.phases()[Phase.ANSWERING] == count, what="requests in the handler"
    )
    return peers


async def test_requests_being_answered_are_never_shed_and_a_newcomer_is_refused(
    stuck_app: Served,
) -> None:
    """With every slot answering a request, a new connection is refused at once; the
    answers complete, and then new connections are admitted again."""
    busy = await _busy_peers(stuck_app, 2)
    await wait_for(lambda: stuck_app.guard.open_connections == 2, what="two admitted")
    late = await stuck_app.connect()
    await wait_for(late.closed, what="the newcomer refused")
    assert stuck_app.guard.counts["refused"] == 1
    assert not any(p.closed() for p in busy)
    stuck_app.app[RELEASE].set()
    for peer in busy:
        assert (await peer.response()).endswith(b"done\n")
    again = await stuck_app.connect()
    again.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await again.response()).endswith(b"done\n")


async def test_an_answer_taking_too_long_is_cut_off_at_the_response_deadline(
    stuck_app: Served,
) -> None:
    """A request still being answered after response_timeout (a client reading a big body
    slowly, a stuck handler) loses its connection."""
    busy = await _busy_peers(stuck_app, 1)
    assert stuck_app.expire_after(RESPONSE_TIMEOUT - 1) == 0
    assert stuck_app.expire_after(2) == 1
    await wait_for(busy[0].closed, what="the slow answer cut off")


# --- memory and descriptors -----------------------------------------------------------------


async def test_a_burst_of_closed_connections_is_collected(start_guarded: Start) -> None:
    """After COLLECT_AFTER_CLOSED closed connections the guard runs the garbage collector at
    once (their reference cycles would otherwise wait for the tuned collector), and a
    smaller burst is collected shortly after it ends."""
    served = await start_guarded(max_connections=1000)
    for _ in range(COLLECT_AFTER_CLOSED):
        (await served.connect()).close()
    await wait_for(lambda: served.guard.counts["collections"] >= 1, what="a collection")
    before = served.guard.counts["collections"]
    for _ in range(10):
        (await served.connect()).close()
    await wait_for(lambda: served.guard.counts["collections"] > before, what="the trailing one")


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    """Start-up raises the soft RLIMIT_NOFILE to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert raise_open_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, lowered), hard))


def test_the_cap_is_lowered_to_leave_descriptors_for_the_exporter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the open-file limit cannot hold max_connections plus the exporter's own
    descriptors, the cap is lowered to fit, with one warning naming the setting."""
    soft = raise_open_file_limit()
    guard = ConnectionGuard(ConnectionLimits(max_connections=soft, reserved_fds=soft - 10))
    with caplog.at_level(logging.WARNING, logger="exporter.http"):
        assert guard.fit_to_open_file_limit() == 10
    assert "DIALNEXA_MAX_CONNECTIONS" in caplog.text
    roomy = ConnectionGuard(ConnectionLimits(max_connections=5))
    assert roomy.fit_to_open_file_limit() == 5


# --- TLS over memory buffers ----------------------------------------------------------------

BIG = web.AppKey("big", bytes)


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=request.app[BIG])


@pytest.fixture
async def big_tls_app(tmp_path: Path) -> AsyncIterator[Served]:
    """An app answering 5 MiB of random bytes, over TLS through the guard."""
    _, client = write_tls_config(tmp_path)
    app = web.Application()
    app[BIG] = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)
    app.router.add_get("/big", _big)
    guard_connections(app, ConnectionLimits())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    runner, port = await serve_guarded(app, context)
    served = Served(app, port, OffsetClock(), client, [])
    yield served
    for peer in served.peers:
        peer.close()
    await runner.cleanup()


async def test_tls_carries_big_answers_and_pipelined_requests(big_tls_app: Served) -> None:
    """5 MiB answers arrive intact over TLS, two requests sent in one write are both
    answered in order, and a client's close_notify closes the connection."""
    peer = await big_tls_app.connect()
    request = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
    peer.writer.write(request + request)
    expected = hashlib.sha256(big_tls_app.app[BIG]).hexdigest()
    for _ in range(2):
        answer = await peer.response()
        body = answer.partition(b"\r\n\r\n")[2]
        assert hashlib.sha256(body).hexdigest() == expected
    peer.writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await asyncio.wait_for(peer.writer.wait_closed(), 10)
    await wait_for(lambda: big_tls_app.guard.open_connections == 0, what="the server side closed")


# --- requests that are refused (request_policy) ---------------------------------------------


async def _exchange(served: Served, raw: bytes) -> tuple[bytes, bool]:
    """Send ``raw`` on a new connection; (everything answered, closed by the server)."""
    peer = await served.connect()
    peer.writer.write(raw)
    try:
        data = await asyncio.wait_for(peer.reader.read(65536), 10)
    except ConnectionError:
        data = b""
    await wait_for(peer.closed, what="the server closing the connection")
    return data, True


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
async def test_other_http_versions_get_an_http11_505_and_the_connection_closed(
    start_guarded: Start, version: bytes
) -> None:
    """A request line of another version is answered 505 in an HTTP/1.1 status line (never
    an "HTTP/2.0 200"), and the connection closed."""
    served = await start_guarded()
    answer, closed = await _exchange(served, b"GET /metrics " + version + b"\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert b"dialnexa" not in answer
    assert closed


async def test_connect_is_refused_and_no_tunnel_is_left_open(start_guarded: Start) -> None:
    """CONNECT gets 405 with Allow, the connection is closed, and bytes sent after it are
    never treated as a request."""
    served = await start_guarded()
    raw = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" + REQUEST
    answer, closed = await _exchange(served, raw)
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET, HEAD" in answer
    assert answer.count(b"HTTP/1.1") == 1
    assert closed


async def test_an_upgrade_request_is_answered_as_http11_then_closed(start_guarded: Start) -> None:
    """A WebSocket upgrade is declined: the request is served as plain HTTP/1.1 (no 101)
    and the connection closed after it."""
    served = await start_guarded()
    raw = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer, closed = await _exchange(served, raw)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"101" not in answer.split(b"\r\n", 1)[0]
    assert closed


async def test_a_malformed_request_gets_a_bare_400_without_its_own_bytes(
    start_guarded: Start,
) -> None:
    """A header with a control character is answered "400 Bad Request" alone: aiohttp's
    answer quotes the offending line, which may be the client's Authorization header."""
    served = await start_guarded()
    credentials = b"cHJvbWV0aGV1czpjaGFuZ2UtbWU="
    raw = (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + credentials + b"\x01\r\n\r\n"
    )
    answer, closed = await _exchange(served, raw)
    assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer
    assert answer.endswith(b"\r\n\r\n400 Bad Request\n")
    assert credentials not in answer
    assert closed


async def test_answers_do_not_name_python_or_aiohttp_versions(start_guarded: Start) -> None:
    """Every answer, to probes too (which need no credentials), says only which exporter it
    is: aiohttp's default Server header names the Python and aiohttp versions."""
    served = await start_guarded()
    for path in (b"/healthz", b"/metrics", b"/nowhere"):
        peer = await served.connect()
        peer.writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head = (await peer.response()).partition(b"\r\n\r\n")[0].lower()
        assert b"\r\nserver: dialnexa-exporter\r\n" in head + b"\r\n", head
        assert b"python" not in head
        assert b"aiohttp" not in head
