"""A lean HTTP/1.1 client for one origin: kept-alive connections, GET only, bounded everywhere.

Why it exists: at ten thousand campaigns the exporter's CPU is mostly the HTTP client's, and
aiohttp's general-purpose request path (URL handling, request and response objects, tracing,
the connector's bookkeeping) costs several times the exchange itself. This client does one
thing, a GET on a pooled connection to one origin, on an ``asyncio.Protocol`` with the llhttp
parser (through ``httptools``; aiohttp's own C parser is llhttp too).

What it guarantees, whatever the server sends:

- a response head over ``max_head_bytes`` is refused, and so is a body past ``max_body``
  (announced or not, compressed or not: gzip and deflate are inflated with a bound, so a bomb
  stops at the cap);
- a connection is reused only when the exchange on it ended cleanly: its answer complete,
  keep-alive on both sides, and no byte after the answer (anything more is a desynchronised
  peer, and its bytes are never read as the next request's answer);
- a request on a reused connection that the server had already closed (no byte of an answer
  came back) is sent once more on a new connection, as GET allows;
- cancelling a request (the caller's deadline) closes its connection;
- at most ``limit`` connections are open or opening at once.

Errors are this module's own (``Http1Error`` and its subclasses); callers map them.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
from multidict import CIMultiDict

# A request target: origin-form, visible ASCII only (no space, CR or LF can split the request).
_TARGET = re.compile(rb"/[\x21-\x7e]*")
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
MAX_INFORMATIONAL = 8  # 1xx answers tolerated before the real one
IDLE_SECONDS = 15.0  # kept-alive connections idle longer are closed, as aiohttp does


class Http1Error(Exception):
    """The exchange failed; the subclass says how."""


class ConnectFailedError(Http1Error):
    """No connection could be opened (name resolution, refusal, TLS handshake)."""


class DisconnectedError(Http1Error):
    """The connection ended before a complete answer; ``answered`` if part of one came, and
    ``status`` when that part was the whole head."""

    def __init__(self, message: str, *, answered: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.answered = answered
        self.status = status


class MalformedResponseError(Http1Error):
    """The server's bytes are not an HTTP/1.x answer this client accepts."""


@dataclass(slots=True)
class Response:
    """A complete answer: status, headers (case-insensitive) and the decoded body."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


class UnreadableBodyError(Http1Error):
    """The answer came, its body cannot be had; ``response`` carries the status and headers,
    no body."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class BodyTooLargeError(UnreadableBodyError):
    """The body is over the cap."""

    def __init__(self, response: Response, limit: int) -> None:
        super().__init__(f"body exceeds the {limit} byte cap", response)


class UndecodableBodyError(UnreadableBodyError):
    """The body's Content-Encoding is unknown, or the compressed data is corrupt."""


def _inflater(encoding: str) -> zlib._Decompress:
    if encoding == "gzip" or encoding == "x-gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as RFC 9110 says
    raise ValueError(encoding)


