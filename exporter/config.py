"""Settings: environment, command-line flags and a YAML file, validated into one frozen object."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from exporter.calling_window import ALWAYS, check_calling_window

ENV_PREFIX = "DIALNEXA_"
DEFAULT_API_URL = "https://api.dialnexa.com/v1"
DEFAULT_PORT = 10027
CAMPAIGN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_POD_ORDINAL = re.compile(r"-(\d+)$")
_TELEMETRY_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,127}")
_RESERVED_PATHS = frozenset({"/healthz", "/readyz"})

# The YAML file names the campaign list `campaigns`; every other key is a setting name.
_YAML_ALIASES = {"campaigns": "campaign_ids"}

# Settings a release removed, and what to do instead: set anywhere, each is a configuration error
# (a silently ignored setting would leave its user believing it still applies).
REMOVED_SETTINGS = {
    "http_client": "was removed: the exporter always uses aiohttp's client; unset it",
}
# Which dialnexa_campaign_status series a campaign has: all seven (the current one 1, the others
# 0) or only the current one (exporter.exposition.metrics.campaign_families).
StatusSeries = Literal["all", "current"]

_SECRET_FIELDS = frozenset({"api_key"})


# A configuration file larger than this is refused unread, and a campaign list longer than
# this is refused: one exporter polls thousands of campaigns (shard beyond that), and parsing a
# runaway file would hold the process's memory and CPU for tens of seconds.
MAX_CONFIG_FILE_BYTES = 8 * 1024 * 1024
MAX_CAMPAIGNS = 100_000
# Longest problem text of a configuration error: a bad value is quoted, never at full length.
MAX_PROBLEM_CHARS = 300


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConfigError(Exception):
    """A setting has a bad value; the message names the setting and never carries a secret."""

    def __init__(self, setting: str, problem: str) -> None:
        problem = shorten(problem, MAX_PROBLEM_CHARS)
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def env_name(field: str) -> str:
    """Environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def parse_campaign_ids(value: object) -> tuple[str, ...]:
    """Accept a comma-separated string, a JSON list in a string, or a list; validate every id."""
    items: list[object]
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON list ({exc.msg})") from None
            if not isinstance(decoded, list):
                raise ValueError("expected a JSON list of ids")
            items = list(decoded)
        else:
            items = [part.strip() for part in text.split(",")]
            items = [part for part in items if part != ""]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("expected a list of campaign ids")
    if len(items) > MAX_CAMPAIGNS:
        raise ValueError(f"{len(items)} campaign ids; at most {MAX_CAMPAIGNS} (shard beyond that)")
    seen: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str) or not CAMPAIGN_ID_PATTERN.fullmatch(item):
            shown = shorten(item, 70) if isinstance(item, str) else type(item).__name__
            raise ValueError(f"invalid campaign id {shown!r}: use 1-64 letters, digits, '_' or '-'")
        seen[item] = None
    return tuple(seen)


