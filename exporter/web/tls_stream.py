"""Server-side TLS over memory buffers, and the transport aiohttp writes to through it.

The exporter does TLS itself with ``ssl.SSLObject`` (the standard library's interface for event
loops) instead of letting the listening server do it, for two reasons. A connection in its
handshake is then an ordinary connection of the exporter's, counted, timed and closable like
any other (asyncio's and uvloop's servers keep it out of sight until the handshake ends). And
it costs what OpenSSL needs, a few tens of KiB: the event loops' TLS protocols hold a 256 KiB
read buffer per connection for its whole life, so a few hundred idle TLS connections would
take more memory than the exporter's whole limit.

Renegotiation is refused (``OP_NO_RENEGOTIATION`` in the server context), so writing never has
to wait for the client's next bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

# The plaintext of one TLS record is at most 16 KiB: reading more at once buys nothing.
READ_SIZE = 16 * 1024


class ServerTLS:
    """One server-side TLS session: client bytes in, plaintext out, and the other way round.

    It does no I/O: whatever it produces for the client waits in ``pending_output()``.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.established = False
        self.peer_closed = False

    def receive(self, data: bytes) -> list[bytes]:
        """Feed bytes from the client; the plaintext they complete (raises ssl.SSLError on a
        failed handshake or a bad record)."""
        self._incoming.write(data)
        if not self.established:
            try:
                self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                return []
            self.established = True
        chunks: list[bytes] = []
        while not self.peer_closed:
            try:
                chunk = self.ssl_object.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the client's close_notify
                self.peer_closed = True
                break
            if not chunk:
                self.peer_closed = True
                break
            chunks.append(chunk)
        return chunks

    def pending_output(self) -> bytes:
        """Bytes to send to the client (handshake messages, alerts, session tickets)."""
        return self._outgoing.read()

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` as TLS records for the client."""
        view = memoryview(data)
        while view:
            written = self.ssl_object.write(view)
            view = view[written:]
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        """The close_notify alert to send before closing (empty if TLS never started)."""
        if self.established:
            # Only ours is sent: the client's close_notify is not awaited.
            with contextlib.suppress(ssl.SSLError):
                self.ssl_object.unwrap()
        return self._outgoing.read()


class TLSTransport(asyncio.Transport):
    """What aiohttp writes to on a TLS connection: plaintext in, records to the raw transport."""

    def __init__(
        self,
        raw: asyncio.Transport,
        session: ServerTLS,
        context: ssl.SSLContext,
        protocol: asyncio.BaseProtocol,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._session = session
        self._context = context
        self._protocol = protocol
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """TLS details (as asyncio's TLS transports name them), else the socket's."""
        tls = self._session.ssl_object
        if name == "sslcontext":
            return self._context
        if name == "ssl_object":
            return tls
        if name == "peercert":
            return tls.getpeercert()
        if name == "cipher":
            return tls.cipher()
        if name == "compression":
            return tls.compression()
        return self._raw.get_extra_info(name, default)

    def is_closing(self) -> bool:
        """True once closing began, from either side."""
        return self._closing or self._raw.is_closing()

    def close(self) -> None:
        """Send close_notify and whatever is buffered, then close."""
        if self.is_closing():
            return
        self._closing = True
        self._raw.write(self._session.close_notify())
        self._raw.close()

    def abort(self) -> None:
        """Close at once, dropping buffered data."""
        self._closing = True
        self._raw.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send it."""
        if not data or self.is_closing():
            return
        try:
            records = self._session.encrypt(data)
        except ssl.SSLError:
            self.abort()
            return
        self._raw.write(records)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Encrypt and send the pieces as one."""
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        """TLS has no half-close."""
        return False

    def write_eof(self) -> None:
        """Not possible over TLS (``can_write_eof`` is False)."""
        raise NotImplementedError("TLS connections cannot half-close")

    def pause_reading(self) -> None:
        """Stop reading from the client (aiohttp's queue of requests is full)."""
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        """Read again."""
        self._raw.resume_reading()

    def is_reading(self) -> bool:
        """True while reading from the client."""
        return self._raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Flow control is the raw transport's: it holds the encrypted bytes."""
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        """Encrypted bytes not yet sent."""
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The raw transport's flow-control limits."""
        return self._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Record the protocol (aiohttp never swaps it)."""
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol reading from this transport."""
        return self._protocol
