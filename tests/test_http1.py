"""The built-in HTTP/1.1 client against scripted servers on loopback: what a broken or hostile
upstream can send (heads without end, bombs, smuggled answers, closes at every point), and the
pool's promises (reuse, limits, retries, cancellation)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from exporter.api import http1
from exporter.api.http1 import (
    MAX_HEADERS,
    BodyTooLargeError,
    ConnectFailedError,
    DisconnectedError,
    Http1Pool,
    MalformedResponseError,
    UndecodableBodyError,
)
from tests.helpers import FakeClock

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Upstream"], Awaitable[None]]
CAP = 64 * 1024
BODY = b'{"id": "cmp_1", "status": "active"}'


@dataclass
class Upstream:
    """A scripted server: every connection runs ``script``; what it saw is kept."""

    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    request_seen: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, upstream: Upstream) -> bytes:
    """One request head, recorded; b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    upstream.requests.append(head)
    upstream.request_seen.set()
    return head


def answer(body: bytes = BODY, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    """A complete answer with Content-Length."""
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


@asynccontextmanager
async def upstream_running(
    script: Script, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Upstream]:
    """Serve ``script`` on a loopback port until the block ends."""
    upstream = Upstream()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.connections += 1
        upstream.open_now += 1
        upstream.most_open = max(upstream.most_open, upstream.open_now)
        try:
            await script(reader, writer, upstream)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            upstream.open_now -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def pool_for(upstream: Upstream, **options: object) -> AsyncIterator[Http1Pool]:
    """A pool to ``upstream`` with a small body cap, closed after the block."""
    values: dict[str, object] = {"limit": 4, "max_body": CAP, **options}
    pool = Http1Pool("http", "127.0.0.1", upstream.port, **values)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        pool.close()


async def get(pool: Http1Pool, path: str = "/v1/campaigns/cmp_1") -> http1.Response:
    """A GET with the headers the exporter sends, within 5 s."""
    async with asyncio.timeout(5):
        return await pool.get(path.encode(), b"Accept: application/json\r\n")


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
) -> None:
    """A well-behaved server: one answer per request, connection kept."""
    while await read_request(reader, upstream):
        writer.write(answer())
        await writer.drain()


def answer_once(raw: bytes) -> Script:
    """A server that answers the first request with ``raw``, then waits for the hang-up."""

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
    ) -> None:
        await read_request(reader, upstream)
        writer.write(raw)
        await writer.drain()
        await reader.read(1)

    return script


# --- a healthy upstream --------------------------------------------------------------------------


