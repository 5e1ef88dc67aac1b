"""Binding the listening sockets before anything starts."""

from __future__ import annotations

import socket

import pytest

from exporter.config import ConfigError
from exporter.web.listen import bind_listen_address, close_all


def test_a_loopback_address_gives_one_listening_socket() -> None:
    """host:0 binds one socket on a free port, already listening and non-blocking."""
    sockets = bind_listen_address("127.0.0.1:0", "DIALNEXA_LISTEN_ADDRESS")
    try:
        assert len(sockets) == 1
        host, port = sockets[0].getsockname()[:2]
        assert (host, port > 0) == ("127.0.0.1", True)
        assert not sockets[0].getblocking()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the kernel completes the handshake: it listens
    finally:
        close_all(sockets)


def test_every_interface_means_ipv4_and_ipv6_on_one_port() -> None:
    """':0' binds each address family (where the host has it) on the same port."""
    sockets = bind_listen_address(":0", "DIALNEXA_LISTEN_ADDRESS")
    try:
        families = {sock.family for sock in sockets}
        assert socket.AF_INET in families
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
    finally:
        close_all(sockets)


def test_a_taken_port_is_a_configuration_error_naming_the_setting() -> None:
    """EADDRINUSE becomes one line naming the setting and the address; nothing stays open."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"DIALNEXA_LISTEN_ADDRESS: cannot listen on 127\.0\.0\.1:{port}"
        ):
            bind_listen_address(f"127.0.0.1:{port}", "DIALNEXA_LISTEN_ADDRESS")


def test_an_unknown_host_is_a_configuration_error() -> None:
    """A host name that does not resolve is refused the same way."""
    with pytest.raises(ConfigError, match="--listen-address: cannot listen on"):
        bind_listen_address("no-such-host.invalid:80", "--listen-address")
