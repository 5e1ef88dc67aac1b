"""What a web config file may hold: pydantic models of the exporter-toolkit format.

Validation is by declaration (``extra="forbid"``, strict types), like the settings; a
ValidationError becomes one ConfigError line naming DIALNEXA_WEB_CONFIG_FILE, the file and the
key, and never quoting a value (a password hash may have been pasted where a user name belongs).
"""

from __future__ import annotations

import enum
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.config import ConfigError, env_name

SETTING = env_name("web_config_file")

# Part of the exporter-toolkit format but not implemented here: refused with a clear message
# rather than silently ignored.
NOT_SUPPORTED = frozenset(
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

# How a validator's problem text joins the dotted key it is about: "a.b <text>" for a value,
# "a.b.<text>" when the text starts with a key below it, "a.b: <text>" for an entry of a map.
_VALUE, _MEMBER, _ENTRY = "webconfig_value", "webconfig_member", "webconfig_entry"
_JOINS = {_VALUE: " ", _MEMBER: ".", _ENTRY: ": "}


def _refuse(kind: str, text: str) -> PydanticCustomError:
    # The text goes in as context, so braces in a user name cannot act as a template.
    return PydanticCustomError(kind, "{text}", {"text": text})


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


def _text(value: object) -> str:
    """A string setting's value; None (a key with no value) counts as empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _refuse(_VALUE, "must be a string")
    return value


def _mapping(value: object) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _refuse(_VALUE, "must be a mapping")
    for key in value:
        if not isinstance(key, str):
            raise _refuse(_ENTRY, f"keys must be strings, got {type(key).__name__}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class TLSServerConfig(_Section):
    """``tls_server_config``: where the certificate and key are, and the handshake policy."""

    cert_file: Path
    key_file: Path
    client_auth: ClientAuth = Field(
        default=ClientAuth.NO_CLIENT_CERT, validation_alias="client_auth_type"
    )
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True

    @field_validator("cert_file", "key_file", "client_ca_file", mode="before")
    @classmethod
    def _path(cls, value: object, info: ValidationInfo) -> Path | None:
        text = _text(value)
        if not text:
            if info.field_name == "client_ca_file":
                return None
            raise _refuse(_VALUE, "is required")
        base = info.context.get("base", Path()) if isinstance(info.context, dict) else Path()
        return Path(base) / Path(text).expanduser()

    @field_validator("client_auth", mode="before")
    @classmethod
    def _client_auth(cls, value: object) -> ClientAuth:
        name = _text(value)
        if name not in _CLIENT_AUTH_NAMES:
            choices = ", ".join(item.value for item in ClientAuth)
            raise _refuse(_VALUE, f"{name!r} is not one of {choices}")
        return _CLIENT_AUTH_NAMES[name]

    @field_validator("min_version", "max_version", mode="before")
    @classmethod
    def _version(cls, value: object, info: ValidationInfo) -> ssl.TLSVersion:
        name = _text(value)
        if not name:
            default = cls.model_fields[str(info.field_name)].default
            assert isinstance(default, ssl.TLSVersion)
            return default
        if name not in _TLS_VERSIONS:
            raise _refuse(_VALUE, f"{name!r} is not one of {', '.join(_TLS_VERSIONS)}")
        return _TLS_VERSIONS[name]

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if self.client_ca_file is not None and self.client_auth is ClientAuth.NO_CLIENT_CERT:
            raise _refuse(_MEMBER, "client_ca_file is set but client_auth_type is NoClientCert")
        if self.client_ca_file is None and self.client_auth.verify_mode is not ssl.CERT_NONE:
            raise _refuse(
                _MEMBER, f"client_auth_type {self.client_auth.value} needs client_ca_file"
            )
        if self.min_version > self.max_version:
            raise _refuse(_MEMBER, "min_version is above max_version")
        return self

    @property
    def files(self) -> tuple[tuple[str, Path], ...]:
        """(key name, path) of every file this configuration reads."""
        named = [("cert_file", self.cert_file), ("key_file", self.key_file)]
        if self.client_ca_file is not None:
            named.append(("client_ca_file", self.client_ca_file))
        return tuple(named)


class HTTPServerConfig(_Section):
    """``http_server_config``: response headers; ``http2`` is accepted and ignored."""

    headers: Mapping[str, str] = Field(default_factory=dict)
    http2: bool = True

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: object) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, text in _mapping(value).items():
            if name not in _HEADERS:
                raise _refuse(_ENTRY, f"{name} can not be configured")
            if text is None or text == "":
                continue  # the toolkit's "unset if blank"
            if not isinstance(text, str) or any(ch in text for ch in "\r\n\0"):
                raise _refuse(_MEMBER, f"{name} must be a one-line string")
            allowed = _HEADERS[name]
            if allowed is not None and text not in allowed:
                raise _refuse(_MEMBER, f"{name} must be one of {', '.join(sorted(allowed))}")
            headers[name] = text
        return headers


def _bcrypt_hash(name: str, hashed: object) -> bytes:
    # Never echo the value: it may be a plain password pasted by mistake.
    encoded = hashed.encode("utf-8") if isinstance(hashed, str) else b""
    match = _BCRYPT_HASH.fullmatch(encoded)
    if match is None or not 4 <= int(match.group(1)) <= 31:
        raise _refuse(_ENTRY, f"the password of {name!r} is not a bcrypt hash")
    return encoded


class WebConfig(_Section):
    """A parsed web config file; ``tls`` None means plain HTTP, no users means no basic auth."""

    tls: TLSServerConfig | None = Field(default=None, validation_alias="tls_server_config")
    http: HTTPServerConfig = Field(
        default_factory=HTTPServerConfig, validation_alias="http_server_config"
    )
    users: Mapping[str, bytes] = Field(
        default_factory=dict, validation_alias="basic_auth_users", repr=False
    )

    @field_validator("tls", mode="before")
    @classmethod
    def _tls(cls, value: object) -> object:
        return None if value is None or value == {} else value  # an empty section: plain HTTP

    @field_validator("http", mode="before")
    @classmethod
    def _http(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: object) -> dict[str, bytes]:
        users: dict[str, bytes] = {}
        for name, hashed in _mapping(value).items():
            if not name or ":" in name:
                raise _refuse(_ENTRY, f"user name {name!r} is empty or has a ':'")
            users[name] = _bcrypt_hash(name, hashed)
        return users

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers to add to every answer."""
        return self.http.headers


def problem(path: Path, text: str) -> ConfigError:
    """A ConfigError about the web config file at ``path``."""
    return ConfigError(SETTING, f"{path}: {text}")


_KEY_PROBLEMS = frozenset({"extra_forbidden", "invalid_key"})
_TYPE_PROBLEMS = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
}


