"""Every connection the HTTP server accepts, counted, timed and capped, plain and TLS alike.

A connection is in one of four phases, each with a deadline: the TLS handshake
(``tls_handshake_timeout``), waiting for or reading a request's headers (``header_timeout``
from the connection's start, or from the first byte of a later request on a kept-alive
connection), answering (``response_timeout``), and idle between requests (``idle_timeout``).
A connection past its deadline is closed. At most ``max_connections`` are open at once, TLS
handshakes included: a new one beyond that closes the oldest connection that has not yet sent
a complete request, else the one idle the longest, else (all answering) it is refused. So a
flood of idle, slow or half-open connections costs the flooder, while a scraper gets its turn
as soon as it sends its request, and a kept-alive scraper is the last to be shed.

TLS is done here, per connection (``exporter.web.tls_stream``), rather than by the listening
server, so that a handshake in progress is a connection like any other: counted, timed and
closable, and a few tens of KiB instead of the event loops' 256 KiB buffer. The cap times that
is the bound on the connections' memory. Closed connections leave reference cycles that the
exporter's tuned garbage collector would reach late, so after a burst of closed connections the
guard collects and hands freed memory back to the OS.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import math
import resource
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from exporter.config import Settings
from exporter.logs import BurstLog
from exporter.memory import MemoryTuning
from exporter.web.request_policy import QuietRequestHandler
from exporter.web.tls_stream import ServerTLS, TLSTransport

log = logging.getLogger("exporter.http")

# File descriptors kept for everything but client connections (the API connections come on
# top): listening sockets, the event loop, logs, the files the exporter reads.
RESERVED_FDS = 64
# After this many closed connections the garbage collector runs at once: each leaves some tens
# of KiB in reference cycles, which the tuned collector (GC_YOUNG_THRESHOLD) would reach late.
# One collection per 128 connections is cheap next to accepting them.
COLLECT_AFTER_CLOSED = 128
# After this many, a collection runs within COLLECT_DELAY_SECONDS (the end of a burst).
COLLECT_TRAILING_CLOSED = 8
COLLECT_DELAY_SECONDS = 1.0
# How often deadlines are checked, at most: they are enforced within this (or a quarter of the
# shortest timeout, when that is shorter).
SWEEP_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How many connections may be open, and how long each phase of one may last."""

    max_connections: int = 256
    tls_handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    response_timeout: float = 60.0
    reserved_fds: int = RESERVED_FDS

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits the settings ask for; the API connections' descriptors are reserved."""
        return cls(
            max_connections=settings.max_connections,
            tls_handshake_timeout=settings.tls_handshake_timeout_seconds,
            header_timeout=settings.http_header_timeout_seconds,
            idle_timeout=settings.http_idle_timeout_seconds,
            response_timeout=settings.http_response_timeout_seconds,
            reserved_fds=RESERVED_FDS + settings.max_concurrency,
        )

    @property
    def sweep_seconds(self) -> float:
        """How often the deadlines are checked."""
        shortest = min(
            self.tls_handshake_timeout,
            self.header_timeout,
            self.idle_timeout,
            self.response_timeout,
        )
        return max(0.01, min(SWEEP_SECONDS, shortest / 4))


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to the hard one; the soft limit in force.

    The soft limit is often 1024 while the hard one is far higher: a server that holds a
    connection per descriptor should use what it is allowed (Go programs do this at start).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Phase(enum.Enum):
    """Where a connection is in its life; each phase but CLOSED has a deadline."""

    HANDSHAKE = "handshake"
    WAITING = "waiting"  # for the first byte of a request
    READING = "reading"  # a request's headers, not yet complete
    ANSWERING = "answering"
    CLOSED = "closed"


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol behind the guard's bookkeeping (and TLS)."""

    def __init__(
        self, guard: ConnectionGuard, handler: web.RequestHandler, tls: ssl.SSLContext | None
    ) -> None:
        self._guard = guard
        self._handler = handler
        self._context = tls
        self._raw: asyncio.Transport | None = None
        self._session: ServerTLS | None = None
        self.transport: asyncio.Transport | None = None  # what aiohttp writes to, once open
        self.phase = Phase.HANDSHAKE if tls is not None else Phase.WAITING
        self.deadline = math.inf
        self.served = 0

    @property
    def tls(self) -> bool:
        """True for a connection on a TLS listener."""
        return self._context is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TCP connection is there: admit it, then start TLS or hand it to aiohttp."""
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._raw = transport
        if not self._guard.admit(self):
            transport.abort()
            return
        if self._context is None:
            self._open(transport)
            return
        try:
            self._session = ServerTLS(self._context)
        except (ssl.SSLError, OSError) as exc:  # the context in force could not be used
            log.warning("cannot start TLS for a new connection: %s", type(exc).__name__)
            self.abort()

    def _open(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._guard.opened(self)
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: through TLS when on, then to aiohttp."""
        if self._session is None:
            self._deliver(data)
            return
        try:
            plaintext = self._session.receive(data)
        except ssl.SSLError as exc:
            log.debug("TLS failed (%s)", getattr(exc, "reason", None) or type(exc).__name__)
            self._flush()  # the alert that tells the client why
            self.close()
            return
        self._flush()
        if self.transport is None and self._session.established and self._raw is not None:
            assert self._context is not None
            self._open(TLSTransport(self._raw, self._session, self._context, self._handler))
        for chunk in plaintext:
            self._deliver(chunk)
        if self._session.peer_closed:  # close_notify: no half-close over TLS
            self._handler.eof_received()
            self.close()

    def _flush(self) -> None:
        if self._session is not None and self._raw is not None:
            output = self._session.pending_output()
            if output and not self._raw.is_closing():
                self._raw.write(output)

    def _deliver(self, data: bytes) -> None:
        if self.transport is None:  # the connection is being closed
            return
        if self.phase is Phase.WAITING:
            self._guard.reading(self)
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        """The client stopped sending: tell aiohttp; the transport then closes."""
        if self.transport is not None:
            self._handler.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: forget it, and tell aiohttp if it had it."""
        self._guard.forget(self)
        if self.transport is not None:
            self.transport = None
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        """The client reads slowly: aiohttp waits before writing more."""
        if self.transport is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        """The client caught up."""
        if self.transport is not None:
            self._handler.resume_writing()

    def close(self) -> None:
        """Close after sending what is buffered (and, with TLS, a close_notify)."""
        if self.transport is not None:
            self.transport.close()
        elif self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        """Close at once (TCP reset), whatever phase the connection is in."""
        if self._raw is not None:
            self._raw.abort()


class ConnectionGuard:
    """Counts, caps and times the connections of one server (all its listening sockets)."""

    def __init__(
        self,
        limits: ConnectionLimits | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or ConnectionLimits()
        self.capacity = self.limits.max_connections
        self._monotonic = monotonic
        # Admission order; the two below hold the connections that may be shed, oldest first.
        self._open: dict[GuardedConnection, None] = {}
        self._unproven: dict[GuardedConnection, None] = {}  # no complete request yet
        self._idle: dict[GuardedConnection, None] = {}  # kept alive after an answer
        self._by_transport: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._collector: asyncio.Handle | None = None
        self._closed_since_collection = 0
        self._memory = MemoryTuning()
        self._malformed = BurstLog(log, "malformed HTTP requests")
        self._full = BurstLog(log, "connection limit reached, closing the oldest idle ones")
        self._stopped = False
        self.counts = {"accepted": 0, "shed": 0, "refused": 0, "timed_out": 0, "collections": 0}

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet closed, TLS handshakes included."""
        return len(self._open)

    def phases(self) -> Counter[Phase]:
        """How many open connections are in each phase."""
        return Counter(conn.phase for conn in self._open)

    def fit_to_open_file_limit(self) -> int:
        """Raise the soft open-file limit to the hard one, and lower the cap if it still does
        not leave room for the exporter's own descriptors; the cap in force."""
        soft = raise_open_file_limit()
        room = max(1, soft - self.limits.reserved_fds)
        if self.limits.max_connections > room:
            log.warning(
                "open-file limit %d leaves room for %d connections: "
                "DIALNEXA_MAX_CONNECTIONS %d lowered to that",
                soft,
                room,
                self.limits.max_connections,
            )
        self.capacity = min(self.limits.max_connections, room)
        return self.capacity

    def protocol_factory(
        self, server: web.Server, tls: ssl.SSLContext | None
    ) -> Callable[[], GuardedConnection]:
        """What the listening server calls per accepted connection."""
        loop = asyncio.get_running_loop()

        def connection() -> GuardedConnection:
            handler = QuietRequestHandler(
                server,
                loop=loop,
                malformed=self._malformed,
                access_log=None,
                # aiohttp's own keep-alive timer, kept in line with the guard's.
                keepalive_timeout=self.limits.idle_timeout,
            )
            return GuardedConnection(self, handler, tls)

        return connection

    # --- the life of a connection ------------------------------------------------------------

    def admit(self, conn: GuardedConnection) -> bool:
        """Count a new connection in, shedding an older one at the cap; False: refuse it."""
        if self._stopped:
            return False
        if len(self._open) >= self.capacity:
            victim = next(iter(self._unproven), None) or next(iter(self._idle), None)
            if victim is None:
                self.counts["refused"] += 1
                self._full.event("every connection is answering: refused a new one")
                return False
            self.counts["shed"] += 1
            self._full.event(f"closed the oldest idle connection ({victim.phase.value})")
            self._close(victim)
        self.counts["accepted"] += 1
        self._open[conn] = None
        self._unproven[conn] = None
        timeout = self.limits.tls_handshake_timeout if conn.tls else self.limits.header_timeout
        conn.deadline = self._monotonic() + timeout
        self._ensure_sweeper()
        return True

    def opened(self, conn: GuardedConnection) -> None:
        """The connection is ready for HTTP (after its handshake, with TLS)."""
        if conn.phase is Phase.CLOSED or conn.transport is None:
            return
        self._by_transport[conn.transport] = conn
        if conn.phase is Phase.HANDSHAKE:
            conn.phase = Phase.WAITING
            conn.deadline = self._monotonic() + self.limits.header_timeout

    def reading(self, conn: GuardedConnection) -> None:
        """The first bytes of a request arrived: its headers are due within header_timeout."""
        if conn.phase is not Phase.WAITING:
            return
        conn.phase = Phase.READING
        if conn.served:  # a new connection's header deadline runs from its start
            conn.deadline = self._monotonic() + self.limits.header_timeout

    def connection_for(self, transport: object) -> GuardedConnection | None:
        """The guarded connection a request came on (None: not one of this guard's)."""
        if transport is None:
            return None
        return self._by_transport.get(cast(asyncio.BaseTransport, transport))

    def answering(self, conn: GuardedConnection) -> None:
        """A complete request is being answered: not sheddable until the answer is made."""
        if conn.phase is Phase.CLOSED:
            return
        conn.phase = Phase.ANSWERING
        conn.deadline = self._monotonic() + self.limits.response_timeout
        self._unproven.pop(conn, None)
        self._idle.pop(conn, None)

    def answered(self, conn: GuardedConnection) -> None:
        """The answer is made: the connection idles, last in the shedding order."""
        if conn.phase is Phase.CLOSED:
            return
        conn.served += 1
        conn.phase = Phase.WAITING
        conn.deadline = self._monotonic() + self.limits.idle_timeout
        self._idle[conn] = None

    def forget(self, conn: GuardedConnection) -> None:
        """The connection is closed (any number of calls)."""
        if conn.phase is Phase.CLOSED:
            return
        conn.phase = Phase.CLOSED
        self._open.pop(conn, None)
        self._unproven.pop(conn, None)
        self._idle.pop(conn, None)
        if conn.transport is not None:
            self._by_transport.pop(conn.transport, None)
        self._closed_since_collection += 1
        self._maybe_collect()

    def _close(self, conn: GuardedConnection) -> None:
        self.forget(conn)
        conn.abort()

    # --- deadlines and memory ----------------------------------------------------------------

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.limits.sweep_seconds, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        self.expire()
        if self._open:
            self._ensure_sweeper()

    def expire(self) -> int:
        """Close every connection past its deadline (the sweeper does this every
        ``limits.sweep_seconds`` while connections are open); how many were closed."""
        now = self._monotonic()
        expired = [c for c in self._open if c.deadline <= now]
        for conn in expired:
            self.counts["timed_out"] += 1
            log.debug("closed a connection past its %s deadline", conn.phase.value)
            self._close(conn)
        return len(expired)

    def _maybe_collect(self) -> None:
        if self._stopped:
            return
        closed = self._closed_since_collection
        if closed >= COLLECT_AFTER_CLOSED:
            if self._collector is not None:
                self._collector.cancel()
            self._collector = asyncio.get_running_loop().call_soon(self.collect)
        elif closed >= COLLECT_TRAILING_CLOSED and self._collector is None:
            loop = asyncio.get_running_loop()
            self._collector = loop.call_later(COLLECT_DELAY_SECONDS, self.collect)

    def collect(self) -> None:
        """Free the cycles closed connections left, and give the memory back to the OS."""
        if self._collector is not None:
            self._collector.cancel()
            self._collector = None
        if not self._closed_since_collection:
            return
        self._closed_since_collection = 0
        self.counts["collections"] += 1
        gc.collect()
        self._memory.release_free_memory()

    def stop(self) -> None:
        """The server stops: admit no more, stop the timers, close the connections aiohttp does
        not know of yet (in a TLS handshake); aiohttp closes its own gracefully."""
        self._stopped = True
        for handle in (self._sweeper, self._collector):
            if handle is not None:
                handle.cancel()
        self._sweeper = self._collector = None
        for conn in [c for c in self._open if c.transport is None]:
            self._close(conn)