async def test_connections_are_kept_alive_and_reused() -> None:
    """Ten sequential GETs travel on one connection, each with the Host and given headers."""
    async with upstream_running(keep_answering) as upstream, pool_for(upstream) as pool:
        for _ in range(10):
            response = await get(pool)
            assert (response.status, response.body) == (200, BODY)
        assert upstream.connections == 1
        assert (pool.connections_opened, pool.requests_resent) == (1, 0)
        head = upstream.requests[0]
        assert head.startswith(b"GET /v1/campaigns/cmp_1 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{upstream.port}\r\n".encode() in head
        assert b"Accept: application/json\r\n" in head


async def test_concurrency_never_exceeds_the_limit() -> None:
    """Twenty concurrent GETs on a pool of limit 3: never more than 3 connections at once."""

    async def slow(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        while await read_request(reader, up):
            await asyncio.sleep(0.01)  # the server's pace, not synchronisation
            writer.write(answer())

    async with upstream_running(slow) as upstream, pool_for(upstream, limit=3) as pool:
        responses = await asyncio.gather(*(get(pool) for _ in range(20)))
        assert all(r.status == 200 for r in responses)
        assert upstream.most_open <= 3
        assert upstream.connections <= 3


async def test_chunked_gzip_and_deflate_bodies_are_decoded() -> None:
    """Chunked transfer coding, gzip and zlib-wrapped deflate come back as the plain body."""
    gz = gzip.compress(BODY)
    bodies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
        + BODY[:5]
        + f"\r\n{len(BODY) - 5:x}\r\n".encode()
        + BODY[5:]
        + b"\r\n0\r\n\r\n",
        answer(gz, extra=b"Content-Encoding: gzip\r\n"),
        answer(zlib.compress(BODY), extra=b"Content-Encoding: deflate\r\n"),
    ]

    async def varied(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        for raw in bodies:
            await read_request(reader, up)
            writer.write(raw)

    async with upstream_running(varied) as upstream, pool_for(upstream) as pool:
        for _ in bodies:
            assert (await get(pool)).body == BODY
        assert upstream.connections == 1
        assert b"Accept-Encoding" not in upstream.requests[0]  # the caller's to send


async def test_a_body_ended_by_closing_is_complete() -> None:
    """No length and no chunking: the body ends with the connection (HTTP/1.0 style)."""

    async def close_delimited(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + BODY)
        await writer.drain()

    async with upstream_running(close_delimited) as upstream, pool_for(upstream) as pool:
        assert (await get(pool)).body == BODY
        assert (await get(pool)).body == BODY
        assert upstream.connections == 2  # never reused
        assert not pool.open_connections


async def test_informational_answers_are_skipped() -> None:
    """A 100 Continue and a 103 before the answer are read past."""

    async def early(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        writer.write(answer())

    async with upstream_running(early) as upstream, pool_for(upstream) as pool:
        response = await get(pool)
        assert (response.status, response.body) == (200, BODY)
        assert "Link" not in response.headers


# --- closes at every point --------------------------------------------------------------------


async def test_a_kept_alive_connection_closed_by_the_server_is_retried_once() -> None:
    """The server answers, then closes its idle connection as the next request goes out:
    that request is sent again on a new connection, and succeeds."""

    async def once(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(answer())
        await writer.drain()
        await read_request(reader, up)  # the next request arrives: hang up without a word

    async with upstream_running(once) as upstream, pool_for(upstream) as pool:
        for _ in range(3):
            assert (await get(pool)).body == BODY
        assert upstream.connections == 3
        assert (pool.connections_opened, pool.requests_resent) == (3, 2)


async def test_connection_close_is_honoured() -> None:
    """An answer with `Connection: close` is read whole, and its connection never reused."""

    async def closing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(answer(extra=b"Connection: close\r\n"))
        await writer.drain()
        await reader.read(1)

    async with upstream_running(closing) as upstream, pool_for(upstream) as pool:
        assert (await get(pool)).body == BODY
        assert not pool.open_connections
        assert (await get(pool)).body == BODY
        assert upstream.connections == 2


async def test_an_answer_cut_short_on_a_kept_alive_connection_is_not_resent() -> None:
    """The second request on a kept-alive connection gets half an answer: that is a failure
    told to the caller, not a reason to send the GET again."""

    async def half(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(answer())
        await read_request(reader, up)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()

    async with upstream_running(half) as upstream, pool_for(upstream) as pool:
        assert (await get(pool)).body == BODY
        with pytest.raises(DisconnectedError) as info:
            await get(pool)
        assert (info.value.answered, info.value.status) == (True, 200)
        assert upstream.connections == 1
        assert pool.requests_resent == 0


async def test_a_fresh_connection_closed_without_an_answer_fails_once() -> None:
    """No retry loop: a new connection the server drops is one DisconnectedError."""

    async def drop(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)

    async with upstream_running(drop) as upstream, pool_for(upstream) as pool:
        with pytest.raises(DisconnectedError) as info:
            await get(pool)
        assert not info.value.answered
        assert upstream.connections == 1


async def test_an_answer_cut_short_is_not_retried() -> None:
    """Part of an answer came, then the close: answered, so never sent again."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await read_request(reader, up)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY[:10])
        await writer.drain()

    async with upstream_running(cut) as upstream, pool_for(upstream) as pool:
        with pytest.raises(DisconnectedError) as info:
            await get(pool)
        assert info.value.answered
        assert info.value.status == 200
        assert upstream.connections == 1


async def test_nobody_listening_is_a_connect_failure() -> None:
    """A refused connection names the address and the reason."""
    async with upstream_running(keep_answering) as upstream:
        port = upstream.port
    pool = Http1Pool("http", "127.0.0.1", port, limit=1, max_body=CAP)
    with pytest.raises(ConnectFailedError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        await get(pool)
    unresolvable = Http1Pool("http", "dialnexa-api.invalid", 80, limit=1, max_body=CAP)
    with pytest.raises(ConnectFailedError, match=r"cannot resolve host dialnexa-api\.invalid"):
        await get(unresolvable)


async def test_cancelling_a_request_closes_its_connection() -> None:
    """A deadline cancels the wait: the server sees the connection close, none stays open."""

    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        if not await reader.read(1):
            up.closed_by_client.set()

    async with upstream_running(silent) as upstream, pool_for(upstream) as pool:
        request = asyncio.create_task(get(pool))
        async with asyncio.timeout(5):
            await upstream.request_seen.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert not pool.open_connections
        async with asyncio.timeout(5):
            await upstream.closed_by_client.wait()


async def test_idle_connections_past_their_time_are_not_used() -> None:
    """A connection idle 14.9 s is reused, one idle past 15 s is closed and replaced (the
    pool's clock, injected)."""
    clock = FakeClock()
    async with (
        upstream_running(keep_answering) as upstream,
        pool_for(upstream, monotonic=clock.monotonic) as pool,
    ):
        assert (await get(pool)).body == BODY
        clock.advance(14.9)
        assert (await get(pool)).body == BODY
        assert upstream.connections == 1
        clock.advance(15.1)
        assert (await get(pool)).body == BODY
        assert upstream.connections == 2
        assert len(pool.open_connections) == 1


# --- what a hostile upstream sends -------------------------------------------------------------


async def test_a_second_answer_is_never_read_as_the_next_requests() -> None:
    """An answer followed by a smuggled one: the first is returned, the connection dropped,
    and the next request gets its own answer from a new connection."""
    evil = answer(b'{"id": "evil"}')

    async def smuggle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(answer() + evil)
        await writer.drain()
        await read_request(reader, up)
        writer.write(answer())

    async with upstream_running(smuggle) as upstream, pool_for(upstream) as pool:
        assert (await get(pool)).body == BODY
        assert (await get(pool)).body == BODY
        assert upstream.connections == 2


async def test_bytes_sent_while_idle_drop_the_connection() -> None:
    """Bytes nobody asked for, after an answer: that connection is never used again."""

    async def chatty(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        if await read_request(reader, up):
            writer.write(answer())
            await writer.drain()
            await asyncio.sleep(0.01)  # the server's pace: the answer is read first
            writer.write(answer(b'{"id": "unasked"}'))
            if not await reader.read(1):
                up.closed_by_client.set()

    async with upstream_running(chatty) as upstream, pool_for(upstream) as pool:
        assert (await get(pool)).body == BODY
        async with asyncio.timeout(5):
            await upstream.closed_by_client.wait()  # the client hung up on the unasked bytes
        assert not pool.open_connections
        assert (await get(pool)).body == BODY
        assert upstream.connections == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed HTTP response", id="not-http"),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", "malformed HTTP response", id="status-2000"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "malformed HTTP response",
            id="two-lengths",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-A: \x00\x01\r\n\r\n", "malformed HTTP response", id="nul-header"
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n",
            "switched protocols",
            id="upgrade",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\n" * 50, "1xx answers", id="endless-informational"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 400 + b"\r\n\r\n",
            "malformed HTTP response",
            id="length-of-400-digits",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "malformed HTTP response",
            id="negative-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n",
            "malformed HTTP response",
            id="chunk-size-overflow",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"X-Flood: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n",
            "response headers",
            id="too-many-headers",
        ),
    ],
)
async def test_garbage_is_a_malformed_response(raw: bytes, message: str) -> None:
    """Whatever is not an HTTP/1.x answer the client accepts fails one way, and closes."""

    async with upstream_running(answer_once(raw)) as upstream, pool_for(upstream) as pool:
        with pytest.raises(MalformedResponseError, match=message):
            await get(pool)
        assert not pool.open_connections


async def test_a_head_without_end_is_refused_at_its_cap() -> None:
    """Header lines forever (one long line, then many): refused past the head cap, read no
    further."""
    sent = 0

    async def endless(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        nonlocal sent
        await read_request(reader, up)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(1000):  # at most 16 MiB
            writer.write(b"a" * 16384)
            sent += 16384
            await writer.drain()

    async with (
        upstream_running(endless) as upstream,
        pool_for(upstream, max_head_bytes=1024) as pool,
    ):
        with pytest.raises(MalformedResponseError, match="response head over 1024 bytes"):
            await get(pool)
        assert not pool.open_connections
    assert sent < 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("head", "body"),
    [
        pytest.param(b"Content-Length: 1000000000000\r\n", b"", id="announced"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n", b"4000\r\n" + b"x" * 0x4000 + b"\r\n", id="chunked"
        ),
        pytest.param(b"", b"x" * 16384, id="until-close"),
        pytest.param(
            b"Content-Encoding: gzip\r\n",
            gzip.compress(b"\0" * (8 * 1024 * 1024))[:16384],
            id="gzip-bomb",
        ),
    ],
)
async def test_bodies_over_the_cap_stop_at_the_cap(head: bytes, body: bytes) -> None:
    """However the body comes, the client stops reading past the cap and keeps the status
    and headers for the caller; a bomb never inflates beyond the cap."""

    async def flood(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream
    ) -> None:
        await read_request(reader, up)
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n" + head + b"\r\n")
        for _ in range(512):  # at most 8 MiB, until the client hangs up
            writer.write(body or b"")
            await writer.drain()
            if not body:
                await reader.read(1)
                return

    async with upstream_running(flood) as upstream, pool_for(upstream) as pool:
        with pytest.raises(BodyTooLargeError) as info:
            await get(pool)
        assert info.value.response.status == 429
        assert info.value.response.headers["retry-after"] == "7"
        assert info.value.response.body == b""
        assert not pool.open_connections


async def test_a_compression_bomb_never_inflates_past_the_cap() -> None:
    """16 KiB of gzip that would inflate to 16 MiB: the client's memory peak stays within a
    few times the 64 KiB cap, because inflation itself is bounded, not only its result."""
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))

    async with (
        upstream_running(
            answer_once(answer(bomb, extra=b"Content-Encoding: gzip\r\n"))
        ) as upstream,
        pool_for(upstream) as pool,
    ):
        tracemalloc.start()
        try:
            with pytest.raises(BodyTooLargeError):
                await get(pool)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(bomb) < 64 * 1024
    assert peak < 1024 * 1024, peak


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        pytest.param("br", b"\x1b\x00", "unsupported Content-Encoding 'br'", id="brotli"),
        pytest.param("gzip", b"\x1f\x8bnot gzip at all", "corrupt compressed body", id="corrupt"),
        pytest.param("gzip", gzip.compress(BODY)[:-6], "cut short", id="truncated"),
    ],
)
async def test_undecodable_bodies_say_why(encoding: str, body: bytes, message: str) -> None:
    """An unknown coding or broken compressed data is an UndecodableBodyError with the status."""

    async with (
        upstream_running(
            answer_once(answer(body, extra=f"Content-Encoding: {encoding}\r\n".encode()))
        ) as upstream,
        pool_for(upstream) as pool,
    ):
        with pytest.raises(UndecodableBodyError, match=message) as info:
            await get(pool)
        assert info.value.response.status == 200