def parse_listen_address(value: str) -> tuple[str | None, int]:
    """Split ``host:port`` (``:port`` = all interfaces, ``[v6]:port`` for IPv6)."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError("expected host:port or :port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("port must be a number from 0 to 65535")
    return (host or None), int(port_text)


class Settings(BaseSettings):
    """Every setting of the exporter, frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
        hide_input_in_errors=True,
        # A variable set to "" counts as unset (templates often render absent values so): an
        # empty DIALNEXA_CAMPAIGN_IDS must not hide the configuration file's campaigns.
        env_ignore_empty=True,
    )

    # The descriptions are the command line's help: `--help` and the flags are built from them.
    api_key: SecretStr | None = Field(
        default=None, description="API key, sent as 'Authorization: Bearer ...'; secret"
    )
    api_key_file: Path | None = Field(
        default=None, description="file holding the API key (Kubernetes secret mount)"
    )
    api_url: str = Field(default=DEFAULT_API_URL, description="API base URL, http(s) only")
    campaign_ids: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="campaign ids, comma-separated (a JSON list works too)"
    )
    config_file: Path | None = Field(
        default=None, description="YAML file with campaigns: [ids] and other settings; reloaded"
    )
    poll_interval_seconds: float = Field(
        default=30.0, gt=0, description="how often each campaign is fetched"
    )
    terminal_poll_interval_seconds: float = Field(
        default=600.0, gt=0, description="how often completed/cancelled ones are"
    )
    request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="per request, whole request; enforced within a tenth of it (at most 1 s late)",
    )
    max_concurrency: int = Field(
        default=10, ge=1, le=1000, description="requests in flight at once"
    )
    max_requests_per_second: float | None = Field(
        default=None, gt=0, description="request rate cap (token bucket); unset = none"
    )
    stale_after_seconds: float = Field(
        default=300.0, gt=0, description="drop a campaign's data after this without success"
    )
    stall_after_seconds: float = Field(
        default=900.0, gt=0, le=604800, description="stalled: dialling this long without a call"
    )
    calling_window: Annotated[str, AfterValidator(check_calling_window)] = Field(
        default=ALWAYS, description="when campaigns call: always, or 'Mon-Fri 09:00-20:00 UTC'"
    )
    listen_address: str = Field(
        default=f":{DEFAULT_PORT}", description="host:port for the HTTP server"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning, error"
    )
    log_format: Literal["text", "logfmt", "json"] = Field(
        default="text", description="text, logfmt (key=value), or json (one object per line)"
    )
    web_config_file: Path | None = Field(
        default=None, description="TLS and basic auth for /metrics (exporter-toolkit format)"
    )
    shard_count: int = Field(
        default=1, ge=1, le=10000, description="split the campaign list over this many exporters"
    )
    shard_index: int | None = Field(
        default=None, ge=0, description="this exporter's shard, 0-based"
    )
    pod_name: str | None = Field(
        default=None, description="StatefulSet pod name; its -<ordinal> is the shard index"
    )
    telemetry_path: str = Field(default="/metrics", description="path of the metrics endpoint")
    api_budget_pacing: bool = Field(
        default=True, description="stretch polling so the API's rate-limit budget lasts"
    )
    api_budget_share: float = Field(
        default=0.5, gt=0, le=1, description="most of the remaining budget polling may spend"
    )
    api_budget_reserve: float = Field(
        default=0.1, ge=0, lt=1, description="share of the limit never spent (for other clients)"
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto", description="auto (uvloop where installed), uvloop or asyncio"
    )
    status_series: StatusSeries = Field(
        default="all",
        description="status series per campaign: all (7, the current one 1) or current (just it)",
    )
    # The HTTP server's defences against floods of idle or slow clients (docs/security.md).
    max_connections: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="open HTTP connections at most (TLS ones ~30 KiB each); oldest idle shed",
    )
    tls_handshake_timeout_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="a TLS handshake must end within this"
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a request's headers must arrive within this (of connecting or 1st byte)",
    )
    http_idle_timeout_seconds: float = Field(
        default=120.0, gt=0, le=86400, description="a kept-alive connection may idle this long"
    )
    http_response_timeout_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="answering one request may take this long"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) win over the environment, which wins over the YAML file; no dotenv."""
        return (init_settings, env_settings, *cls._file_sources(settings_cls))

    @classmethod
    def _file_sources(
        cls, settings_cls: type[BaseSettings]
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return ()

    @field_validator("log_level", "log_format", "event_loop", "status_series", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("campaign_ids", mode="before")
    @classmethod
    def _campaign_ids(cls, value: object) -> tuple[str, ...]:
        return parse_campaign_ids(value)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use DIALNEXA_API_KEY")
        return value.strip().rstrip("/")

    @field_validator("listen_address")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("telemetry_path")
    @classmethod
    def _telemetry_path(cls, value: str) -> str:
        if not _TELEMETRY_PATH.fullmatch(value) or value in _RESERVED_PATHS:
            raise ValueError(
                "must be a path like /metrics (letters, digits, '/', '-', '_', '.'), "
                "not / or a probe path"
            )
        return value

    @field_validator("pod_name")
    @classmethod
    def _pod_name(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        index = self.effective_shard_index
        if index >= self.shard_count:
            raise ValueError(
                f"shard index {index} must be below DIALNEXA_SHARD_COUNT={self.shard_count}"
            )
        return self

    @property
    def effective_shard_index(self) -> int:
        """Shard index from DIALNEXA_SHARD_INDEX, else from a StatefulSet pod name, else 0."""
        if self.shard_index is not None:
            return self.shard_index
        if self.shard_count > 1 and self.pod_name:
            match = _POD_ORDINAL.search(self.pod_name)
            if match:
                return int(match.group(1))
        return 0

    @property
    def listen_host_port(self) -> tuple[str | None, int]:
        """(host, port) to bind; host None means every interface."""
        return parse_listen_address(self.listen_address)


def read_yaml_settings(path: Path) -> dict[str, Any]:
    """Read the YAML config file into setting names; raise ConfigError on any problem."""
    setting = env_name("config_file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        limit = MAX_CONFIG_FILE_BYTES // (1024 * 1024)
        raise ConfigError(setting, f"{path} is larger than {limit} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(setting, f"{path} is not UTF-8 text") from None
    try:
        # The safe loader, in libyaml's C version when PyYAML has it: a list of ten thousand
        # ids loads in a fraction of the time and garbage of the pure-Python one.
        safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(text, Loader=safe_loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(setting, f"{path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(setting, f"{path} must hold a mapping such as 'campaigns: [...]'")
    values: dict[str, Any] = {}
    known = set(Settings.model_fields) - {"config_file"}
    for raw_key, value in data.items():
        key = _YAML_ALIASES.get(str(raw_key), str(raw_key))
        if key in REMOVED_SETTINGS:
            raise ConfigError(setting, f"{path}: {raw_key!r} {REMOVED_SETTINGS[key]}")
        if key not in known:
            raise ConfigError(setting, f"{path}: unknown key {raw_key!r}")
        values[key] = value
    return values


def _error_setting(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    return env_name(field) if field in Settings.model_fields else "configuration"


def _format_error(exc: ValidationError) -> ConfigError:
    first = exc.errors(include_url=False, include_input=False)[0]
    setting = _error_setting(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if setting.lower().removeprefix(ENV_PREFIX.lower()) in _SECRET_FIELDS:
        message = "invalid value"
    return ConfigError(setting, message)


def _read_key_file(path: Path) -> SecretStr:
    setting = env_name("api_key_file")
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(setting, f"{path} is not UTF-8 text") from None
    key = raw.strip()
    if not key:
        raise ConfigError(setting, f"{path} is empty")
    return SecretStr(key)


def _validate_key(key: SecretStr, setting: str) -> None:
    value = key.get_secret_value()
    if not value.strip():
        raise ConfigError(setting, "is empty")
    if any(ch in value for ch in "\r\n\0") or not value.isprintable():
        raise ConfigError(setting, "contains control characters")


def _build(flags: Mapping[str, Any], yaml_values: Mapping[str, Any]) -> Settings:
    """Flags > environment > YAML file > defaults."""
    yaml_copy = dict(yaml_values)

    class _WithYaml(Settings):
        @classmethod
        def _file_sources(
            cls, settings_cls: type[BaseSettings]
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (InitSettingsSource(settings_cls, yaml_copy),)

    try:
        built = _WithYaml(**flags)
    except ValidationError as exc:
        raise _format_error(exc) from None
    except (ValueError, TypeError) as exc:  # pydantic-settings parse errors before validation
        raise ConfigError("configuration", str(exc).splitlines()[0]) from None
    return Settings.model_construct(**dict(built))


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    require_api_key: bool = True,
    require_campaigns: bool = True,
) -> Settings:
    """Build settings from flags, the environment and the YAML file, or raise ConfigError."""
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    for field, problem in REMOVED_SETTINGS.items():
        if os.environ.get(env_name(field), "").strip():
            raise ConfigError(env_name(field), problem)
    first = _build(given, {})
    yaml_values: dict[str, Any] = {}
    if first.config_file is not None:
        yaml_values = read_yaml_settings(first.config_file)
    settings = _build(given, yaml_values) if yaml_values else first

    updates: dict[str, Any] = {}
    if settings.api_key is not None and settings.api_key_file is not None:
        raise ConfigError(env_name("api_key_file"), "set either it or DIALNEXA_API_KEY, not both")
    if settings.api_key_file is not None:
        updates["api_key"] = _read_key_file(settings.api_key_file)
    key = updates.get("api_key", settings.api_key)
    if key is not None:
        _validate_key(key, env_name("api_key"))
    elif require_api_key:
        raise ConfigError(env_name("api_key"), "is required (or DIALNEXA_API_KEY_FILE)")
    if require_campaigns and not settings.campaign_ids:
        raise ConfigError(
            env_name("campaign_ids"),
            "no campaign ids configured (set it or 'campaigns:' in DIALNEXA_CONFIG_FILE)",
        )
    return settings.model_copy(update=updates) if updates else settings


def shard_of(campaign_id: str, shard_count: int) -> int:
    """Stable shard of a campaign id: FNV-1a 64-bit of its UTF-8 bytes, modulo the shard count."""
    digest = 0xCBF29CE484222325
    for byte in campaign_id.encode("utf-8"):
        digest ^= byte
        digest = (digest * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return digest % shard_count


def campaigns_for_shard(settings: Settings) -> tuple[str, ...]:
    """The campaign ids this shard polls, in configured order."""
    if settings.shard_count == 1:
        return settings.campaign_ids
    index = settings.effective_shard_index
    return tuple(c for c in settings.campaign_ids if shard_of(c, settings.shard_count) == index)


def campaign_count(count: int) -> str:
    """ "1 campaign", "2 campaigns": a count of campaigns as messages say it."""
    return f"{count} campaign" if count == 1 else f"{count} campaigns"
