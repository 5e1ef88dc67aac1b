"""Requests the exporter does not serve, and how it says so without echoing them.

The exporter speaks HTTP/1.0 and 1.1 with GET and HEAD. A request line of another version
(``HTTP/2.0``, ``HTTP/0.9``) is answered ``505`` with an ``HTTP/1.1`` status line, as Go's
servers do, and the connection closed; CONNECT is answered ``405`` and closed instead of
turning the connection into a tunnel; a request asking to switch protocols (``Upgrade:``,
WebSocket or h2c) is served as plain HTTP/1.1, as RFC 9110 allows, and the connection closed
after it so no upgraded state lingers. Answers name the server without versions. A request
aiohttp cannot parse is answered with a bare
status line and counted in one warning per burst: aiohttp's own answer and log line quote the
offending bytes, which may be an ``Authorization`` header.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from exporter.logs import BurstLog

log = logging.getLogger("exporter.http")

SUPPORTED_VERSIONS = frozenset({HttpVersion10, HttpVersion11})
ALLOWED_METHODS = "GET, HEAD"
_VERSION_NOT_SUPPORTED = b"505 HTTP Version Not Supported\n"


def _answer_raw_and_close(request: web.Request, status_line: bytes, body: bytes) -> None:
    """Write a whole HTTP/1.1 answer straight to the connection, then close it.

    aiohttp writes the request's own version in the status line, so a 505 to ``HTTP/2.0`` would
    claim to be HTTP/2.0; this answer is written by hand instead.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    head = (
        status_line + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    transport.write(head + body)
    transport.close()


@web.middleware
async def refuse_unsupported(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse other HTTP versions and CONNECT; close connections that asked for an upgrade."""
    if request.version not in SUPPORTED_VERSIONS:
        log.debug("refused HTTP/%d.%d request", request.version.major, request.version.minor)
        _answer_raw_and_close(
            request, b"HTTP/1.1 505 HTTP Version Not Supported", _VERSION_NOT_SUPPORTED
        )
        # aiohttp tries to send this too, finds the connection closed and drops it quietly.
        return web.Response(status=505)
    if request.method == hdrs.METH_CONNECT:
        refusal = web.Response(
            status=405,
            text="405 Method Not Allowed\n",
            headers={hdrs.ALLOW: ALLOWED_METHODS},
        )
        refusal.force_close()
        return refusal
    response = await handler(request)
    if hdrs.UPGRADE in request.headers:
        response.force_close()
    return response


SERVER_NAME = "dialnexa-exporter"


async def name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``Server: dialnexa-exporter`` instead of aiohttp's, which names the Python and
    aiohttp versions to anyone who asks (probes need no credentials)."""
    response.headers[hdrs.SERVER] = SERVER_NAME


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class QuietRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, answering what it cannot parse with a bare status.

    Checked against aiohttp 3.14: ``handle_error`` is called with the status of the parse error
    (or 500 when a handler raised) and must return the response to send; it raises
    ConnectionError when part of an answer was already sent. The stock version logs a
    traceback quoting the request and echoes the request's bytes in the body.
    """

    __slots__ = ("_malformed",)

    def __init__(self, manager: web.Server, *, malformed: BurstLog, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._malformed = malformed

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """One line in the log (no exception text) and a bare ``<status> <phrase>`` answer."""
        if isinstance(exc, ConnectionError):
            log.debug("client went away mid-answer (%s)", type(exc).__name__)
        elif status >= 500:
            # A fault of the exporter's own handlers: worth a traceback, which holds no request
            # bytes (the handlers never put header values in exceptions).
            log.error("error answering a request", exc_info=exc)
        else:
            self._malformed.event(
                f"answered {status} to {request.remote} ({type(exc).__name__ if exc else '-'})"
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was partly sent; the connection is dropped")
        response = web.Response(status=status, text=f"{status} {_phrase(status)}\n")
        response.force_close()
        return response