async def test_header_values_of_any_byte_are_read_as_latin1() -> None:
    """Bytes above 0x7f in a header value are kept (as Latin-1), and lookups ignore case."""
    extra = b"X-Note: caf\xe9\r\nRETRY-after: 3\r\n"

    async with (
        upstream_running(answer_once(answer(extra=extra))) as upstream,
        pool_for(upstream) as pool,
    ):
        response = await get(pool)
        assert response.headers["x-note"] == "café"
        assert response.headers["Retry-After"] == "3"


# --- TLS ---------------------------------------------------------------------------------------


async def test_tls_is_verified_against_the_trust_store_given() -> None:
    """A certificate from a trusted CA works; the system's default trust refuses it."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = http1.default_tls_context()
    authority.configure_trust(trusting)
    async with upstream_running(keep_answering, server_context) as upstream:
        pool = Http1Pool(
            "https", "127.0.0.1", upstream.port, limit=1, max_body=CAP, ssl_context=trusting
        )
        assert (await get(pool)).body == BODY
        assert (await get(pool)).body == BODY
        assert upstream.connections == 1
        pool.close()
        untrusting = Http1Pool("https", "127.0.0.1", upstream.port, limit=1, max_body=CAP)
        with pytest.raises(ConnectFailedError, match=r"TLS with 127\.0\.0\.1"):
            await get(untrusting)


@pytest.mark.parametrize(
    "target", [b"/a\r\nX-Evil: 1", b"/a b", b"/\x00", b"http://other/", b"", "/\u00fc".encode()]
)
async def test_a_target_that_could_split_the_request_is_refused_unsent(target: bytes) -> None:
    """CR, LF, spaces, NUL, non-ASCII or a non-path target: refused before any byte is sent."""
    async with upstream_running(keep_answering) as upstream, pool_for(upstream) as pool:
        with pytest.raises(ValueError, match="request target"):
            await pool.get(target, b"")
        assert upstream.connections == 0


async def test_ssl_cert_file_names_another_trust_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default context honours SSL_CERT_FILE (how docs/security.md says to add a CA)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with upstream_running(keep_answering, server_context) as upstream:
        pool = Http1Pool("https", "127.0.0.1", upstream.port, limit=1, max_body=CAP)
        try:
            assert (await get(pool)).body == BODY
        finally:
            pool.close()


def test_host_header_names_the_authority() -> None:
    """Default ports are left out; IPv6 literals are bracketed."""
    cases = {
        ("http", "api.example", 80): b"Host: api.example\r\n",
        ("https", "api.example", 443): b"Host: api.example\r\n",
        ("https", "api.example", 8443): b"Host: api.example:8443\r\n",
        ("http", "::1", 8080): b"Host: [::1]:8080\r\n",
    }
    for (scheme, host, port), line in cases.items():
        pool = Http1Pool(scheme, host, port, limit=1, max_body=CAP)
        assert pool._host_line == line  # the one place it is built
    with pytest.raises(ValueError, match="unsupported scheme"):
        Http1Pool("ftp", "x", 21, limit=1, max_body=CAP)