class _Exchange(asyncio.Protocol):
    """One connection, and the one exchange in flight on it (llhttp callbacks in between)."""

    def __init__(self, pool: Http1Pool) -> None:
        self._max_body = pool.max_body
        self._max_head = pool.max_head_bytes
        self._pool_open = pool.open_connections
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.reusable = True  # cleared by anything but a clean, kept-alive exchange
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._received = False
        self._head_bytes = 0
        self._head_done = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._inflate: zlib._Decompress | None = None
        self._delimited = False  # the body's end is announced (length or chunked)
        self._failure: Http1Error | None = None
        self._informational = 0
        self._response: Response | None = None

    # --- the caller's side

    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write ``request``; the future gets its answer."""
        assert self._transport is not None
        assert self._waiter is None
        self._reset()
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        """Close the connection now (any exchange on it is over)."""
        self.reusable = False
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.abort()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: never read them as an answer
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._note(MalformedResponseError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            if self._waiter is not None:  # the answer is not complete: it is garbage
                self._note(MalformedResponseError(f"malformed HTTP response ({exc})"))
            self.reusable = False  # or garbage after a complete answer
        if not self._head_done:
            # Counted after parsing: a read may hold the head and much of the body at once.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._note(MalformedResponseError(f"response head over {self._max_head} bytes"))
        self._settle()

    def eof_received(self) -> bool:
        self.reusable = False
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._pool_open.discard(self)
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and not self._delimited and self._failure is None:
            self._complete()  # a body delimited by the end of the connection
        elif self._failure is None:
            answered = self._received
            what = "closed before the answer was complete" if answered else "closed the connection"
            status = None if self._response is None else self._response.status
            self._failure = DisconnectedError(f"server {what}", answered=answered, status=status)
        self._settle()

    # --- llhttp callbacks (they must not raise: failures are noted and settled after)

    def on_message_begin(self) -> None:
        if self._response is not None:  # a second answer to one request
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= MAX_HEADERS:
            self._note(MalformedResponseError(f"more than {MAX_HEADERS} response headers"))
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._response is not None or self._failure is not None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # informational: the real answer follows (counted at its end)
        self._head_done = True
        headers = self._header_map()
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._delimited = chunked or "Content-Length" in headers
        length = headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self._max_body:
            self._note(BodyTooLargeError(Response(status, headers, b""), self._max_body))
            return
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            try:
                self._inflate = _inflater(encoding)
            except ValueError:
                response = Response(status, headers, b"")
                what = f"unsupported Content-Encoding {encoding!r}"
                self._note(UndecodableBodyError(what, response))
        self._response = Response(status, headers, b"")

    def on_body(self, data: bytes) -> None:
        if self._failure is not None or self._response is None:
            return
        if self._inflate is not None:
            try:
                # At most one byte past the cap comes out, however much the input would make.
                data = self._inflate.decompress(data, self._max_body - self._size + 1)
            except zlib.error:
                self._note(UndecodableBodyError("corrupt compressed body", self._response))
                return
        self._size += len(data)
        if self._size > self._max_body:
            self._note(BodyTooLargeError(self._response, self._max_body))
            return
        self._chunks.append(data)

    def on_message_complete(self) -> None:
        if self._response is None and self._failure is None:
            self._informational += 1  # a 1xx answer ended
            self._headers = []
            if self._informational > MAX_INFORMATIONAL:
                self._note(MalformedResponseError(f"more than {MAX_INFORMATIONAL} 1xx answers"))
            return
        if self._failure is None and not self._parser.should_keep_alive():
            self.reusable = False
        self._complete()

    # --- helpers

    def _header_map(self) -> CIMultiDict[str]:
        return CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in self._headers
        )

    def _complete(self) -> None:
        response = self._response
        if response is None or self._failure is not None or self._waiter is None:
            return
        if self._inflate is not None:
            try:
                tail = self._inflate.flush()
            except zlib.error:
                self._note(UndecodableBodyError("corrupt compressed body", response))
                return
            if self._size + len(tail) > self._max_body:
                self._note(BodyTooLargeError(response, self._max_body))
                return
            self._chunks.append(tail)
            if not self._inflate.eof:
                self._note(UndecodableBodyError("compressed body cut short", response))
                return
        response.body = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(response)

    def _note(self, failure: Http1Error) -> None:
        if self._failure is None:
            self._failure = failure
        self.reusable = False

    def _settle(self) -> None:
        """Hand a noted failure to the waiting caller, and drop a connection gone bad."""
        waiter = self._waiter
        if self._failure is not None and waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(self._failure)
        if not self.reusable and self._waiter is None:
            self.close()


class Http1Pool:
    """Kept-alive HTTP/1.1 connections to one origin, and GETs on them."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        limit: int,
        max_body: int,
        ssl_context: ssl.SSLContext | None = None,
        max_head_bytes: int = MAX_HEAD_BYTES,
        idle_seconds: float = IDLE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.host = host
        self.port = port
        self.max_body = max_body
        self.max_head_bytes = max_head_bytes
        self._tls: ssl.SSLContext | None = None
        if scheme == "https":
            self._tls = ssl_context or default_tls_context()
        self._idle_seconds = idle_seconds
        self._monotonic = monotonic
        self._idle: collections.deque[_Exchange] = collections.deque()
        self._slots = asyncio.Semaphore(limit)
        self.open_connections: set[_Exchange] = set()  # in use or idle
        self.connections_opened = 0  # since start: climbing with requests means no keep-alive
        self.requests_resent = 0  # GETs sent again after a kept-alive connection was closed
        default = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host
        authority = name if port == default else f"{name}:{port}"
        self._host_line = f"Host: {authority}\r\n".encode("ascii")  # yarl gives IDNA hosts

    def __repr__(self) -> str:
        return f"Http1Pool({self.host!r}, {self.port}, open={len(self.open_connections)})"

    async def get(self, target: bytes, header_lines: bytes) -> Response:
        """GET ``target`` (an encoded path and query) with ``header_lines`` (each ending in
        CRLF; Host is added). Raises an Http1Error subclass, or CancelledError when cancelled
        (the connection is closed then); ValueError for a target that is not origin-form
        visible ASCII, before anything is sent."""
        if _TARGET.fullmatch(target) is None:
            raise ValueError("a request target must be a path of visible ASCII characters")
        request = b"GET " + target + b" HTTP/1.1\r\n" + self._host_line + header_lines + b"\r\n"
        async with self._slots:
            exchange = self._reuse()
            if exchange is not None:
                try:
                    return await self._exchange(exchange, request)
                except DisconnectedError as exc:
                    if exc.answered:
                        raise
                    # The server closed a kept-alive connection as the request went out: a GET
                    # may go again, once, on a new connection.
                    self.requests_resent += 1
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, exchange: _Exchange, request: bytes) -> Response:
        try:
            response = await exchange.send(request)
        except BaseException:
            exchange.close()
            self.open_connections.discard(exchange)
            raise
        if exchange.reusable:
            exchange.idle_since = self._monotonic()
            self._idle.append(exchange)
        else:
            exchange.close()
            self.open_connections.discard(exchange)
        return response

    def _reuse(self) -> _Exchange | None:
        """The most recently used idle connection still open, or None; the expired go."""
        idle = self._idle
        horizon = self._monotonic() - self._idle_seconds
        while idle and idle[0].idle_since < horizon:
            expired = idle.popleft()
            expired.close()
            self.open_connections.discard(expired)
        while idle:
            exchange = idle.pop()
            if not exchange.closed and exchange.reusable:
                return exchange
            self.open_connections.discard(exchange)
        return None

    async def _connect(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(self)
        try:
            await loop.create_connection(
                lambda: exchange,
                self.host,
                self.port,
                ssl=self._tls,
                server_hostname=self.host if self._tls is not None else None,
            )
        except socket.gaierror:
            raise ConnectFailedError(f"cannot resolve host {self.host}") from None
        except ssl.SSLError as exc:
            reason = exc.reason or type(exc).__name__
            raise ConnectFailedError(f"TLS with {self.host}:{self.port} failed: {reason}") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            where = f"{self.host}:{self.port}"
            raise ConnectFailedError(f"cannot connect to {where}: {reason}") from None
        except BaseException:
            exchange.close()
            raise
        self.open_connections.add(exchange)
        self.connections_opened += 1
        return exchange

    def close(self) -> None:
        """Close every connection; requests in flight fail as disconnected."""
        for exchange in list(self.open_connections):
            exchange.close()
        self.open_connections.clear()
        self._idle.clear()


def default_tls_context() -> ssl.SSLContext:
    """The system's trust store, hostname checks, TLS 1.2 at least, HTTP/1.1 by ALPN."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context
