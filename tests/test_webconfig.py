"""DIALNEXA_WEB_CONFIG_FILE: parsing, TLS with real certificates, basic auth with real bcrypt."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from exporter.cli import main
from exporter.config import ConfigError
from exporter.web.server import EXPOSITION, create_app
from exporter.web.webconfig import (
    CHALLENGE,
    DEFAULT_CHECK_SECONDS,
    MAX_PEM_FILE_BYTES,
    MAX_WEB_CONFIG_BYTES,
    WebConfigWatcher,
    listening_context,
    read_web_config,
)
from exporter.web.webconfig_model import ClientAuth
from tests.helpers import (
    API_KEY,
    OffsetClock,
    StartSim,
    campaign,
    exporter_settings,
    read_serving_url,
    serve,
    serve_guarded,
    spawn_exporter,
    trusting,
    wait_for,
)

SETTING = "DIALNEXA_WEB_CONFIG_FILE"
ALICE_PASSWORD = "correct horse battery staple"
# Cost 4 keeps the tests fast; the format is the one htpasswd -B and Go's bcrypt produce.
ALICE_HASH = bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
NEW_PASSWORD = "tr0ub4dor&3 rotated"
NEW_HASH = bcrypt.hashpw(NEW_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    """An Authorization header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def install_leaf(leaf: trustme.LeafCert, cert_file: Path, key_file: Path) -> None:
    """Write a certificate chain and its key where the web config points."""
    cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())


