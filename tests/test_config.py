"""Configuration: sources, precedence, validation and the one-line errors users see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import (
    ConfigError,
    Settings,
    campaign_count,
    campaigns_for_shard,
    env_name,
    load_settings,
    shard_of,
)

KEY = "sk_live_config_test_0123456789abcdef"


@pytest.fixture
def base_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A minimal valid environment."""
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a,cmp_b")
    return monkeypatch


def test_defaults_match_the_design_table(base_env: pytest.MonkeyPatch) -> None:
    """Every default is the one docs/configuration.md documents."""
    settings = load_settings()
    assert settings.api_url == "https://api.dialnexa.com/v1"
    assert settings.poll_interval_seconds == 30
    assert settings.request_timeout_seconds == 10
    assert settings.max_concurrency == 10
    assert settings.stale_after_seconds == 300
    assert settings.listen_address == ":10027"
    assert settings.listen_host_port == (None, 10027)
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert settings.terminal_poll_interval_seconds == 600
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == KEY


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cmp_a,cmp_b", ("cmp_a", "cmp_b")),
        (" cmp_a , cmp_b ,", ("cmp_a", "cmp_b")),
        ('["cmp_a", "cmp-b"]', ("cmp_a", "cmp-b")),
        ("cmp_a,cmp_a,cmp_b", ("cmp_a", "cmp_b")),
    ],
)
def test_campaign_ids_accept_comma_and_json_lists(
    base_env: pytest.MonkeyPatch, raw: str, expected: tuple[str, ...]
) -> None:
    """Comma-separated and JSON-list forms give the same ordered, de-duplicated ids."""
    base_env.setenv("DIALNEXA_CAMPAIGN_IDS", raw)
    assert load_settings().campaign_ids == expected


@pytest.mark.parametrize("bad", ["../x", "a/b", "cmp?x", "a%2Fb", "x" * 65, "a b", '["a", 3]'])
def test_path_changing_campaign_ids_are_rejected(base_env: pytest.MonkeyPatch, bad: str) -> None:
    """An id that could alter the request path is a configuration error naming the variable."""
    base_env.setenv("DIALNEXA_CAMPAIGN_IDS", bad)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "DIALNEXA_CAMPAIGN_IDS"


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("DIALNEXA_POLL_INTERVAL_SECONDS", "0"),
        ("DIALNEXA_POLL_INTERVAL_SECONDS", "-5"),
        ("DIALNEXA_POLL_INTERVAL_SECONDS", "soon"),
        ("DIALNEXA_REQUEST_TIMEOUT_SECONDS", "0"),
        ("DIALNEXA_MAX_CONCURRENCY", "0"),
        ("DIALNEXA_MAX_CONCURRENCY", "2.5"),
        ("DIALNEXA_STALE_AFTER_SECONDS", "-1"),
        ("DIALNEXA_API_URL", "ftp://api.dialnexa.com/v1"),
        ("DIALNEXA_API_URL", "not a url"),
        ("DIALNEXA_API_URL", "https://user:pw@api.dialnexa.com/v1"),
        ("DIALNEXA_LISTEN_ADDRESS", "10027"),
        ("DIALNEXA_LISTEN_ADDRESS", ":99999"),
        ("DIALNEXA_LOG_LEVEL", "loud"),
        ("DIALNEXA_LOG_FORMAT", "xml"),
        ("DIALNEXA_SHARD_COUNT", "0"),
        ("DIALNEXA_STATUS_SERIES", "sparse"),
    ],
)
def test_bad_values_name_their_variable(
    base_env: pytest.MonkeyPatch, variable: str, bad: str
) -> None:
    """Each invalid value raises ConfigError naming exactly that variable, in one line."""
    base_env.setenv(variable, bad)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == variable
    assert "\n" not in str(info.value)