GUARD = web.AppKey("connection_guard", ConnectionGuard)


@web.middleware
async def _track_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    conn = guard.connection_for(request.transport)
    if conn is None:  # served by another server (the tests' TestServer): nothing to track
        return await handler(request)
    guard.answering(conn)
    try:
        return await handler(request)
    finally:
        guard.answered(conn)


def guard_connections(
    app: web.Application,
    limits: ConnectionLimits,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> ConnectionGuard:
    """Give ``app`` a guard for its connections (call before the app starts)."""
    guard = ConnectionGuard(limits, monotonic=monotonic)
    app[GUARD] = guard
    # First of all middlewares, so that a request waiting for a password check counts as
    # being answered.
    app.middlewares.insert(0, _track_answers)
    return guard


class GuardedSite(web.BaseSite):
    """A listening socket bound beforehand whose connections go through a ConnectionGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        guard: ConnectionGuard,
        tls: ssl.SSLContext | None = None,
        *,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._listening = sock
        self._guard = guard
        self._tls = tls
        self._owner = runner
        host, port = sock.getsockname()[:2]
        scheme = "https" if tls is not None else "http"
        self._url = str(URL.build(scheme=scheme, host=host, port=port))

    @property
    def name(self) -> str:
        """The site's URL."""
        return self._url

    async def start(self) -> None:
        """Listen, each accepted connection guarded."""
        await super().start()
        server = self._owner.server
        assert server is not None, "runner.setup() comes first"
        loop = asyncio.get_running_loop()
        # Checked against aiohttp 3.14: BaseSite.stop() closes `_server` and the runner's
        # `addresses` reads its sockets; aiohttp's own sites set it the same way.
        self._server = await loop.create_server(
            self._guard.protocol_factory(server, self._tls),
            sock=self._listening,
            backlog=self._backlog,
        )

    async def stop(self) -> None:
        """Stop listening and drop the guard's connections still in a handshake."""
        await super().stop()
        self._guard.stop()


async def start_guarded_sites(
    runner: web.AppRunner, sockets: list[socket.socket], tls: ssl.SSLContext | None
) -> list[web.BaseSite]:
    """Serve ``runner`` on ``sockets`` through its app's guard (plain sites without one)."""
    guard = runner.app.get(GUARD)
    sites: list[web.BaseSite] = []
    if guard is not None:
        guard.fit_to_open_file_limit()
    for sock in sockets:
        site: web.BaseSite
        if guard is not None:
            site = GuardedSite(runner, sock, guard, tls)
        else:
            site = web.SockSite(runner, sock, ssl_context=tls)
        await site.start()
        sites.append(site)
    return sites