@dataclass
class Pki:
    """A server CA and certificate on disk, and a client CA with clients in and out of it."""

    directory: Path
    server_ca: trustme.CA
    client_ca: trustme.CA
    trusted_client: trustme.LeafCert
    stranger_client: trustme.LeafCert

    @property
    def cert_file(self) -> Path:
        """The server certificate file."""
        return self.directory / "server.crt"

    @property
    def key_file(self) -> Path:
        """The server key file."""
        return self.directory / "server.key"

    @property
    def client_ca_file(self) -> Path:
        """The CA file client certificates are checked against."""
        return self.directory / "client-ca.crt"

    def client_context(
        self,
        leaf: trustme.LeafCert | None = None,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client context trusting the server CA, optionally with a client certificate."""
        context = trusting(self.server_ca)
        if leaf is not None:
            leaf.configure_cert(context)
        if maximum_version is not None:
            context.maximum_version = maximum_version
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Fresh CAs and certificates for one test, written under tmp_path."""
    server_ca = trustme.CA()
    client_ca = trustme.CA()
    pki = Pki(
        directory=tmp_path,
        server_ca=server_ca,
        client_ca=client_ca,
        trusted_client=client_ca.issue_cert("scraper.example", common_name="scraper"),
        stranger_client=trustme.CA().issue_cert("scraper.example", common_name="stranger"),
    )
    install_leaf(
        server_ca.issue_cert("127.0.0.1", common_name="first"), pki.cert_file, pki.key_file
    )
    client_ca.cert_pem.write_to_path(str(pki.client_ca_file))
    return pki


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as a YAML web config file."""
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tls_section(**extra: Any) -> dict[str, Any]:
    """A tls_server_config with relative paths (resolved against the file's directory)."""
    return {"cert_file": "server.crt", "key_file": "server.key", **extra}


@dataclass
class Reply:
    """One HTTPS exchange: the response and what the TLS layer showed."""

    status: int
    headers: dict[str, str]
    body: bytes
    common_name: str
    serial: str
    tls_version: str


@dataclass
class TlsExporter:
    """The exporter app served with its web config on a loopback port."""

    app: web.Application
    port: int
    clock: OffsetClock

    def url(self, path: str, scheme: str = "https") -> str:
        """URL of ``path`` on this exporter."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def get(
        self, path: str, context: ssl.SSLContext, authorization: str | None = None
    ) -> Reply:
        """GET ``path`` over a new TLS connection (HTTP/1.1 by hand, to see the TLS layer)."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=context)
        except (ssl.SSLError, ConnectionError) as exc:
            raise HandshakeFailedError(str(exc)) from exc
        try:
            tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
            peer = tls.getpeercert()
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: 127.0.0.1:{self.port}",
                "Connection: close",
                "Accept-Encoding: identity",
            ]
            if authorization is not None:
                lines.append(f"Authorization: {authorization}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            raw = await reader.read()
        except (ssl.SSLError, ConnectionError) as exc:
            raise NoResponseError(str(exc)) from exc
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
        if not raw:
            raise NoResponseError("connection closed without an HTTP response")
        assert peer is not None
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines)
        subject = dict(item[0] for item in peer["subject"])
        return Reply(
            status=int(status_line.split()[1]),
            headers=headers,
            body=body,
            common_name=str(subject.get("commonName")),
            serial=str(peer["serialNumber"]),
            tls_version=str(tls.version()),
        )


class HandshakeFailedError(Exception):
    """The TLS handshake itself failed (connect phase)."""


class NoResponseError(Exception):
    """The handshake seemed to pass but the server closed the connection without answering."""


StartTls = Callable[[Path], Awaitable[TlsExporter]]


@pytest.fixture
async def start_tls_exporter(start_simulator: StartSim) -> AsyncIterator[StartTls]:
    """Factory: the exporter with a web config file, served like the CLI serves it."""
    runners: list[web.AppRunner] = []

    async def start(config_file: Path) -> TlsExporter:
        sim = await start_simulator([campaign("cmp_a")])
        settings = exporter_settings(sim, ["cmp_a"], web_config_file=str(config_file))
        clock = OffsetClock()
        app = create_app(settings, clock=clock)
        runner, port = await serve_guarded(app, listening_context(app))
        runners.append(runner)
        return TlsExporter(app, port, clock)

    yield start
    for runner in runners:
        await runner.cleanup()


# --- parsing -----------------------------------------------------------------------------------


def test_full_file_parses_into_policy(pki: Pki) -> None:
    """Every supported key is read; relative paths resolve against the file's directory."""
    path = write_config(
        pki.directory / "web.yml",
        {
            "tls_server_config": tls_section(
                client_auth_type="RequireAndVerifyClientCert",
                client_ca_file="client-ca.crt",
                min_version="TLS13",
                max_version="TLS13",
                prefer_server_cipher_suites=False,
            ),
            "http_server_config": {"http2": False, "headers": {"X-Frame-Options": "deny"}},
            "basic_auth_users": {"alice": ALICE_HASH, "bob": NEW_HASH.replace("$2b$", "$2y$")},
        },
    )
    config, _ = read_web_config(path)
    assert config.tls is not None
    assert config.tls.cert_file == pki.cert_file
    assert config.tls.key_file == pki.key_file
    assert config.tls.client_ca_file == pki.client_ca_file
    assert config.tls.client_auth is ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT
    assert (config.tls.min_version, config.tls.max_version) == (
        ssl.TLSVersion.TLSv1_3,
        ssl.TLSVersion.TLSv1_3,
    )
    assert config.tls.prefer_server_cipher_suites is False
    assert sorted(config.users) == ["alice", "bob"]
    assert dict(config.headers) == {"X-Frame-Options": "deny"}
    assert ALICE_HASH not in repr(config)


def test_empty_file_means_plain_http_and_no_auth(tmp_path: Path) -> None:
    """An empty file (the toolkit accepts one) turns nothing on."""
    path = tmp_path / "web.yml"
    path.write_text("", encoding="utf-8")
    watcher = WebConfigWatcher(path)
    assert watcher.config.tls is None
    assert watcher.listening_context is None
    assert not watcher.authenticator.enabled


def _bad_configs() -> list[tuple[str, dict[str, Any] | str, str]]:
    """(case, file content, expected words in the message)."""
    tls = tls_section()
    return [
        ("unknown top key", {"tls_server_config": tls, "basic_auth": {}}, "unknown key basic_auth"),
        ("unknown tls key", {"tls_server_config": {**tls, "certfile": "x"}}, "certfile"),
        (
            "unsupported toolkit key",
            {"tls_server_config": {**tls, "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
            "cipher_suites is not supported",
        ),
        ("rate limit", {"rate_limit": {"interval": "1s", "burst": 2}}, "rate_limit"),
        ("no key_file", {"tls_server_config": {"cert_file": "server.crt"}}, "key_file"),
        (
            "missing cert file",
            {"tls_server_config": {**tls, "cert_file": "nope.crt"}},
            "cannot read",
        ),
        (
            "cert file is not a certificate",
            {"tls_server_config": {**tls, "cert_file": "server.key"}},
            "no PEM certificate",
        ),
        (
            "key of another certificate",
            {"tls_server_config": {**tls, "key_file": "other.key"}},
            "does not match",
        ),
        (
            "bad client_auth_type",
            {"tls_server_config": {**tls, "client_auth_type": "Always"}},
            "client_auth_type",
        ),
        (
            "verification without a CA",
            {"tls_server_config": {**tls, "client_auth_type": "RequireAndVerifyClientCert"}},
            "needs client_ca_file",
        ),
        (
            "any client cert without a CA",
            {"tls_server_config": {**tls, "client_auth_type": "RequireAnyClientCert"}},
            "needs client_ca_file",
        ),
        (
            "CA without client auth",
            {"tls_server_config": {**tls, "client_ca_file": "client-ca.crt"}},
            "NoClientCert",
        ),
        (
            "CA file holds a key",
            {
                "tls_server_config": {
                    **tls,
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "server.key",
                }
            },
            "client_ca_file",
        ),
        (
            "encrypted key",
            {"tls_server_config": {**tls, "key_file": "encrypted.key"}},
            "is encrypted",
        ),
        ("unknown TLS version", {"tls_server_config": {**tls, "min_version": "TLS14"}}, "TLS14"),
        (
            "min above max",
            {"tls_server_config": {**tls, "min_version": "TLS13", "max_version": "TLS12"}},
            "above max_version",
        ),
        ("plain password", {"basic_auth_users": {"alice": ALICE_PASSWORD}}, "not a bcrypt hash"),
        ("user with colon", {"basic_auth_users": {"al:ice": ALICE_HASH}}, "':'"),
        (
            "header not allowed",
            {"http_server_config": {"headers": {"Server": "x"}}},
            "can not be configured",
        ),
        (
            "bad X-Frame-Options",
            {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
            "X-Frame-Options",
        ),
        ("not a mapping", "- a\n- b\n", "must be a mapping"),
        ("not YAML", "tls_server_config: [unclosed\n", "not valid YAML"),
    ]


def _write_bad_case_files(pki: Pki, tmp_path: Path) -> list[str]:
    """The key files the bad cases name; what no message may show."""
    other = pki.server_ca.issue_cert("127.0.0.1")
    (tmp_path / "other.key").write_bytes(other.private_key_pem.bytes())
    key = serialization.load_pem_private_key(pki.key_file.read_bytes(), password=None)
    (tmp_path / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key passphrase"),
        )
    )
    key_lines = [line for line in pki.key_file.read_text().splitlines() if "-----" not in line]
    return [ALICE_PASSWORD, ALICE_HASH, "PRIVATE KEY", *key_lines]


def _write_case(path: Path, content: dict[str, Any] | str) -> None:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        write_config(path, content)


def test_bad_files_are_one_line_errors_naming_the_setting_without_secrets(
    pki: Pki, tmp_path: Path
) -> None:
    """Each bad file is a ConfigError naming DIALNEXA_WEB_CONFIG_FILE, one line, no secret."""
    secrets_shown = _write_bad_case_files(pki, tmp_path)
    cases = _bad_configs()
    for case, content, expected in cases:
        path = tmp_path / "web.yml"
        _write_case(path, content)
        with pytest.raises(ConfigError) as info:
            WebConfigWatcher(path)
        message = str(info.value)
        assert info.value.setting == SETTING, case
        assert "\n" not in message, case
        assert expected in message, (case, message)
        for secret in secrets_shown:
            assert secret not in message, (case, message)
    assert len(cases) == 22


def test_check_reads_the_web_config_as_start_up_does(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` says what a good web config sets up, and fails every bad one start-up would
    refuse: exit 2, one line naming the setting, no password, hash or key material."""
    monkeypatch.setenv("DIALNEXA_API_KEY", API_KEY)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    path = tmp_path / "web.yml"
    monkeypatch.setenv(SETTING, str(path))
    write_config(path, {"tls_server_config": tls_section(), "basic_auth_users": {"a": ALICE_HASH}})
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert f"with {path} (TLS, basic auth for 1 user)\n" in out
    assert ALICE_HASH not in out
    write_config(path, {})
    assert main(["check"]) == 0
    assert "(plain HTTP, no basic auth)" in capsys.readouterr().out
    secrets_shown = _write_bad_case_files(pki, tmp_path)
    for case, content, expected in _bad_configs():
        _write_case(path, content)
        assert main(["check"]) == 2, case
        captured = capsys.readouterr()
        assert captured.out == "", case
        assert captured.err.startswith(f"dialnexa-exporter: configuration error: {SETTING}: ")
        assert captured.err.count("\n") == 1, (case, captured.err)
        assert expected in captured.err, (case, captured.err)
        for secret in secrets_shown:
            assert secret not in captured.err, case


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A web config path that does not exist is reported with the setting's name."""
    with pytest.raises(ConfigError) as info:
        WebConfigWatcher(tmp_path / "absent.yml")
    assert info.value.setting == SETTING
    assert "cannot read" in info.value.problem


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """Nested anchors and aliases ("billion laughs": 9**9 strings from nine short lines) are
    refused in one line naming the line of the first alias, instead of being expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "web.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        WebConfigWatcher(path)
    assert info.value.setting == SETTING
    assert "YAML aliases are not allowed (line 2)" in info.value.problem


@pytest.mark.parametrize("which", ["web config", "cert_file"])
def test_oversized_files_are_refused_unread(pki: Pki, which: str) -> None:
    """A web config file over 1 MiB, or a PEM file over 4 MiB, is refused with its size
    limit rather than read whole."""
    path = write_config(pki.directory / "web.yml", {"tls_server_config": tls_section()})
    if which == "web config":
        with path.open("a", encoding="utf-8") as file:
            file.write("# padding\n" * (MAX_WEB_CONFIG_BYTES // 10 + 1))
    else:
        with pki.cert_file.open("ab") as file:
            file.write(b"\n" * (MAX_PEM_FILE_BYTES + 1))
    with pytest.raises(ConfigError) as info:
        WebConfigWatcher(path)
    assert "is larger than" in info.value.problem


# --- over TLS, end to end ----------------------------------------------------------------------


async def test_metrics_need_the_right_password_over_tls(
    pki: Pki, start_tls_exporter: StartTls
) -> None:
    """/metrics over TLS: right password 200; wrong, unknown user or none 401 with a challenge."""
    config = write_config(
        pki.directory / "web.yml",
        {"tls_server_config": tls_section(), "basic_auth_users": {"alice": ALICE_HASH}},
    )
    exporter = await start_tls_exporter(config)
    client = pki.client_context()
    ok = await exporter.get("/metrics", client, basic("alice", ALICE_PASSWORD))
    assert ok.status == 200
    assert b"dialnexa_exporter_build_info" in ok.body
    assert ok.common_name == "first"
    for authorization in (
        basic("alice", "wrong password"),
        basic("bob", ALICE_PASSWORD),
        f"Bearer {API_KEY}",
        None,
    ):
        denied = await exporter.get("/metrics", client, authorization)
        assert denied.status == 401, authorization
        assert denied.headers["WWW-Authenticate"] == CHALLENGE
        assert b"dialnexa" not in denied.body
    again = await exporter.get("/metrics", client, basic("alice", ALICE_PASSWORD))
    assert again.status == 200


async def test_probes_skip_basic_auth_but_not_tls(pki: Pki, start_tls_exporter: StartTls) -> None:
    """/healthz and /readyz answer without credentials, only over TLS; / still needs a user."""
    config = write_config(
        pki.directory / "web.yml",
        {"tls_server_config": tls_section(), "basic_auth_users": {"alice": ALICE_HASH}},
    )
    exporter = await start_tls_exporter(config)
    client = pki.client_context()
    await wait_for(lambda: exporter.app[EXPOSITION].current.ready, what="first poll round")
    assert (await exporter.get("/healthz", client)).status == 200
    assert (await exporter.get("/readyz", client)).status == 200
    assert (await exporter.get("/", client)).status == 401
    assert (await exporter.get("/healthz/", client)).status == 401
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(exporter.url("/healthz", scheme="http")) as response:
                await response.read()


async def test_configured_headers_are_on_every_response(
    pki: Pki, start_tls_exporter: StartTls
) -> None:
    """http_server_config.headers are sent on successes and on 401s alike."""
    headers = {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}
    config = write_config(
        pki.directory / "web.yml",
        {
            "tls_server_config": tls_section(),
            "basic_auth_users": {"alice": ALICE_HASH},
            "http_server_config": {"headers": headers},
        },
    )
    exporter = await start_tls_exporter(config)
    client = pki.client_context()
    for reply in (
        await exporter.get("/healthz", client),
        await exporter.get("/metrics", client),
        await exporter.get("/metrics", client, basic("alice", ALICE_PASSWORD)),
    ):
        for name, expected in headers.items():
            assert reply.headers.get(name) == expected, (reply.status, name)


CLIENT_CERT_CASES = [
    ("RequireAndVerifyClientCert", "none", False),
    ("RequireAndVerifyClientCert", "stranger", False),
    ("RequireAndVerifyClientCert", "trusted", True),
    ("RequireAnyClientCert", "none", False),
    ("RequireAnyClientCert", "trusted", True),
    ("VerifyClientCertIfGiven", "none", True),
    ("VerifyClientCertIfGiven", "stranger", False),
    ("VerifyClientCertIfGiven", "trusted", True),
]


@pytest.mark.parametrize("client_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize(("auth_type", "client", "accepted"), CLIENT_CERT_CASES)
async def test_client_certificate_policy(
    pki: Pki,
    start_tls_exporter: StartTls,
    auth_type: str,
    client: str,
    accepted: bool,
    client_max: ssl.TLSVersion,
) -> None:
    """client_auth_type decides the handshake: a missing or foreign client certificate fails it."""
    config = write_config(
        pki.directory / "web.yml",
        {
            "tls_server_config": tls_section(
                client_auth_type=auth_type, client_ca_file="client-ca.crt"
            )
        },
    )
    exporter = await start_tls_exporter(config)
    leaf = {"none": None, "stranger": pki.stranger_client, "trusted": pki.trusted_client}[client]
    context = pki.client_context(leaf, maximum_version=client_max)
    if accepted:
        assert (await exporter.get("/healthz", context)).status == 200
        return
    # Before TLS 1.3 the server's verdict arrives inside the handshake; with TLS 1.3 the client
    # finishes first and gets the server's alert instead of an HTTP response.
    refused = (
        HandshakeFailedError
        if client_max is ssl.TLSVersion.TLSv1_2
        else (HandshakeFailedError, NoResponseError)
    )
    with pytest.raises(refused):
        await exporter.get("/healthz", context)


@pytest.mark.parametrize(
    ("versions", "client_max", "negotiated"),
    [
        ({"min_version": "TLS13"}, ssl.TLSVersion.TLSv1_2, None),
        ({"min_version": "TLS13"}, None, "TLSv1.3"),
        ({"max_version": "TLS12"}, None, "TLSv1.2"),
    ],
)
async def test_tls_version_bounds(
    pki: Pki,
    start_tls_exporter: StartTls,
    versions: dict[str, str],
    client_max: ssl.TLSVersion | None,
    negotiated: str | None,
) -> None:
    """min_version TLS13 refuses a TLS 1.2-only client; max_version caps what is negotiated."""
    config = write_config(pki.directory / "web.yml", {"tls_server_config": tls_section(**versions)})
    exporter = await start_tls_exporter(config)
    context = pki.client_context(maximum_version=client_max)
    if negotiated is None:
        with pytest.raises(HandshakeFailedError):
            await exporter.get("/healthz", context)
        return
    reply = await exporter.get("/healthz", context)
    assert (reply.status, reply.tls_version) == (200, negotiated)


# --- reloading ---------------------------------------------------------------------------------


async def test_rotated_certificate_reaches_new_connections_without_restart(
    pki: Pki, start_tls_exporter: StartTls
) -> None:
    """Replacing cert_file and key_file: the next new connection gets the new certificate."""
    config = write_config(pki.directory / "web.yml", {"tls_server_config": tls_section()})
    exporter = await start_tls_exporter(config)
    client = pki.client_context()
    before = await exporter.get("/healthz", client)
    assert before.common_name == "first"
    install_leaf(
        pki.server_ca.issue_cert("127.0.0.1", common_name="second"), pki.cert_file, pki.key_file
    )
    exporter.clock.advance(DEFAULT_CHECK_SECONDS)
    after = await exporter.get("/healthz", client)
    assert after.status == 200
    assert after.common_name == "second"
    assert after.serial != before.serial


async def test_half_written_rotation_keeps_the_old_certificate(
    pki: Pki, start_tls_exporter: StartTls, caplog: pytest.LogCaptureFixture
) -> None:
    """A new cert with the old key is rejected with one logged line; the old pair keeps serving."""
    config = write_config(pki.directory / "web.yml", {"tls_server_config": tls_section()})
    exporter = await start_tls_exporter(config)
    client = pki.client_context()
    second = pki.server_ca.issue_cert("127.0.0.1", common_name="second")
    old_key = pki.key_file.read_bytes()
    pki.cert_file.write_bytes(second.cert_chain_pems[0].bytes())
    with caplog.at_level(logging.ERROR, logger="exporter.webconfig"):
        for _ in range(2):
            exporter.clock.advance(DEFAULT_CHECK_SECONDS)
            reply = await exporter.get("/healthz", client)
            assert (reply.status, reply.common_name) == (200, "first")
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1
    assert "does not match" in rejected[0]
    assert old_key.decode().splitlines()[1] not in caplog.text
    pki.key_file.write_bytes(second.private_key_pem.bytes())
    exporter.clock.advance(DEFAULT_CHECK_SECONDS)
    assert (await exporter.get("/healthz", client)).common_name == "second"


async def test_replaced_client_ca_drops_the_old_one(pki: Pki, start_tls_exporter: StartTls) -> None:
    """After client_ca_file is replaced, clients of the old CA fail and the new CA's get in."""
    config = write_config(
        pki.directory / "web.yml",
        {
            "tls_server_config": tls_section(
                client_auth_type="RequireAndVerifyClientCert", client_ca_file="client-ca.crt"
            )
        },
    )
    exporter = await start_tls_exporter(config)
    old_client = pki.client_context(pki.trusted_client, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert (await exporter.get("/healthz", old_client)).status == 200
    new_ca = trustme.CA()
    new_ca.cert_pem.write_to_path(str(pki.client_ca_file))
    exporter.clock.advance(DEFAULT_CHECK_SECONDS)
    with pytest.raises(HandshakeFailedError):
        await exporter.get("/healthz", old_client)
    new_client = pki.client_context(new_ca.issue_cert("scraper.example"))
    assert (await exporter.get("/healthz", new_client)).status == 200


async def test_tightened_tls_policy_applies_to_new_connections(
    pki: Pki, start_tls_exporter: StartTls
) -> None:
    """Editing client_auth_type and min_version takes effect for the next handshake."""
    path = write_config(pki.directory / "web.yml", {"tls_server_config": tls_section()})
    exporter = await start_tls_exporter(path)
    tls12 = ssl.TLSVersion.TLSv1_2
    assert (await exporter.get("/healthz", pki.client_context(maximum_version=tls12))).status == 200
    write_config(
        path,
        {
            "tls_server_config": tls_section(
                client_auth_type="RequireAndVerifyClientCert",
                client_ca_file="client-ca.crt",
                min_version="TLS13",
            )
        },
    )
    exporter.clock.advance(DEFAULT_CHECK_SECONDS)
    with pytest.raises(HandshakeFailedError):
        await exporter.get("/healthz", pki.client_context(pki.trusted_client, tls12))
    with pytest.raises((HandshakeFailedError, NoResponseError)):
        await exporter.get("/healthz", pki.client_context())
    reply = await exporter.get("/healthz", pki.client_context(pki.trusted_client))
    assert (reply.status, reply.tls_version) == (200, "TLSv1.3")


async def test_password_rotation_and_bad_edits(
    pki: Pki, start_tls_exporter: StartTls, caplog: pytest.LogCaptureFixture
) -> None:
    """A new hash replaces the old password; a broken edit or TLS switched off is refused."""
    path = pki.directory / "web.yml"
    write_config(
        path, {"tls_server_config": tls_section(), "basic_auth_users": {"alice": ALICE_HASH}}
    )
    exporter = await start_tls_exporter(path)
    client = pki.client_context()
    old, new = basic("alice", ALICE_PASSWORD), basic("alice", NEW_PASSWORD)
    assert (await exporter.get("/metrics", client, old)).status == 200
    write_config(
        path, {"tls_server_config": tls_section(), "basic_auth_users": {"alice": NEW_HASH}}
    )
    exporter.clock.advance(DEFAULT_CHECK_SECONDS)
    assert (await exporter.get("/metrics", client, old)).status == 401
    assert (await exporter.get("/metrics", client, new)).status == 200
    with caplog.at_level(logging.ERROR, logger="exporter.webconfig"):
        path.write_text("basic_auth_users: [broken\n", encoding="utf-8")
        exporter.clock.advance(DEFAULT_CHECK_SECONDS)
        assert (await exporter.get("/metrics", client, new)).status == 200
        write_config(path, {"basic_auth_users": {"alice": ALICE_HASH}})
        exporter.clock.advance(DEFAULT_CHECK_SECONDS)
        assert (await exporter.get("/metrics", client, new)).status == 200
        assert (await exporter.get("/metrics", client, old)).status == 401
    assert "not valid YAML" in caplog.text
    assert "turning TLS on or off needs a restart" in caplog.text
    assert NEW_HASH not in caplog.text


async def test_basic_auth_without_tls_follows_password_changes(
    tmp_path: Path, start_simulator: StartSim
) -> None:
    """basic_auth_users alone protects plain HTTP; a new hash applies on a kept-alive connection."""
    path = write_config(tmp_path / "web.yml", {"basic_auth_users": {"alice": ALICE_HASH}})
    sim = await start_simulator([campaign("cmp_a")])
    clock = OffsetClock()
    app = create_app(exporter_settings(sim, ["cmp_a"], web_config_file=str(path)), clock=clock)
    assert listening_context(app) is None
    server = await serve(app)
    old = {"Authorization": basic("alice", ALICE_PASSWORD)}
    new = {"Authorization": basic("alice", NEW_PASSWORD)}
    try:
        async with aiohttp.ClientSession() as session:

            async def status(headers: dict[str, str]) -> int:
                async with session.get(server.make_url("/metrics"), headers=headers) as response:
                    await response.read()
                    return response.status

            assert await status({}) == 401
            assert await status(old) == 200
            write_config(path, {"basic_auth_users": {"alice": NEW_HASH}})
            clock.advance(DEFAULT_CHECK_SECONDS)
            assert await status(old) == 401
            assert await status(new) == 200
    finally:
        await server.close()


def test_files_are_checked_at_most_every_check_seconds(tmp_path: Path) -> None:
    """Before check_seconds pass a change is not seen; after, it is; unchanged files keep state."""
    now = [100.0]
    path = write_config(tmp_path / "web.yml", {"basic_auth_users": {"alice": ALICE_HASH}})
    watcher = WebConfigWatcher(path, check_seconds=5.0, monotonic=lambda: now[0])
    first = watcher.authenticator
    now[0] += 5.0
    assert watcher.refresh() is False
    assert watcher.authenticator is first
    write_config(path, {"basic_auth_users": {"bob": NEW_HASH}})
    now[0] += 4.0
    assert watcher.refresh() is False
    assert sorted(watcher.config.users) == ["alice"]
    now[0] += 1.0
    assert watcher.refresh() is True
    assert sorted(watcher.config.users) == ["bob"]
    second = watcher.authenticator
    assert second is not first
    write_config(path, {"basic_auth_users": {"bob": NEW_HASH}, "http_server_config": {}})
    now[0] += 5.0
    assert watcher.refresh() is True
    assert watcher.authenticator is second  # same users: remembered logins survive the reload


# --- the command line --------------------------------------------------------------------------


def _cli_env(config: Path, api_url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "DIALNEXA_API_KEY": API_KEY,
        "DIALNEXA_API_URL": api_url,
        "DIALNEXA_CAMPAIGN_IDS": "cmp_a",
        "DIALNEXA_LISTEN_ADDRESS": "127.0.0.1:0",
        "DIALNEXA_WEB_CONFIG_FILE": str(config),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "content",
    [
        {"basic_auth_users": {"alice": ALICE_PASSWORD}},
        {"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}},
        {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}, "x": 1},
    ],
)
async def test_cli_refuses_a_bad_web_config_in_one_line(pki: Pki, content: dict[str, Any]) -> None:
    """An unusable web config at start-up: non-zero exit, one stderr line naming the setting."""
    config = write_config(pki.directory / "web.yml", content)
    process = await spawn_exporter(_cli_env(config, "http://127.0.0.1:9/v1"))
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode != 0
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, stderr
    assert SETTING in lines[0]
    assert "Traceback" not in lines[0]
    assert ALICE_PASSWORD not in (stdout + stderr).decode()


@pytest.mark.slow
async def test_cli_serves_https_with_the_web_config(pki: Pki, start_simulator: StartSim) -> None:
    """The CLI listens with TLS, says https in its log line, and enforces basic auth."""
    sim = await start_simulator([campaign("cmp_a")])
    config = write_config(
        pki.directory / "web.yml",
        {"tls_server_config": tls_section(), "basic_auth_users": {"alice": ALICE_HASH}},
    )
    process = await spawn_exporter(_cli_env(config, sim.api_url), stdout=asyncio.subprocess.DEVNULL)
    try:
        base, line = await read_serving_url(process)
        assert base.startswith("https://127.0.0.1:"), base
        assert f"{base}/metrics".encode() in line
        client = pki.client_context()
        connector = aiohttp.TCPConnector(ssl=client, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 401
            headers = {"Authorization": basic("alice", ALICE_PASSWORD)}
            async with session.get(f"{base}/metrics", headers=headers) as response:
                assert response.status == 200
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0
