"""Protects the HTTP server with an exporter-toolkit web config file: TLS, basic auth, headers.

``DIALNEXA_WEB_CONFIG_FILE`` takes the YAML format of the Prometheus exporter-toolkit's
``--web.config.file``: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_auth_type``,
``client_ca_file``, ``min_version``, ``max_version``, ``prefer_server_cipher_suites``),
``basic_auth_users`` (user name: bcrypt hash) and ``http_server_config`` (``headers``; ``http2``
is accepted and ignored, aiohttp speaks HTTP/1.1). Relative paths are relative to the file's
directory. Keys of that format this exporter does not implement (``cert``, ``key``,
``client_ca``, ``cipher_suites``, ``curve_preferences``, ``client_allowed_sans``,
``rate_limit``) are refused rather than silently ignored, like any unknown key.

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
server listens with a context whose ``wrap_bio`` (what asyncio calls once per accepted
connection) creates the connection from the newest fully loaded context, so each new connection
gets the whole new policy: certificate, client CA, ``client_auth_type`` and TLS versions.
Connections already open keep theirs. A changed file that does not load is logged once and the
running configuration stays; turning TLS on or off needs a restart.

Basic auth follows the toolkit: an unknown user is checked against a decoy hash so timing does
not reveal which users exist, bcrypt runs in a worker thread one check at a time, and a
successful check is remembered (an HMAC of the credentials under a per-process random key,
compared in constant time) so a scraper every 15 s does not pay bcrypt on each scrape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import logging
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from exporter.config import ConfigError, env_name

log = logging.getLogger(__name__)

SETTING = env_name("web_config_file")
DEFAULT_CHECK_SECONDS = 2.0
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
REALM = "dialnexa-exporter"
CHALLENGE = f'Basic realm="{REALM}"'

_TOP_KEYS = frozenset({"tls_server_config", "http_server_config", "basic_auth_users"})
_TLS_KEYS = frozenset(
    {
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "prefer_server_cipher_suites",
    }
)
_HTTP_KEYS = frozenset({"headers", "http2"})
# Part of the exporter-toolkit format but not implemented here: refused with a clear message.
_NOT_SUPPORTED = frozenset(
    {
        "rate_limit",
        "cert",
        "key",
        "client_ca",
        "cipher_suites",
        "curve_preferences",
        "client_allowed_sans",
    }
)
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The headers the toolkit lets a file set, with the only values it accepts (None = any).
_HEADERS: dict[str, frozenset[str] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT_HASH = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


class ClientAuth(enum.Enum):
    """exporter-toolkit ``client_auth_type`` values (Go's ``tls.ClientAuthType`` names)."""

    NO_CLIENT_CERT = "NoClientCert"
    REQUEST_CLIENT_CERT = "RequestClientCert"
    REQUIRE_ANY_CLIENT_CERT = "RequireAnyClientCert"
    VERIFY_CLIENT_CERT_IF_GIVEN = "VerifyClientCertIfGiven"
    REQUIRE_AND_VERIFY_CLIENT_CERT = "RequireAndVerifyClientCert"

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """The ``ssl`` verify mode that enforces this policy."""
        if self in (ClientAuth.REQUIRE_ANY_CLIENT_CERT, ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT):
            return ssl.CERT_REQUIRED
        if self is ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN:
            return ssl.CERT_OPTIONAL
        return ssl.CERT_NONE


# "RequireClientCert" is the toolkit's old spelling, still accepted there.
_CLIENT_AUTH_NAMES = {item.value: item for item in ClientAuth} | {
    "": ClientAuth.NO_CLIENT_CERT,
    "RequireClientCert": ClientAuth.REQUIRE_ANY_CLIENT_CERT,
}


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """``tls_server_config``: where the certificate and key are, and the handshake policy."""

    cert_file: Path
    key_file: Path
    client_auth: ClientAuth = ClientAuth.NO_CLIENT_CERT
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True

    @property
    def files(self) -> tuple[tuple[str, Path], ...]:
        """(key name, path) of every file this configuration reads."""
        named = [("cert_file", self.cert_file), ("key_file", self.key_file)]
        if self.client_ca_file is not None:
            named.append(("client_ca_file", self.client_ca_file))
        return tuple(named)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A parsed web config file; ``tls`` None means plain HTTP, no users means no basic auth."""

    tls: TLSServerConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)


def _problem(path: Path, problem: str) -> ConfigError:
    return ConfigError(SETTING, f"{path}: {problem}")


def _mapping(value: object, where: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _problem(path, f"{where} must be a mapping")
    for key in value:
        if not isinstance(key, str):
            raise _problem(path, f"{where}: keys must be strings, got {type(key).__name__}")
    return dict(value)


def _check_keys(values: Mapping[str, Any], allowed: frozenset[str], where: str, path: Path) -> None:
    for key in values:
        if key in allowed:
            continue
        prefix = f"{where}." if where else ""
        if key in _NOT_SUPPORTED:
            raise _problem(path, f"{prefix}{key} is not supported by dialnexa-exporter")
        raise _problem(path, f"unknown key {prefix}{key}")


def _string(values: Mapping[str, Any], key: str, where: str, path: Path) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _problem(path, f"{where}.{key} must be a string")
    return value


def _file(values: Mapping[str, Any], key: str, path: Path) -> Path | None:
    text = _string(values, key, "tls_server_config", path)
    if not text:
        return None
    return path.parent / Path(text).expanduser()


def _version(
    values: Mapping[str, Any], key: str, default: ssl.TLSVersion, path: Path
) -> ssl.TLSVersion:
    text = _string(values, key, "tls_server_config", path)
    if not text:
        return default
    if text not in _TLS_VERSIONS:
        choices = ", ".join(_TLS_VERSIONS)
        raise _problem(path, f"tls_server_config.{key} {text!r} is not one of {choices}")
    return _TLS_VERSIONS[text]


def _parse_tls(raw: object, path: Path) -> TLSServerConfig | None:
    values = _mapping(raw, "tls_server_config", path)
    _check_keys(values, _TLS_KEYS, "tls_server_config", path)
    if not values:
        return None
    cert_file = _file(values, "cert_file", path)
    key_file = _file(values, "key_file", path)
    if cert_file is None or key_file is None:
        missing = "cert_file" if cert_file is None else "key_file"
        raise _problem(path, f"tls_server_config.{missing} is required")
    auth_name = _string(values, "client_auth_type", "tls_server_config", path) or ""
    if auth_name not in _CLIENT_AUTH_NAMES:
        choices = ", ".join(item.value for item in ClientAuth)
        raise _problem(
            path, f"tls_server_config.client_auth_type {auth_name!r} is not one of {choices}"
        )
    client_auth = _CLIENT_AUTH_NAMES[auth_name]
    client_ca_file = _file(values, "client_ca_file", path)
    if client_ca_file is not None and client_auth is ClientAuth.NO_CLIENT_CERT:
        raise _problem(
            path, "tls_server_config.client_ca_file is set but client_auth_type is NoClientCert"
        )
    if client_ca_file is None and client_auth.verify_mode is not ssl.CERT_NONE:
        raise _problem(
            path, f"tls_server_config.client_auth_type {client_auth.value} needs client_ca_file"
        )
    min_version = _version(values, "min_version", ssl.TLSVersion.TLSv1_2, path)
    max_version = _version(values, "max_version", ssl.TLSVersion.TLSv1_3, path)
    if min_version > max_version:
        raise _problem(path, "tls_server_config.min_version is above max_version")
    prefer = values.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _problem(path, "tls_server_config.prefer_server_cipher_suites must be true or false")
    return TLSServerConfig(
        cert_file=cert_file,
        key_file=key_file,
        client_auth=client_auth,
        client_ca_file=client_ca_file,
        min_version=min_version,
        max_version=max_version,
        prefer_server_cipher_suites=prefer,
    )


def _parse_headers(raw: object, path: Path) -> dict[str, str]:
    values = _mapping(raw, "http_server_config", path)
    _check_keys(values, _HTTP_KEYS, "http_server_config", path)
    if not isinstance(values.get("http2", True), bool):
        raise _problem(path, "http_server_config.http2 must be true or false")
    headers: dict[str, str] = {}
    for name, value in _mapping(values.get("headers"), "http_server_config.headers", path).items():
        if name not in _HEADERS:
            raise _problem(path, f"http_server_config.headers: {name} can not be configured")
        if value is None or value == "":
            continue  # the toolkit's "unset if blank"
        if not isinstance(value, str) or any(ch in value for ch in "\r\n\0"):
            raise _problem(path, f"http_server_config.headers.{name} must be a one-line string")
        allowed = _HEADERS[name]
        if allowed is not None and value not in allowed:
            choices = ", ".join(sorted(allowed))
            raise _problem(path, f"http_server_config.headers.{name} must be one of {choices}")
        headers[name] = value
    return headers


def _parse_users(raw: object, path: Path) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for name, hashed in _mapping(raw, "basic_auth_users", path).items():
        if not name or ":" in name:
            raise _problem(path, f"basic_auth_users: user name {name!r} is empty or has a ':'")
        # Never echo the value: it may be a plain password pasted by mistake.
        encoded = hashed.encode("utf-8") if isinstance(hashed, str) else b""
        match = _BCRYPT_HASH.fullmatch(encoded)
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise _problem(path, f"basic_auth_users: the password of {name!r} is not a bcrypt hash")
        users[name] = encoded
    return users


def parse_web_config(text: str, path: Path) -> WebConfig:
    """Validate the YAML ``text`` of the file at ``path``; raise ConfigError on any problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _problem(path, f"not valid YAML{where}") from None
    values = _mapping(data, "the file", path)
    _check_keys(values, _TOP_KEYS, "", path)
    return WebConfig(
        tls=_parse_tls(values.get("tls_server_config"), path),
        users=_parse_users(values.get("basic_auth_users"), path),
        headers=_parse_headers(values.get("http_server_config"), path),
    )


def _read(path: Path, what: str, config_path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _problem(config_path, f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_web_config(path: Path) -> tuple[WebConfig, bytes]:
    """Parse the file at ``path``; also return a digest of it and of every file it names."""
    raw = _read(path, "the web config file", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _problem(path, "is not UTF-8 text") from None
    config = parse_web_config(text, path)
    digest = hashlib.sha256(raw)
    if config.tls is not None:
        for name, file in config.tls.files:
            content = _read(file, f"tls_server_config.{name}", path)
            if name == "cert_file" and b"-----BEGIN CERTIFICATE-----" not in content:
                raise _problem(path, f"tls_server_config.cert_file {file} holds no PEM certificate")
            if name == "key_file" and b"PRIVATE KEY-----" not in content:
                raise _problem(path, f"tls_server_config.key_file {file} holds no PEM private key")
            digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return config, digest.digest()


class _EncryptedKeyError(Exception):
    """The key file asked for a password; the exporter has none to give."""


def _refuse_password() -> bytes:
    raise _EncryptedKeyError


def build_ssl_context(tls: TLSServerConfig, config_path: Path) -> ssl.SSLContext:
    """A server SSLContext for ``tls``, certificate and CA loaded; ConfigError when they fail."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_password)
    except _EncryptedKeyError:
        raise _problem(
            config_path, f"tls_server_config.key_file {tls.key_file} is encrypted; use a plain key"
        ) from None
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = getattr(exc, "reason", None)
        if reason == "KEY_VALUES_MISMATCH":
            problem = "tls_server_config.key_file does not match cert_file"
        else:
            problem = f"cannot load cert_file and key_file ({reason or exc.strerror or 'bad PEM'})"
        raise _problem(config_path, problem) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except OSError as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or "bad PEM"
            raise _problem(
                config_path,
                f"tls_server_config.client_ca_file {tls.client_ca_file} is unusable ({reason})",
            ) from None
    context.verify_mode = tls.client_auth.verify_mode
    return context


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None if it is not one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt refuses passwords over 72 bytes; such a password never matches
        return False


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


class BasicAuthenticator:
    """Checks ``Authorization: Basic`` against bcrypt hashes, remembering successful checks."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        checkpw: Callable[[bytes, bytes], bool] = _bcrypt_matches,
    ) -> None:
        self._users = dict(users)
        self._checkpw = checkpw
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._decoy: bytes | None = None
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        """True when there is at least one user, i.e. credentials are required."""
        return bool(self._users)

    def _fingerprint(self, user: str, password: bytes, hashed: bytes) -> bytes:
        message = b"".join(
            len(part).to_bytes(4, "big") + part for part in (user.encode("utf-8"), password, hashed)
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _decoy_hash(self) -> bytes:
        if self._decoy is None:
            cost = max(_cost(hashed) for hashed in self._users.values())
            self._decoy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        return self._decoy

    def _check(self, password: bytes, hashed: bytes | None) -> bool:
        if hashed is None:
            # Unknown user: spend the same bcrypt time so timing does not reveal who exists.
            self._checkpw(password, self._decoy_hash())
            return False
        return self._checkpw(password, hashed)

    async def allows(self, authorization: str | None) -> bool:
        """True when no users are configured or the header carries a valid user and password."""
        if not self._users:
            return True
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        fingerprint: bytes | None = None
        if hashed is not None:
            fingerprint = self._fingerprint(user, password, hashed)
            remembered = self._verified.get(user)
            if remembered is not None and hmac.compare_digest(remembered, fingerprint):
                return True
        # One bcrypt at a time, off the event loop: wrong guesses cannot starve the scrapes,
        # which are answered from the remembered fingerprints above.
        async with self._lock:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, self._check, password, hashed)
        if ok and fingerprint is not None:
            self._verified[user] = fingerprint
            return True
        return False


class _ReloadingServerContext(ssl.SSLContext):
    """Listening context that builds every new connection from the newest loaded context."""

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


class WebConfigWatcher:
    """The web config in force: parsed file, TLS contexts and authenticator, reloaded on change."""

    def __init__(
        self,
        path: Path,
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._check_seconds = check_seconds
        self._monotonic = monotonic
        config, digest = read_web_config(path)
        context = build_ssl_context(config.tls, path) if config.tls is not None else None
        self._config = config
        self._digest = digest
        self._authenticator = BasicAuthenticator(config.users)
        self._current = context
        self._listening: _ReloadingServerContext | None = None
        if context is not None:
            # The listening context itself holds no certificate: it only dispatches.
            self._listening = _ReloadingServerContext(ssl.PROTOCOL_TLS_SERVER)
            self._listening.latest = self._context_for_new_connection
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
                raise _problem(self._path, "turning TLS on or off needs a restart")
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
            self._authenticator = BasicAuthenticator(config.users)
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


WEB_CONFIG = web.AppKey("web_config", WebConfigWatcher)


@web.middleware
async def _require_credentials(request: web.Request, handler: Handler) -> web.StreamResponse:
    watcher = request.app[WEB_CONFIG]
    watcher.refresh()
    if request.path in PROBE_PATHS:
        return await handler(request)
    if not await watcher.authenticator.allows(request.headers.get(hdrs.AUTHORIZATION)):
        return web.Response(
            status=401, text="401 Unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: CHALLENGE}
        )
    return await handler(request)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.app[WEB_CONFIG].config.headers.items():
        response.headers[name] = value


def protect(app: web.Application, watcher: WebConfigWatcher) -> None:
    """Put ``app`` behind ``watcher``'s basic auth and response headers (call before start)."""
    app[WEB_CONFIG] = watcher
    app.middlewares.append(_require_credentials)
    app.on_response_prepare.append(_add_headers)


def listening_context(app: web.Application) -> ssl.SSLContext | None:
    """The SSLContext to serve ``app`` with, or None for plain HTTP."""
    watcher = app.get(WEB_CONFIG)
    return watcher.listening_context if watcher is not None else None
