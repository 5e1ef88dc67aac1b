"""Protects the HTTP server with an exporter-toolkit web config file: TLS, basic auth, headers.

``DIALNEXA_WEB_CONFIG_FILE`` takes the YAML format of the Prometheus exporter-toolkit's
``--web.config.file`` (the schema is in ``exporter.web.webconfig_model``): ``tls_server_config``,
``basic_auth_users`` (user name: bcrypt hash) and ``http_server_config`` (``headers``; ``http2``
is accepted and ignored, the server speaks HTTP/1.1). Relative paths are relative to the file's
directory. Keys of that format this exporter does not implement are refused rather than
silently ignored, like any unknown key.

Differences forced by Python's ``ssl`` module, which cannot ask for a client certificate without
verifying it: ``RequireAnyClientCert`` behaves like ``RequireAndVerifyClientCert`` (the
certificate must chain to ``client_ca_file``, which is therefore required), and
``RequestClientCert`` behaves like ``NoClientCert`` (the exporter never looks at an unverified
certificate, so asking for one would change nothing).

Probe policy: ``/healthz`` and ``/readyz`` are exempt from basic auth, because kubelet probes
cannot send credentials; they are still served over TLS, and a ``client_auth_type`` that
requires a client certificate applies to them too (the handshake comes before any path), so with
mutual TLS use ``tcpSocket`` or ``exec`` probes. Every other path, ``/`` and ``/metrics``
included, needs a valid user when ``basic_auth_users`` is not empty.

Reloading: the file and the certificate, key and CA files it names are checked at most every
``check_seconds`` (when a connection is accepted or a request arrives) and re-read when their
content changed, so rotated certificates, CAs and passwords take effect without a restart. The
server listens with a context that creates each new connection from the newest fully loaded
context, so each new connection gets the whole new policy: certificate, client CA,
``client_auth_type`` and TLS versions. Connections already open keep theirs. A changed file that
does not load is logged once and the running configuration stays; turning TLS on or off needs a
restart.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from exporter.config import ConfigError
from exporter.web.basic_auth import BasicAuthenticator, CheckQueue, Verdict
from exporter.web.webconfig_model import WebConfig, parse_web_config, problem
from exporter.web.webconfig_tls import ReloadingServerContext, build_ssl_context, reloading_context

log = logging.getLogger("exporter.webconfig")

DEFAULT_CHECK_SECONDS = 2.0
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
REALM = "dialnexa-exporter"
CHALLENGE = f'Basic realm="{REALM}"'
# How long a client told "too many password checks pending" should wait before trying again.
BUSY_RETRY_SECONDS = 1


# The web config file and the PEM files it names are read whole, at start-up and at every
# check after a change: larger than this, they are refused unread.
MAX_WEB_CONFIG_BYTES = 1024 * 1024
MAX_PEM_FILE_BYTES = 4 * 1024 * 1024


def _read(path: Path, what: str, config_path: Path, limit: int = MAX_PEM_FILE_BYTES) -> bytes:
    try:
        with path.open("rb") as file:
            content = file.read(limit + 1)
    except OSError as exc:
        raise problem(config_path, f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(content) > limit:
        raise problem(config_path, f"{what} {path} is larger than {limit // 1024} KiB")
    return content


def read_web_config(path: Path) -> tuple[WebConfig, bytes]:
    """Parse the file at ``path``; also return a digest of it and of every file it names."""
    raw = _read(path, "the web config file", path, MAX_WEB_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise problem(path, "is not UTF-8 text") from None
    config = parse_web_config(text, path)
    digest = hashlib.sha256(raw)
    if config.tls is not None:
        for name, file in config.tls.files:
            content = _read(file, f"tls_server_config.{name}", path)
            if name == "cert_file" and b"-----BEGIN CERTIFICATE-----" not in content:
                raise problem(path, f"tls_server_config.cert_file {file} holds no PEM certificate")
            if name == "key_file" and b"PRIVATE KEY-----" not in content:
                raise problem(path, f"tls_server_config.key_file {file} holds no PEM private key")
            digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return config, digest.digest()


class WebConfigWatcher:
    """The web config in force: parsed file, TLS contexts and authenticator, reloaded on change."""

    def __init__(
        self,
        path: Path,
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        queue: CheckQueue | None = None,
    ) -> None:
        self._path = path
        self._check_seconds = check_seconds
        self._monotonic = monotonic
        config, digest = read_web_config(path)
        context = build_ssl_context(config.tls, path) if config.tls is not None else None
        self._config = config
        self._digest = digest
        # One queue of password checks for the process: it outlives reloaded user lists.
        self._queue = queue or CheckQueue()
        self._authenticator = BasicAuthenticator(config.users, queue=self._queue)
        self._current = context
        self._listening: ReloadingServerContext | None = None
        if context is not None:
            self._listening = reloading_context(self._context_for_new_connection)
        self._last_error: str | None = None
        self._next_check = monotonic() + check_seconds

    @property
    def config(self) -> WebConfig:
        """The configuration in force."""
        return self._config

    @property
    def authenticator(self) -> BasicAuthenticator:
        """The basic auth checker for the users in force."""
        return self._authenticator

    @property
    def listening_context(self) -> ssl.SSLContext | None:
        """The context to listen with (None: plain HTTP); it hands connections the latest one."""
        return self._listening

    def refresh(self) -> bool:
        """Reload if the check is due and a file changed; True when a new config took over."""
        now = self._monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self._check_seconds
        try:
            config, digest = read_web_config(self._path)
            if digest == self._digest:
                self._last_error = None
                return False
            if (config.tls is None) != (self._listening is None):
                raise problem(self._path, "turning TLS on or off needs a restart")
            context = build_ssl_context(config.tls, self._path) if config.tls is not None else None
        except ConfigError as exc:
            if str(exc) != self._last_error:
                log.error("web config change rejected, keeping the running one: %s", exc)
                self._last_error = str(exc)
            return False
        self._install(config, digest, context)
        return True

    def _install(self, config: WebConfig, digest: bytes, context: ssl.SSLContext | None) -> None:
        if config.users != self._config.users:
            self._authenticator = BasicAuthenticator(config.users, queue=self._queue)
        self._current = context
        self._config = config
        self._digest = digest
        self._last_error = None
        log.info(
            "web config reloaded: TLS %s, %d basic auth user(s)",
            "on" if config.tls is not None else "off",
            len(config.users),
        )

    def _context_for_new_connection(self) -> ssl.SSLContext:
        try:
            self.refresh()
        except Exception:  # an error here would drop the connection; serve the running config
            log.exception("web config check failed; keeping the running configuration")
        if self._current is None:  # cannot happen: switching TLS off is refused while running
            raise ssl.SSLError("TLS is not configured")
        return self._current

    def close(self) -> None:
        """Stop the password check threads."""
        self._queue.close()


WEB_CONFIG = web.AppKey("web_config", WebConfigWatcher)


def _refusal(verdict: Verdict) -> web.Response:
    if verdict is Verdict.BUSY:
        return web.Response(
            status=429,
            text="429 Too Many Requests\n",
            headers={hdrs.RETRY_AFTER: str(BUSY_RETRY_SECONDS)},
        )
    return web.Response(
        status=401, text="401 Unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: CHALLENGE}
    )


@web.middleware
async def _require_credentials(request: web.Request, handler: Handler) -> web.StreamResponse:
    watcher = request.app[WEB_CONFIG]
    watcher.refresh()
    if request.path in PROBE_PATHS:
        return await handler(request)
    verdict = await watcher.authenticator.check(
        request.headers.get(hdrs.AUTHORIZATION), request.remote
    )
    if verdict is not Verdict.ALLOWED:
        return _refusal(verdict)
    return await handler(request)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.app[WEB_CONFIG].config.headers.items():
        response.headers[name] = value


async def _close_watcher(app: web.Application) -> None:
    app[WEB_CONFIG].close()


def protect(app: web.Application, watcher: WebConfigWatcher) -> None:
    """Put ``app`` behind ``watcher``'s basic auth and response headers (call before start)."""
    app[WEB_CONFIG] = watcher
    app.middlewares.append(_require_credentials)
    app.on_response_prepare.append(_add_headers)
    app.on_cleanup.append(_close_watcher)


def listening_context(app: web.Application) -> ssl.SSLContext | None:
    """The SSLContext to serve ``app`` with, or None for plain HTTP."""
    watcher = app.get(WEB_CONFIG)
    return watcher.listening_context if watcher is not None else None
