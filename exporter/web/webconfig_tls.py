"""TLS for the HTTP server: a context per web config, and one listening context that hands each
new connection the newest of them."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from exporter.web.webconfig_model import TLSServerConfig, problem


class _EncryptedKeyError(Exception):
    """The key file asked for a password; the exporter has none to give."""


def _refuse_password() -> bytes:
    raise _EncryptedKeyError


def _load_chain(context: ssl.SSLContext, tls: TLSServerConfig, config_path: Path) -> None:
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_password)
    except _EncryptedKeyError:
        raise problem(
            config_path, f"tls_server_config.key_file {tls.key_file} is encrypted; use a plain key"
        ) from None
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = getattr(exc, "reason", None)
        if reason == "KEY_VALUES_MISMATCH":
            text = "tls_server_config.key_file does not match cert_file"
        else:
            text = f"cannot load cert_file and key_file ({reason or exc.strerror or 'bad PEM'})"
        raise problem(config_path, text) from None


def build_ssl_context(tls: TLSServerConfig, config_path: Path) -> ssl.SSLContext:
    """A server SSLContext for ``tls``, certificate and CA loaded; ConfigError when they fail."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    # TLS 1.2 renegotiation lets a client make the server redo handshakes at will, and would
    # make a write wait for the client's bytes (exporter.web.tls_stream never does).
    context.options |= ssl.OP_NO_RENEGOTIATION
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, tls, config_path)
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except OSError as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or "bad PEM"
            raise problem(
                config_path,
                f"tls_server_config.client_ca_file {tls.client_ca_file} is unusable ({reason})",
            ) from None
    context.verify_mode = tls.client_auth.verify_mode
    return context


class ReloadingServerContext(ssl.SSLContext):
    """Listening context that builds every new connection from the newest loaded context.

    It holds no certificate itself: asyncio calls ``wrap_bio`` once per accepted connection,
    and each call asks ``latest`` for the context in force right then.
    """

    latest: Callable[[], ssl.SSLContext]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """The new connection's TLS object, from the context in force right now."""
        return self.latest().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Same as wrap_bio, for servers that hand over sockets instead of memory BIOs."""
        return self.latest().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )


def reloading_context(latest: Callable[[], ssl.SSLContext]) -> ReloadingServerContext:
    """A listening context dispatching every new connection to ``latest()``."""
    context = ReloadingServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.latest = latest
    return context
