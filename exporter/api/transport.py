"""How the client's requests reach the API: the built-in HTTP/1.1 pool (default) or aiohttp.

Both keep the contract of ``client.Transport``: the body of a 2xx answer is read within
MAX_BODY_BYTES (others are not read), failures are the client's typed FetchErrors, and
cancellation (the client's deadline) leaves no connection half-used. ``DIALNEXA_HTTP_CLIENT``
chooses; the fault matrix and the client's tests run on both.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import get_args

import aiohttp
from yarl import URL

from exporter.api import http1
from exporter.api.client import (
    MAX_BODY_BYTES,
    ConnectionFailedError,
    InvalidResponseError,
    Reply,
    Transport,
)
from exporter.config import HttpClientChoice

HTTP_CLIENTS: tuple[HttpClientChoice, ...] = get_args(HttpClientChoice)


class ClientConnections:
    """The API client's connections as the metrics read them: the built-in client's pool once
    one exists; None (no samples) with aiohttp's client, which does not tell."""

    def __init__(self) -> None:
        self.pool: http1.Http1Pool | None = None

    @property
    def open_connections(self) -> int | None:
        """Connections to the API open now."""
        return None if self.pool is None else len(self.pool.open_connections)

    @property
    def connections_opened(self) -> int | None:
        """Connections opened since start."""
        return None if self.pool is None else self.pool.connections_opened

    @property
    def requests_resent(self) -> int | None:
        """GETs sent again on a new connection since start."""
        return None if self.pool is None else self.pool.requests_resent


class _HeaderLines:
    """Encoded request headers; they hold the key, so their repr does not show them."""

    __slots__ = ("lines",)

    def __init__(self, lines: bytes) -> None:
        self.lines = lines

    def __repr__(self) -> str:
        return "_HeaderLines(...)"


class Http1Transport:
    """Requests on the built-in pool of kept-alive HTTP/1.1 connections (exporter.api.http1)."""

    def __init__(
        self, api_url: str, limit: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        url = URL(api_url)
        if url.scheme not in ("http", "https") or not url.host or url.port is None:
            raise ValueError("the API URL needs an http(s) scheme and a host")
        self._pool = http1.Http1Pool(
            url.scheme,
            url.host,
            url.port,
            limit=limit,
            max_body=MAX_BODY_BYTES,
            ssl_context=ssl_context,
        )
        self._headers: Mapping[str, str] | None = None
        self._encoded = _HeaderLines(b"")

    def __repr__(self) -> str:
        return f"Http1Transport({self._pool!r})"

    @property
    def pool(self) -> http1.Http1Pool:
        """The connections this transport uses."""
        return self._pool

    def _lines(self, headers: Mapping[str, str]) -> bytes:
        if headers is not self._headers:  # the client passes one mapping: encoded once
            lines = [f"{name}: {value}\r\n".encode() for name, value in headers.items()]
            lines.append(b"Accept-Encoding: gzip, deflate\r\n")
            self._encoded = _HeaderLines(b"".join(lines))
            self._headers = headers
        return self._encoded.lines

    async def get(self, url: URL, headers: Mapping[str, str]) -> Reply:
        """The answer to a GET of ``url`` (same origin as the API URL)."""
        try:
            target = url.raw_path_qs.encode("ascii")
            response = await self._pool.get(target, self._lines(headers))
        except (UnicodeEncodeError, ValueError):  # only a redirect's target can be so odd
            raise InvalidResponseError("redirect to a target that cannot be requested") from None
        except http1.UnreadableBodyError as exc:  # over the cap, or undecodable
            status = exc.response.status
            if not 200 <= status < 300:  # an error's body is not read: its status tells
                return Reply(status, exc.response.headers)
            raise InvalidResponseError(str(exc)).with_status(status) from None
        except http1.DisconnectedError as exc:
            if exc.status is None:
                raise ConnectionFailedError(str(exc)) from None
            error = ConnectionFailedError("response body was cut short")
            raise error.with_status(exc.status) from None  # counted under its status
        except http1.Http1Error as exc:  # no connection, or not HTTP
            raise ConnectionFailedError(str(exc)) from None
        status = response.status
        if not 200 <= status < 300:
            return Reply(status, response.headers)
        return Reply(status, response.headers, response.body)

    async def close(self) -> None:
        """Close every connection."""
        self._pool.close()


class AiohttpTransport:
    """Requests on one aiohttp client session: aiohttp's general-purpose client, about
    1.6 times the CPU of the built-in one per request, for an API it handles better."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def __repr__(self) -> str:
        return "AiohttpTransport()"

    async def get(self, url: URL, headers: Mapping[str, str]) -> Reply:
        """The answer to a GET of ``url``; redirects are the client's to follow."""
        status: int | None = None
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as answer:
                status = answer.status
                if not 200 <= status < 300:
                    return Reply(status, answer.headers)
                return Reply(status, answer.headers, await _read_capped(answer))
        except InvalidResponseError as exc:
            raise exc.with_status(status) if status is not None else exc from None
        except TimeoutError:
            raise  # aiohttp's own timeout errors are ClientErrors too; keep them timeouts
        except aiohttp.ClientPayloadError:
            error = ConnectionFailedError("response body was cut short")
            raise (error.with_status(status) if status is not None else error) from None
        except aiohttp.ClientConnectorDNSError:
            raise ConnectionFailedError(f"cannot resolve host {url.host}") from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.strerror or type(exc.os_error).__name__
            raise ConnectionFailedError(
                f"cannot connect to {url.host}:{url.port}: {reason}"
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise ConnectionFailedError("server closed the connection") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailedError(type(exc).__name__) from None

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._session.close()


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    length = response.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise InvalidResponseError(f"body of {length} bytes exceeds the {MAX_BODY_BYTES} cap")
    if length is not None and "Content-Encoding" not in response.headers:
        return await response.read()  # a known, uncompressed size within the cap: one read
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidResponseError(f"body exceeds the {MAX_BODY_BYTES} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def create_session(
    max_concurrency: int, ssl_context: ssl.SSLContext | None = None
) -> aiohttp.ClientSession:
    """An aiohttp session: connection pool sized to the concurrency cap, no proxy env."""
    connector = aiohttp.TCPConnector(
        limit=max_concurrency, ttl_dns_cache=300, ssl=ssl_context if ssl_context else True
    )
    return aiohttp.ClientSession(
        connector=connector,
        # The client enforces its own whole-request deadline; no second, different one here.
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # the API sets no cookies; none are kept or sent
        raise_for_status=False,
        auto_decompress=True,
    )


def create_transport(
    kind: HttpClientChoice,
    api_url: str,
    max_concurrency: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    connections: ClientConnections | None = None,
) -> Transport:
    """The transport ``kind`` for ``api_url``, with at most ``max_concurrency`` connections;
    ``connections``, when given, reports the built-in client's pool to the metrics."""
    if kind == "aiohttp":
        return AiohttpTransport(create_session(max_concurrency, ssl_context))
    transport = Http1Transport(api_url, max_concurrency, ssl_context=ssl_context)
    if connections is not None:
        connections.pool = transport.pool
    return transport
