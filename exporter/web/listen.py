"""Opening the listening sockets first, so that a taken port stops the exporter before it polls."""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

from exporter.config import ConfigError, parse_listen_address

BACKLOG = 128


_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL})


def _bind(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # One socket per family, as asyncio does: IPv4 is served by its own socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listen_address(address: str, setting: str) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (``:port``: every interface, IPv4 and IPv6).

    With port 0 every socket gets the port the first one was given. Raises ConfigError naming
    ``setting`` when the address cannot be listened on (taken port, unknown host).
    """
    host, port = parse_listen_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(setting, f"cannot listen on {address}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, _, _, _, sockaddr in infos:
            if (family, str(sockaddr[0])) in seen:
                continue
            seen.add((family, str(sockaddr[0])))
            if sockets and port == 0:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            try:
                sockets.append(_bind(family, sockaddr))
            except OSError as exc:
                if host is None and family == socket.AF_INET6 and exc.errno in _NO_IPV6:
                    continue  # every interface, on a host without IPv6: IPv4 only
                raise
    except OSError as exc:
        close_all(sockets)
        raise ConfigError(setting, f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    """Close sockets that were bound but never handed to a server."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