def _describe(error: Mapping[str, Any]) -> str:
    """One validation error as the file's key and what is wrong with it."""
    loc = tuple(str(part) for part in error.get("loc", ()))
    where = ".".join(loc) or "the file"
    kind = str(error.get("type"))
    if kind == "extra_forbidden":
        if loc and loc[-1] in NOT_SUPPORTED:
            return f"{where} is not supported by dialnexa-exporter"
        return f"unknown key {where}"
    if kind == "invalid_key":
        return f"{'.'.join(loc[:-1]) or 'the file'}: keys must be strings"
    if kind in _TYPE_PROBLEMS:
        return f"{where} {_TYPE_PROBLEMS[kind]}"
    message = str(error.get("msg", "is invalid"))
    return f"{where}{_JOINS.get(kind, ': ')}{message}"


class _AliasError(yaml.YAMLError):
    """The file uses a YAML alias, at 0-based ``line``."""

    def __init__(self, line: int) -> None:
        super().__init__(f"alias at line {line + 1}")
        self.line = line


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases: a few lines of nested anchors and aliases expand to
    gigabytes ("billion laughs"), and a web config has no use for them."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """The next node; an alias is an error."""
        if self.check_event(yaml.AliasEvent):
            # types-PyYAML leaves peek_event untyped; it returns the AliasEvent just checked.
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _AliasError(int(getattr(event.start_mark, "line", 0)))
        return super().compose_node(parent, index)


def parse_web_config(text: str, path: Path) -> WebConfig:
    """Validate the YAML ``text`` of the file at ``path``; raise ConfigError on any problem."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a safe loader)
    except _AliasError as exc:
        raise problem(path, f"YAML aliases are not allowed (line {exc.line + 1})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise problem(path, f"not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise problem(path, "the file must be a mapping")
    try:
        return WebConfig.model_validate(data, context={"base": path.parent})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        # A misspelt or unsupported key explains the rest (a required key seems missing).
        first = min(errors, key=lambda error: error["type"] not in _KEY_PROBLEMS)
        raise problem(path, _describe(first)) from None