def test_missing_key_and_campaigns_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, or no campaign at all, is a configuration error."""
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    with pytest.raises(ConfigError, match="DIALNEXA_API_KEY"):
        load_settings()
    monkeypatch.delenv("DIALNEXA_CAMPAIGN_IDS")
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    with pytest.raises(ConfigError, match="DIALNEXA_CAMPAIGN_IDS"):
        load_settings()


def test_key_file_is_read_and_stripped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DIALNEXA_API_KEY_FILE supplies the key, surrounding whitespace removed."""
    key_file = tmp_path / "api-key"
    key_file.write_text(f"  {KEY}\n\n")
    monkeypatch.setenv("DIALNEXA_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    settings = load_settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == KEY


@pytest.mark.parametrize("content", [None, "", "   \n"])
def test_unusable_key_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None
) -> None:
    """A missing or empty key file names DIALNEXA_API_KEY_FILE."""
    key_file = tmp_path / "api-key"
    if content is not None:
        key_file.write_text(content)
    monkeypatch.setenv("DIALNEXA_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "DIALNEXA_API_KEY_FILE"


def test_key_and_key_file_together_are_refused(
    base_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two sources for the key are ambiguous, so refused."""
    key_file = tmp_path / "k"
    key_file.write_text("other")
    base_env.setenv("DIALNEXA_API_KEY_FILE", str(key_file))
    with pytest.raises(ConfigError, match="not both"):
        load_settings()


def test_yaml_file_sets_campaigns_and_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The YAML file provides campaigns and any setting; env beats it, flags beat env."""
    config = tmp_path / "config.yaml"
    config.write_text("campaigns: [cmp_y1, cmp_y2]\npoll_interval_seconds: 7\nmax_concurrency: 3\n")
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    monkeypatch.setenv("DIALNEXA_CONFIG_FILE", str(config))
    settings = load_settings()
    assert settings.campaign_ids == ("cmp_y1", "cmp_y2")
    assert settings.poll_interval_seconds == 7
    monkeypatch.setenv("DIALNEXA_MAX_CONCURRENCY", "4")
    assert load_settings().max_concurrency == 4
    assert load_settings({"max_concurrency": "5"}).max_concurrency == 5


@pytest.mark.parametrize("variable", ["DIALNEXA_CAMPAIGN_IDS", "DIALNEXA_MAX_CONCURRENCY"])
def test_an_empty_variable_counts_as_unset_beside_the_yaml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    """DIALNEXA_CAMPAIGN_IDS="" (or any variable set empty) leaves the file's value in force."""
    config = tmp_path / "config.yaml"
    config.write_text("campaigns: [cmp_y1, cmp_y2]\nmax_concurrency: 3\n")
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    monkeypatch.setenv("DIALNEXA_CONFIG_FILE", str(config))
    monkeypatch.setenv(variable, "")
    settings = load_settings()
    assert settings.campaign_ids == ("cmp_y1", "cmp_y2")
    assert settings.max_concurrency == 3


def test_an_empty_campaign_variable_alone_is_still_no_campaigns(
    base_env: pytest.MonkeyPatch,
) -> None:
    """Without a file, an empty DIALNEXA_CAMPAIGN_IDS is the 'no campaign ids' error, named."""
    base_env.setenv("DIALNEXA_CAMPAIGN_IDS", "")
    with pytest.raises(ConfigError, match="no campaign ids configured") as info:
        load_settings()
    assert info.value.setting == "DIALNEXA_CAMPAIGN_IDS"


def test_campaign_counts_are_singular_for_one() -> None:
    """Messages say "1 campaign" and "0 campaigns", "2 campaigns"."""
    assert [campaign_count(n) for n in (0, 1, 2)] == ["0 campaigns", "1 campaign", "2 campaigns"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("campaigns: [a\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
        ("campaigns: [cmp_a]\npoll_interval: 5\n", "unknown key"),
        ("campaigns: ['../etc']\n", "invalid campaign id"),
    ],
)
def test_bad_yaml_files_are_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, fragment: str
) -> None:
    """Unreadable, malformed or unknown YAML content is reported as one clear line."""
    config = tmp_path / "config.yaml"
    config.write_text(content)
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    monkeypatch.setenv("DIALNEXA_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match=fragment) as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_secret_never_in_errors_or_repr(base_env: pytest.MonkeyPatch) -> None:
    """The key stays out of repr() of settings and out of validation errors about it."""
    settings = load_settings()
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    base_env.setenv("DIALNEXA_API_KEY", "bad\nkey-" + KEY)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert KEY[:8] not in str(info.value)
    assert KEY[:8] not in repr(info.value)


def test_shard_index_from_statefulset_pod_name(base_env: pytest.MonkeyPatch) -> None:
    """The trailing ordinal of a pod name is the shard index; an explicit index wins."""
    base_env.setenv("DIALNEXA_SHARD_COUNT", "3")
    base_env.setenv("DIALNEXA_POD_NAME", "dialnexa-exporter-2")
    assert load_settings().effective_shard_index == 2
    base_env.setenv("DIALNEXA_SHARD_INDEX", "1")
    assert load_settings().effective_shard_index == 1
    base_env.setenv("DIALNEXA_SHARD_INDEX", "3")
    with pytest.raises(ConfigError, match="shard index 3"):
        load_settings()


def test_shards_partition_the_campaign_list_exactly() -> None:
    """Every id lands on exactly one shard, and growing the list moves no existing id."""
    ids = tuple(f"cmp_{n:05d}" for n in range(2000))
    for count in (1, 2, 3, 7):
        shards = [
            set(
                campaigns_for_shard(
                    Settings.model_construct(
                        campaign_ids=ids, shard_count=count, shard_index=index, pod_name=None
                    )
                )
            )
            for index in range(count)
        ]
        assert sum(len(s) for s in shards) == len(ids)
        assert set().union(*shards) == set(ids)
        if count > 1:
            assert min(len(s) for s in shards) > len(ids) / count * 0.8
    before = {cid: shard_of(cid, 4) for cid in ids[:1000]}
    assert before == {cid: shard_of(cid, 4) for cid in ids[:1000]}
    assert shard_of("cmp_00000", 4) == shard_of("cmp_00000", 4)


@pytest.mark.slow
def test_every_setting_has_an_env_name_in_help() -> None:
    """`--help` lists the environment variable of every setting."""
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for field in Settings.model_fields:
        assert env_name(field) in result.stdout, field


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"DIALNEXA_CAMPAIGN_IDS": "cmp_a", "DIALNEXA_POLL_INTERVAL_SECONDS": "-1"},
            "POLL_INTERVAL",
        ),
        ({"DIALNEXA_CAMPAIGN_IDS": "../x"}, "DIALNEXA_CAMPAIGN_IDS"),
        ({}, "DIALNEXA_CAMPAIGN_IDS"),
    ],
)
def test_cli_config_error_is_one_line_without_traceback_or_key(
    env: dict[str, str], expected: str
) -> None:
    """A bad setting exits non-zero with one stderr line naming it, no traceback, no key."""
    full_env = {"PATH": "/usr/bin:/bin", "DIALNEXA_API_KEY": KEY, **env}
    result = subprocess.run(
        [sys.executable, "-m", "exporter"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert KEY[:8] not in result.stderr + result.stdout


def test_status_series_from_env_flag_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DIALNEXA_STATUS_SERIES is `all` by default and `current` from the file, the environment
    (any case) or a flag, in the usual precedence."""
    monkeypatch.setenv("DIALNEXA_API_KEY", KEY)
    monkeypatch.setenv("DIALNEXA_CAMPAIGN_IDS", "cmp_a")
    assert load_settings().status_series == "all"
    config = tmp_path / "config.yaml"
    config.write_text("status_series: current\n")
    monkeypatch.setenv("DIALNEXA_CONFIG_FILE", str(config))
    assert load_settings().status_series == "current"
    monkeypatch.setenv("DIALNEXA_STATUS_SERIES", "ALL")
    assert load_settings().status_series == "all"
    assert load_settings({"status_series": "current"}).status_series == "current"


@pytest.mark.parametrize("value", ["builtin", "aiohttp"])
def test_the_removed_http_client_setting_is_a_configuration_error(
    base_env: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """DIALNEXA_HTTP_CLIENT (any value) or `http_client` in the file stops start-up with an
    error naming it and saying what to do; an empty variable counts as unset."""
    base_env.setenv("DIALNEXA_HTTP_CLIENT", value)
    with pytest.raises(ConfigError, match=r"DIALNEXA_HTTP_CLIENT: was removed.*unset it"):
        load_settings()
    base_env.setenv("DIALNEXA_HTTP_CLIENT", " ")
    assert load_settings().campaign_ids == ("cmp_a", "cmp_b")
    config = tmp_path / "config.yaml"
    config.write_text(f"http_client: {value}\n")
    base_env.setenv("DIALNEXA_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="'http_client' was removed"):
        load_settings()
