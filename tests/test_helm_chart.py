"""Helm chart: rendered by Helm's own engine (helm-python-sdk) and validated strictly.

Every scenario is the chart's defaults or one of its ``ci/*-values.yaml`` files. Built-in kinds are
validated with kubernetes-validate in strict mode (unknown fields rejected) against two Kubernetes
versions; ServiceMonitor and PrometheusRule, which it has no schema for, against a hand-written
subset of the Prometheus Operator CRD schemas that is just as strict about unknown fields;
AlertmanagerConfig through the operator's CRD models (cloudcoil), whose round trip must give the
object back unchanged (the models drop unknown fields silently).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

import exporter
from exporter.config import Settings, env_name, load_settings, read_yaml_settings
from tests.helpers import (
    DIALNEXA_MATCHER,
    RECEIVER_BY_SEVERITY,
    ROOT,
    alert_labels,
    alert_rules,
    dialnexa_route,
    load_yaml,
    load_yaml_all,
    routed_receivers,
    run_amtool,
)

CHART_DIR = ROOT / "helm" / "dialnexa-exporter"
CI_VALUES = sorted(CHART_DIR.glob("ci/*-values.yaml"))
RULES_FILE = CHART_DIR / "files" / "dialnexa-exporter.rules.yml"
CHART_DASHBOARD = CHART_DIR / "files" / "dashboards" / "dialnexa-campaigns.json"
CANONICAL_DASHBOARD = ROOT / "grafana" / "dialnexa-campaigns.json"
DASHBOARD_KEY = "dialnexa-campaigns.json"

# Oldest and newest minor versions the chart is checked against (kubeVersion is >=1.25).
KUBERNETES_VERSIONS = ("1.29", "1.33")
RELEASE = "dnx"
NAMESPACE = "telemetry"
FAKE_KEY = "dnxFAKE-7f3a9c51e0-not-a-real-key"
KEY_FILE = "/etc/dialnexa-exporter/secret/api-key"
# The proxy variables the exporter reads (docs/configuration.md, "Egress proxies").
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
TMP_MOUNT = "/tmp"  # noqa: S108 - the emptyDir mount path the chart sets, no file is made
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
ALERTMANAGER_FILE = CHART_DIR / "files" / "alertmanager.yml"

Manifest = dict[str, Any]


# --- rendering helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    """The chart loaded once per module through Helm's Go SDK."""
    helm.disable_logging()
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render_files(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    """Render like ``helm install`` would: template path to rendered text (NOTES.txt included)."""
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[Manifest]:
    """Render and parse every manifest, in template order, skipping empty documents."""
    docs: list[Manifest] = []
    for path, text in sorted(render_files(chart, values).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        docs.extend(doc for doc in load_yaml_all(text) if doc)
    return docs


def scenario_values(name: str) -> dict[str, Any]:
    """Values of a scenario: the chart defaults, or a ci/ file parsed as ``helm -f`` would."""
    if name == "default":
        return {}
    return helm.values_from_yaml((CHART_DIR / "ci" / f"{name}-values.yaml").read_text())


SCENARIOS = ["default", *(path.name.removesuffix("-values.yaml") for path in CI_VALUES)]


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    """Every rendered object of ``kind``."""
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    """The single rendered object of ``kind``; fails if there are none or several."""
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def workload(docs: list[Manifest]) -> Manifest:
    """The single Deployment or StatefulSet."""
    found = [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    assert len(found) == 1, f"expected one workload, got {[d['kind'] for d in found]}"
    return found[0]


def pod_spec(docs: list[Manifest]) -> dict[str, Any]:
    """Pod spec of the workload."""
    spec: dict[str, Any] = workload(docs)["spec"]["template"]["spec"]
    return spec


def exporter_container(docs: list[Manifest]) -> dict[str, Any]:
    """The exporter container of the workload."""
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["exporter"]
    container: dict[str, Any] = containers[0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Environment entries by name (a duplicate name would hide one, so reject it)."""
    names = [entry["name"] for entry in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {entry["name"]: entry for entry in container.get("env", [])}


def config_file(docs: list[Manifest]) -> dict[str, Any]:
    """The exporter configuration file carried by the chart's ConfigMap."""
    config_maps = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d.get("data", {})]
    assert len(config_maps) == 1
    parsed: dict[str, Any] = load_yaml(config_maps[0]["data"]["config.yaml"])
    return parsed


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """True when every ``matchLabels`` pair is among ``labels``."""
    return all(labels.get(key) == value for key, value in selector.items())


# --- strict structure of the Prometheus Operator custom resources ------------------------------

# A subset of the monitoring.coreos.com/v1 CRD schemas: the fields this chart may emit, typed as the
# CRDs type them, with unknown fields rejected so that a typo fails here as it would in the API.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
_RELABEL = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "sourceLabels": {
                "type": "array",
                "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
            },
            "separator": {"type": "string"},
            "targetLabel": {"type": "string"},
            "regex": {"type": "string"},
            "modulus": {"type": "integer"},
            "replacement": {"type": "string"},
            "action": {
                "enum": [
                    *(
                        form
                        for action in (
                            "replace",
                            "keep",
                            "drop",
                            "hashmod",
                            "labelmap",
                            "labeldrop",
                            "labelkeep",
                            "lowercase",
                            "uppercase",
                            "keepequal",
                            "dropequal",
                        )
                        for form in (action, action.capitalize())
                    ),
                    "HashMod",
                    "LabelMap",
                    "LabelDrop",
                    "LabelKeep",
                    "KeepEqual",
                    "DropEqual",
                ]
            },
        },
    },
}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string", "minLength": 1},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": _LABEL_SELECTOR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "tlsConfig": {"type": "object"},
                            "basicAuth": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "username": {"type": "object"},
                                    "password": {"type": "object"},
                                },
                            },
                            "relabelings": _RELABEL,
                            "metricRelabelings": _RELABEL,
                        },
                    },
                },
            },
        },
    },
}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "minLength": 1},
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "limit": {"type": "integer"},
                            "query_offset": _DURATION,
                            "labels": _STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {"type": "array", "items": _RULE},
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_SCHEMAS = {
    "ServiceMonitor": SERVICE_MONITOR_SCHEMA,
    "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
}


def operator_model_round_trip(doc: Manifest) -> Manifest:
    """An AlertmanagerConfig as the operator's CRD model reads it and writes it back."""
    # Imported here: the models take seconds of CPU to import, which every pytest worker would
    # pay at collection, whether it runs a chart test or not.
    from cloudcoil.models.prometheus_operator.v1alpha1 import AlertmanagerConfig

    dumped: Manifest = AlertmanagerConfig.model_validate(doc).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    return dumped


def validate_manifest(doc: Manifest, version: str) -> None:
    """Validate one object strictly: Kubernetes' schemas, the CRD subset above or CRD models."""
    if doc["kind"] == "AlertmanagerConfig":
        assert operator_model_round_trip(doc) == doc, "a field the CRD does not know"
        return
    if doc["kind"] in CUSTOM_KINDS:
        jsonschema.Draft202012Validator(CUSTOM_SCHEMAS[doc["kind"]]).validate(doc)
        if doc["kind"] == "PrometheusRule":
            names = [group["name"] for group in doc["spec"]["groups"]]
            assert len(names) == len(set(names)), f"duplicate rule group names: {names}"
        return
    kubernetes_validate.validate(doc, version, strict=True)


# --- lint, versions, validation -----------------------------------------------------------------


def test_app_version_is_the_package_version() -> None:
    """Chart.yaml's appVersion is exactly the exporter package's __version__."""
    metadata = load_yaml((CHART_DIR / "Chart.yaml").read_text())
    assert metadata["appVersion"] == exporter.__version__
    assert metadata["name"] == "dialnexa-exporter"


def test_ci_values_cover_every_required_scenario() -> None:
    """The ci/ files turn on ServiceMonitor, existingSecret, sharding, dashboard, NetworkPolicy."""
    merged = [scenario_values(name) for name in SCENARIOS if name != "default"]
    assert any(v.get("serviceMonitor", {}).get("enabled") for v in merged)
    assert any(v.get("prometheusRule", {}).get("enabled") for v in merged)
    assert any(v.get("existingSecret") for v in merged)
    assert any(v.get("sharding", {}).get("enabled") for v in merged)
    assert any(v.get("dashboard", {}).get("enabled") for v in merged)
    assert any(v.get("networkPolicy", {}).get("enabled") for v in merged)
    assert any(v.get("alertmanagerConfig", {}).get("enabled") for v in merged)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_reports_no_error_or_warning(scenario: str) -> None:
    """``helm lint --strict`` (Helm's own linter) finds no error and no warning in any scenario."""
    report = helm.lint(
        CHART_DIR, scenario_values(scenario), strict=True, namespace=NAMESPACE, quiet=False
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


def test_lint_catches_a_broken_value() -> None:
    """The lint call really checks: a value of the wrong type is reported as an error."""
    report = helm.lint(CHART_DIR, {"replicaCount": "two"}, strict=True)
    assert report["errors"]
    assert any(m["severity"] == 3 and "replicaCount" in m["error"] for m in report["messages"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_validates_strictly(chart: helm.Chart, scenario: str, version: str) -> None:
    """Every rendered object passes strict schema validation for the Kubernetes version."""
    docs = render(chart, scenario_values(scenario))
    assert docs, "nothing rendered"
    for doc in docs:
        try:
            validate_manifest(doc, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc}")
        assert doc["metadata"]["namespace"] or doc["kind"] in CUSTOM_KINDS


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The validator used above is strict: a misspelt field in a Deployment is rejected."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "readinessProbes": {}}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_default_render_creates_only_the_basics(chart: helm.Chart) -> None:
    """Defaults give Deployment, Service, ServiceAccount and ConfigMap; all else is opt-in."""
    docs = render(chart)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    assert all(doc["metadata"]["namespace"] == NAMESPACE for doc in docs)


# --- pod hardening, probes, ports ---------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_hardened_by_default(chart: helm.Chart, scenario: str) -> None:
    """Non-root numeric user, read-only root, no capabilities, no escalation, seccomp, no token."""
    docs = render(chart, scenario_values(scenario))
    spec = pod_spec(docs)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert isinstance(pod_security["runAsUser"], int)
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec.get("hostNetwork", False) is False
    assert spec.get("hostPID", False) is False
    container = spec["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"]["memory"]
    for account in by_kind(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tmp_is_a_size_limited_empty_dir(chart: helm.Chart, scenario: str) -> None:
    """With a read-only root, /tmp is a writable emptyDir with a size limit."""
    docs = render(chart, scenario_values(scenario))
    mounts = {m["mountPath"]: m["name"] for m in exporter_container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    tmp = volumes[mounts[TMP_MOUNT]]
    assert tmp["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_and_port_follow_the_contract(chart: helm.Chart, scenario: str) -> None:
    """Liveness on /healthz, readiness on /readyz, both on container port 10027 `http-metrics`."""
    docs = render(chart, scenario_values(scenario))
    container = exporter_container(docs)
    assert container["ports"] == [
        {"name": "http-metrics", "containerPort": 10027, "protocol": "TCP"}
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["port"] == "http-metrics"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["port"] == "http-metrics"
    assert env_of(container)["DIALNEXA_LISTEN_ADDRESS"]["value"] == ":10027"
    service = next(s for s in by_kind(docs, "Service") if "clusterIP" not in s["spec"])
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 10027, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    assert selector_matches(
        service["spec"]["selector"], workload(docs)["spec"]["template"]["metadata"]["labels"]
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_env_names_are_exporter_settings(chart: helm.Chart, scenario: str) -> None:
    """Every variable the chart sets is a real exporter setting or a proxy variable it reads
    (no silent typo)."""
    docs = render(chart, scenario_values(scenario))
    known = {env_name(field) for field in Settings.model_fields} | set(PROXY_VARIABLES)
    names = set(env_of(exporter_container(docs)))
    assert names <= known, names - known


def test_image_defaults_to_app_version_and_digest_pins_it(chart: helm.Chart) -> None:
    """The image tag defaults to appVersion; a digest, when given, replaces the tag."""
    default_image = exporter_container(render(chart))["image"]
    assert default_image.endswith(f":{exporter.__version__}")
    digest = "sha256:" + "a" * 64
    pinned = exporter_container(render(chart, {"image": {"digest": digest}}))["image"]
    assert pinned.endswith(f"@{digest}")
    assert f":{exporter.__version__}" not in pinned


# --- the API key --------------------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["deployment", "statefulset"])
def test_api_key_reaches_the_pod_only_as_a_mounted_file(chart: helm.Chart, sharded: bool) -> None:
    """The key is in the Secret only; the pod gets a file path, never the key as a value."""
    values = {
        "apiKey": FAKE_KEY,
        "campaigns": ["cmp_1"],
        "sharding": {"enabled": sharded},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "rolloutOnConfigChange": True,
    }
    files = render_files(chart, values)
    encoded = base64.b64encode(FAKE_KEY.encode()).decode()
    secrets: list[Manifest] = []
    for path, text in files.items():
        for doc in load_yaml_all(text) if path.endswith(".yaml") else [text]:
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                secrets.append(doc)
                continue
            shown = json.dumps(doc) if isinstance(doc, dict) else str(doc)
            assert FAKE_KEY not in shown, f"key leaked in {path}"
            assert encoded not in shown, f"base64 key leaked in {path}"
    assert len(secrets) == 1
    secret_name = secrets[0]["metadata"]["name"]
    assert base64.b64decode(secrets[0]["data"]["api-key"]).decode() == FAKE_KEY

    docs = render(chart, values)
    container = exporter_container(docs)
    env = env_of(container)
    assert env["DIALNEXA_API_KEY_FILE"] == {"name": "DIALNEXA_API_KEY_FILE", "value": KEY_FILE}
    assert "DIALNEXA_API_KEY" not in env
    assert "envFrom" not in container
    volume = next(v for v in pod_spec(docs)["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == secret_name
    assert volume["secret"]["items"] == [{"key": "api-key", "path": "api-key"}]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {
        "name": volume["name"],
        "mountPath": str(Path(KEY_FILE).parent),
        "readOnly": True,
    }


def test_existing_secret_skips_the_chart_secret(chart: helm.Chart) -> None:
    """With existingSecret the chart creates no Secret and mounts the user's key under api-key."""
    docs = render(chart, scenario_values("existing-secret"))
    assert by_kind(docs, "Secret") == []
    volume = next(v for v in pod_spec(docs)["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "dialnexa-credentials"
    assert volume["secret"]["items"] == [{"key": "token", "path": "api-key"}]
    assert env_of(exporter_container(docs))["DIALNEXA_API_KEY_FILE"]["value"] == KEY_FILE


def test_existing_secret_wins_over_an_api_key(chart: helm.Chart) -> None:
    """Setting both creates no Secret and leaks nothing: existingSecret wins, apiKey is ignored."""
    files = render_files(chart, {"apiKey": FAKE_KEY, "existingSecret": "mine"})
    assert all(FAKE_KEY not in text for text in files.values())
    assert by_kind(render(chart, {"apiKey": FAKE_KEY, "existingSecret": "mine"}), "Secret") == []


def test_no_key_configured_mounts_nothing_and_notes_warn(chart: helm.Chart) -> None:
    """Without a key the pod gets no key file and NOTES.txt says how to provide one."""
    docs = render(chart)
    assert "DIALNEXA_API_KEY_FILE" not in env_of(exporter_container(docs))
    notes = render_files(chart)[f"{CHART_DIR.name}/templates/NOTES.txt"]
    assert "no API key is configured" in notes
    assert "no campaign is configured" in notes
    configured = render_files(chart, {"existingSecret": "s", "campaigns": ["c1"]})
    assert "WARNING" not in configured[f"{CHART_DIR.name}/templates/NOTES.txt"]


# --- configuration file -------------------------------------------------------------------------


def test_config_map_is_an_exporter_config_file(chart: helm.Chart, tmp_path: Path) -> None:
    """The ConfigMap's config.yaml lists the campaigns and is accepted by the exporter's parser."""
    docs = render(chart, scenario_values("existing-secret"))
    parsed = config_file(docs)
    assert parsed["campaigns"] == ["cmp_alpha"]
    assert parsed["poll_interval_seconds"] == 15
    assert parsed["max_requests_per_second"] == 5
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(parsed))
    settings = read_yaml_settings(path)
    assert settings["campaign_ids"] == ["cmp_alpha"]


def test_status_series_reaches_the_config_file(chart: helm.Chart, tmp_path: Path) -> None:
    """config.status_series is `all` by default and `current` when set, as the exporter reads it."""
    assert config_file(render(chart, {"campaigns": ["c1"]}))["status_series"] == "all"
    parsed = config_file(
        render(chart, {"campaigns": ["c1"], "config": {"status_series": "current"}})
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(parsed))
    assert read_yaml_settings(path)["status_series"] == "current"


def test_null_settings_are_left_out_of_the_config_file(chart: helm.Chart) -> None:
    """A setting left null (max_requests_per_second by default) is omitted, so its default holds."""
    parsed = config_file(render(chart, {"campaigns": ["c1"]}))
    assert "max_requests_per_second" not in parsed
    assert parsed["api_url"] == "https://api.dialnexa.com/v1"


def test_config_map_is_mounted_as_a_directory(chart: helm.Chart) -> None:
    """No subPath: kubelet updates the file in place and the exporter reloads it."""
    docs = render(chart, {"campaigns": ["c1"]})
    container = exporter_container(docs)
    config_path = Path(env_of(container)["DIALNEXA_CONFIG_FILE"]["value"])
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    config_map = volumes[mount["name"]]["configMap"]
    assert config_map["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    assert config_map["items"] == [{"key": "config.yaml", "path": config_path.name}]


def test_checksum_annotation_rolls_pods_only_when_asked(chart: helm.Chart) -> None:
    """checksum/config appears with rolloutOnConfigChange and changes with the campaign list."""

    def annotations(values: dict[str, Any]) -> dict[str, str]:
        template = workload(render(chart, values))["spec"]["template"]
        found: dict[str, str] = template["metadata"].get("annotations", {})
        return found

    assert "checksum/config" not in annotations({"campaigns": ["c1"]})
    first = annotations({"campaigns": ["c1"], "rolloutOnConfigChange": True})["checksum/config"]
    second = annotations({"campaigns": ["c2"], "rolloutOnConfigChange": True})["checksum/config"]
    assert first != second


def test_existing_config_map_replaces_the_chart_one(chart: helm.Chart) -> None:
    """existingConfigMap: no ConfigMap rendered, the pod mounts the user's one."""
    docs = render(chart, {"existingConfigMap": "my-campaigns"})
    assert by_kind(docs, "ConfigMap") == []
    names = [v["configMap"]["name"] for v in pod_spec(docs)["volumes"] if "configMap" in v]
    assert names == ["my-campaigns"]


def test_web_config_is_a_mounted_secret(chart: helm.Chart) -> None:
    """webConfig goes to a Secret, mounted and named in DIALNEXA_WEB_CONFIG_FILE."""
    web = {"tls_server_config": {"cert_file": "/tls/tls.crt", "key_file": "/tls/tls.key"}}
    docs = render(chart, {"webConfig": web})
    secret = one(docs, "Secret")
    assert load_yaml(base64.b64decode(secret["data"]["web-config.yml"])) == web
    container = exporter_container(docs)
    path = Path(env_of(container)["DIALNEXA_WEB_CONFIG_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


# --- sharding -----------------------------------------------------------------------------------


def test_sharded_mode_runs_a_statefulset_of_shards(chart: helm.Chart) -> None:
    """StatefulSet replicas = shards = DIALNEXA_SHARD_COUNT; pod name from the downward API."""
    docs = render(chart, scenario_values("sharded"))
    assert by_kind(docs, "Deployment") == []
    statefulset = one(docs, "StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    assert replicas == scenario_values("sharded")["sharding"]["shards"] == 3
    env = env_of(exporter_container(docs))
    assert env["DIALNEXA_SHARD_COUNT"]["value"] == str(replicas)
    assert env["DIALNEXA_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "DIALNEXA_SHARD_INDEX" not in env
    headless = next(s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None")
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    assert selector_matches(
        headless["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]
    )


def test_shard_index_comes_from_the_statefulset_pod_name(chart: helm.Chart) -> None:
    """The exporter reads shard n from pod <statefulset>-<n>, for every ordinal of the set."""
    statefulset = one(render(chart, scenario_values("sharded")), "StatefulSet")
    name = statefulset["metadata"]["name"]
    shards = statefulset["spec"]["replicas"]
    for ordinal in range(shards):
        settings = Settings(shard_count=shards, pod_name=f"{name}-{ordinal}")
        assert settings.effective_shard_index == ordinal


def test_service_monitor_scrapes_each_shard_once(chart: helm.Chart) -> None:
    """In sharded mode the ServiceMonitor selects the metrics Service only, not the headless one."""
    docs = render(chart, scenario_values("sharded"))
    selector = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    matched = [
        s for s in by_kind(docs, "Service") if selector_matches(selector, s["metadata"]["labels"])
    ]
    assert len(by_kind(docs, "Service")) == 2
    assert len(matched) == 1
    assert "clusterIP" not in matched[0]["spec"]


# --- ServiceMonitor, NetworkPolicy, PodDisruptionBudget ------------------------------------------


def test_service_monitor_carries_its_settings(chart: helm.Chart) -> None:
    """interval, scrapeTimeout, labels, relabelings and metricRelabelings come from values."""
    values = scenario_values("servicemonitor")
    docs = render(chart, values)
    monitor = one(docs, "ServiceMonitor")
    wanted = values["serviceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == wanted["interval"]
    assert endpoint["scrapeTimeout"] == wanted["scrapeTimeout"]
    assert endpoint["relabelings"] == wanted["relabelings"]
    assert endpoint["metricRelabelings"] == wanted["metricRelabelings"]
    service = one(docs, "Service")
    assert selector_matches(
        monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )


def test_network_policy_opens_only_the_metrics_port(chart: helm.Chart) -> None:
    """Ingress only to http-metrics from the given peers; egress only DNS and the API port."""
    values = scenario_values("networkpolicy")
    docs = render(chart, values)
    policy = one(docs, "NetworkPolicy")
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert ingress["from"] == values["networkPolicy"]["ingressFrom"]
    egress_ports = sorted(
        (port["port"], port["protocol"])
        for rule in policy["spec"]["egress"]
        for port in rule["ports"]
    )
    # The scenario's API is reached through an egress proxy on port 3128.
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (3128, "TCP")]


def test_pod_disruption_budget_covers_the_shards(chart: helm.Chart) -> None:
    """The PDB selects the workload's pods and allows one shard down at a time."""
    docs = render(chart, scenario_values("sharded"))
    budget = one(docs, "PodDisruptionBudget")
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(budget["spec"]["selector"]["matchLabels"], pod_labels)
    assert budget["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budget["spec"]


def test_extension_points_reach_the_pod(chart: helm.Chart) -> None:
    """nodeSelector, tolerations, affinity, priority, annotations, labels, env and volumes apply."""
    values = scenario_values("networkpolicy")
    docs = render(chart, values)
    template = workload(docs)["spec"]["template"]
    spec = template["spec"]
    container = exporter_container(docs)
    assert spec["priorityClassName"] == values["priorityClassName"]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert spec["affinity"] == values["affinity"]
    assert template["metadata"]["annotations"]["example.com/owner"] == "outbound"
    assert template["metadata"]["labels"]["team"] == "outbound"
    assert env_of(container)["DIALNEXA_LOG_LEVEL"]["value"] == "debug"
    assert values["extraVolumes"][0] in spec["volumes"]
    assert values["extraVolumeMounts"][0] in container["volumeMounts"]
    resources = exporter_container(render(chart, {"resources": {"limits": {"memory": "1Gi"}}}))
    # Helm merges user values over the defaults: the limit changes, the default requests stay.
    assert resources["resources"]["limits"] == {"memory": "1Gi"}
    assert resources["resources"]["requests"]["memory"] == "64Mi"


def test_pod_labels_cannot_break_the_selector(chart: helm.Chart) -> None:
    """A podLabels entry that clashes with a selector label is overridden, never orphaning pods."""
    docs = render(chart, {"podLabels": {"app.kubernetes.io/name": "other", "team": "x"}})
    deployment = workload(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert labels["team"] == "x"


# --- PrometheusRule -----------------------------------------------------------------------------


def canonical_groups() -> list[dict[str, Any]]:
    """The groups of the canonical rule file."""
    groups: list[dict[str, Any]] = load_yaml(RULES_FILE.read_text())["groups"]
    return groups


def canonical_alerts() -> list[dict[str, Any]]:
    """Every alerting rule of the canonical file."""
    return [rule for group in canonical_groups() for rule in group["rules"] if "alert" in rule]


def rendered_rules(docs: list[Manifest]) -> dict[str, dict[str, Any]]:
    """Rendered alerting rules by name."""
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_prometheus_rule_carries_exactly_the_canonical_groups(chart: helm.Chart) -> None:
    """With no overrides, spec.groups equals the canonical rule file's groups, rule for rule."""
    docs = render(chart, {"prometheusRule": {"enabled": True}})
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == canonical_groups()
    assert canonical_alerts(), "the canonical file has no alert to check overrides with"


def test_prometheus_rule_applies_overrides_and_labels(chart: helm.Chart) -> None:
    """Per-alert for/severity/expr, alert labels and object labels apply; nothing else moves."""
    target, *others = canonical_alerts()
    values = {
        "prometheusRule": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "additionalAlertLabels": {"team": "outbound"},
            "alertOverrides": {
                target["alert"]: {"for": "42m", "severity": "page", "expr": "vector(1) > 0"}
            },
        }
    }
    docs = render(chart, values)
    rule_object = one(docs, "PrometheusRule")
    assert rule_object["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rendered = rendered_rules(docs)
    changed = rendered[target["alert"]]
    assert changed["for"] == "42m"
    assert changed["expr"] == "vector(1) > 0"
    assert changed["labels"] == {**target.get("labels", {}), "team": "outbound", "severity": "page"}
    assert changed.get("annotations") == target.get("annotations")
    for alert in others:
        expected = {**alert, "labels": {**alert.get("labels", {}), "team": "outbound"}}
        assert rendered[alert["alert"]] == expected
    recorded = [
        rule
        for group in rule_object["spec"]["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    assert recorded == [
        rule for group in canonical_groups() for rule in group["rules"] if "record" in rule
    ]


def test_prometheus_rule_can_disable_an_alert(chart: helm.Chart) -> None:
    """alertOverrides.<name>.disabled drops that alert and only that one."""
    target = canonical_alerts()[0]["alert"]
    values = {"prometheusRule": {"enabled": True, "alertOverrides": {target: {"disabled": True}}}}
    rendered = rendered_rules(render(chart, values))
    assert target not in rendered
    assert set(rendered) == {alert["alert"] for alert in canonical_alerts()} - {target}


# --- AlertmanagerConfig -------------------------------------------------------------------------

AM_VALUES = "alertmanagerconfig"  # the ci/ scenario with one receiver of each common kind


def alertmanager_config(docs: list[Manifest]) -> Manifest:
    """The one rendered AlertmanagerConfig."""
    return one(docs, "AlertmanagerConfig")


def matcher_text(matcher: dict[str, str]) -> str:
    """An AlertmanagerConfig matcher object in the canonical file's `name op "value"` form."""
    return f'{matcher["name"]}{matcher["matchType"]}"{matcher["value"]}"'


def plain_route(route: dict[str, Any]) -> dict[str, Any]:
    """An AlertmanagerConfig route back in plain Alertmanager form, recursively."""
    names = {
        "receiver": "receiver",
        "groupBy": "group_by",
        "groupWait": "group_wait",
        "groupInterval": "group_interval",
        "repeatInterval": "repeat_interval",
        "continue": "continue",
    }
    plain = {names[key]: value for key, value in route.items() if key in names}
    if "matchers" in route:
        plain["matchers"] = [matcher_text(m) for m in route["matchers"]]
    if "routes" in route:
        plain["routes"] = [plain_route(child) for child in route["routes"]]
    unknown = set(route) - set(names) - {"matchers", "routes"}
    assert not unknown, unknown
    return plain


def plain_inhibit_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """AlertmanagerConfig inhibit rules back in plain Alertmanager form."""
    return [
        {
            "source_matchers": [matcher_text(m) for m in rule["sourceMatch"]],
            "target_matchers": [matcher_text(m) for m in rule["targetMatch"]],
            "equal": rule["equal"],
        }
        for rule in rules
    ]


def as_the_operator_merges_it(doc: Manifest) -> dict[str, Any]:
    """The plain configuration the operator generates from one AlertmanagerConfig: its route
    under the root with a namespace matcher and `continue`, its receivers and inhibitions
    prefixed and scoped to its namespace (the operator's default matcher strategy).
    """
    namespace, name = doc["metadata"]["namespace"], doc["metadata"]["name"]

    def prefixed(route: dict[str, Any]) -> dict[str, Any]:
        copy = dict(route)
        if "receiver" in copy:
            copy["receiver"] = f"{namespace}/{name}/{copy['receiver']}"
        if "routes" in copy:
            copy["routes"] = [prefixed(child) for child in copy["routes"]]
        return copy

    route = prefixed(plain_route(doc["spec"]["route"]))
    route["matchers"] = [f'namespace="{namespace}"', *route.get("matchers", [])]
    route["continue"] = True
    scope = f'namespace="{namespace}"'
    return {
        "route": {"receiver": "null", "routes": [route]},
        "receivers": [
            {"name": "null"},
            *({"name": f"{namespace}/{name}/{r['name']}"} for r in doc["spec"]["receivers"]),
        ],
        "inhibit_rules": [
            {
                **rule,
                "source_matchers": [*rule["source_matchers"], scope],
                "target_matchers": [*rule["target_matchers"], scope],
            }
            for rule in plain_inhibit_rules(doc["spec"]["inhibitRules"])
        ],
    }


def test_alertmanager_config_is_off_by_default(chart: helm.Chart) -> None:
    """No AlertmanagerConfig unless asked for, even with receivers set."""
    values = {"alertmanagerConfig": {"receivers": {"pager": {"webhookConfigs": [{"url": "x"}]}}}}
    assert by_kind(render(chart, values), "AlertmanagerConfig") == []


def test_alertmanager_config_says_what_the_canonical_file_says(chart: helm.Chart) -> None:
    """Route subtree and inhibit rules, translated back, equal the canonical file's exactly."""
    canonical = load_yaml(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    doc = alertmanager_config(render(chart, {"alertmanagerConfig": {"enabled": True}}))
    assert doc["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert doc["metadata"]["namespace"] == NAMESPACE
    assert plain_route(doc["spec"]["route"]) == dialnexa_route(canonical)
    assert doc["spec"]["route"]["matchers"] == [
        {"name": "alertname", "matchType": "=~", "value": "DialNexa.+"}
    ]
    assert matcher_text(doc["spec"]["route"]["matchers"][0]) == DIALNEXA_MATCHER
    assert plain_inhibit_rules(doc["spec"]["inhibitRules"]) == canonical["inhibit_rules"]
    assert [r["name"] for r in doc["spec"]["receivers"]] == [
        r["name"] for r in canonical["receivers"] if r["name"].startswith("dialnexa-")
    ]
    assert operator_model_round_trip(doc) == doc


def test_alertmanager_config_routes_every_alert_as_the_operator_merges_it(
    chart: helm.Chart, tmp_path: Path
) -> None:
    """Merged the operator's way, amtool accepts it and routes every alert of the rule file to
    the receiver of its severity, and alerts of other namespaces not at all.
    """
    doc = alertmanager_config(render(chart, scenario_values(AM_VALUES)))
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(as_the_operator_merges_it(doc)), encoding="utf-8")
    result = run_amtool("check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = f"{NAMESPACE}/{doc['metadata']['name']}/"
    for rule in alert_rules():
        labels = {**alert_labels(rule), "namespace": NAMESPACE}
        expected = prefix + RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]
        assert routed_receivers(config_file, labels) == [expected], rule["alert"]
        elsewhere = {**labels, "namespace": "other-team"}
        assert routed_receivers(config_file, elsewhere) == ["null"], rule["alert"]


def test_alertmanager_config_passes_receivers_through(chart: helm.Chart) -> None:
    """Each purpose's configs from values reach its receiver unchanged, and the CRD knows them."""
    values = scenario_values(AM_VALUES)
    doc = alertmanager_config(render(chart, values))
    receivers = {r["name"]: r for r in doc["spec"]["receivers"]}
    for purpose, configs in values["alertmanagerConfig"]["receivers"].items():
        assert receivers[f"dialnexa-{purpose}"] == {"name": f"dialnexa-{purpose}", **configs}
    assert doc["metadata"]["labels"]["alertmanagerConfig"] == "dialnexa"
    assert operator_model_round_trip(doc) == doc


def test_operator_model_round_trip_catches_a_misspelt_field(chart: helm.Chart) -> None:
    """The round trip above really checks: a misspelt receiver field is dropped, so it differs."""
    values = {"alertmanagerConfig": {"enabled": True}}
    doc = alertmanager_config(render(chart, values))
    doc["spec"]["receivers"][0]["slackConfig"] = [{"channel": "#x"}]
    assert operator_model_round_trip(doc) != doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["route"]["routes"][0].update(mute_time_intervals=["nights"]), "no Alert"),
        (lambda c: c["inhibit_rules"][0].update(source_matchers=["alertname=Down"]), "form"),
        (lambda c: c["route"].update(routes=[]), "no route matching"),
    ],
    ids=["untranslated key", "unquoted matcher", "no DialNexa route"],
)
def test_alertmanager_config_refuses_what_it_cannot_translate(
    tmp_path: Path, change: Any, message: str
) -> None:
    """A canonical file the template cannot say exactly fails the render, naming the problem."""
    copy = tmp_path / CHART_DIR.name
    shutil.copytree(CHART_DIR, copy)
    config = load_yaml(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    change(config)
    (copy / "files" / "alertmanager.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with helm.Chart.load(copy) as scratch, pytest.raises(helm.HelmRenderError, match=message):
        render(scratch, {"alertmanagerConfig": {"enabled": True}})


# --- Grafana dashboard --------------------------------------------------------------------------


def test_chart_dashboard_is_a_byte_identical_copy() -> None:
    """helm/.../files/dashboards/ holds exactly the canonical grafana/ dashboard."""
    assert CHART_DASHBOARD.read_bytes() == CANONICAL_DASHBOARD.read_bytes()
    json.loads(CANONICAL_DASHBOARD.read_text())


def test_dashboard_config_map_carries_the_exact_json(chart: helm.Chart) -> None:
    """The sidecar ConfigMap holds the dashboard byte for byte, labelled grafana_dashboard=1."""
    values = scenario_values("dashboard")
    docs = render(chart, values)
    dashboard = next(d for d in by_kind(docs, "ConfigMap") if DASHBOARD_KEY in d.get("data", {}))
    assert dashboard["data"][DASHBOARD_KEY] == CHART_DASHBOARD.read_text(encoding="utf-8")
    assert list(dashboard["data"]) == [DASHBOARD_KEY]
    digest = hashlib.sha256(dashboard["data"][DASHBOARD_KEY].encode()).hexdigest()
    assert digest == hashlib.sha256(CHART_DASHBOARD.read_bytes()).hexdigest()
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["labels"]["team"] == "outbound"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "DialNexa"}


AWKWARD_DASHBOARDS = {
    "pretty-printed": '{\n  "title": "DialNexa \u2014 calls",\n  "legend": "{{campaign_id}}"\n}\n',
    "no final newline": '{"a": "<b>&amp;</b>"}',
    "two final newlines": '{"a": 1}\n\n',
    "carriage returns": '{\r\n  "a": 1\r\n}\r\n',
    "leading blank": '  {"a": 1}\n',
    "trailing blanks in lines": '{\n  "a": 1,   \n\n   \n  "b": "\\t"\n}\n',
}


@pytest.mark.parametrize("content", list(AWKWARD_DASHBOARDS.values()), ids=list(AWKWARD_DASHBOARDS))
def test_dashboard_config_map_reproduces_any_file_exactly(tmp_path: Path, content: str) -> None:
    """Whatever the file's whitespace and line ends, the ConfigMap carries it unchanged."""
    copy = tmp_path / CHART_DIR.name
    shutil.copytree(CHART_DIR, copy)
    (copy / "files" / "dashboards").mkdir(parents=True, exist_ok=True)
    (copy / "files" / "dashboards" / DASHBOARD_KEY).write_bytes(content.encode())
    with helm.Chart.load(copy) as scratch:
        docs = render(scratch, {"dashboard": {"enabled": True}})
    dashboard = next(d for d in by_kind(docs, "ConfigMap") if DASHBOARD_KEY in d.get("data", {}))
    assert dashboard["data"][DASHBOARD_KEY] == content


def test_dashboard_sidecar_label_is_configurable(chart: helm.Chart) -> None:
    """Label name and value follow dashboard.label / dashboard.labelValue."""
    values = {"dashboard": {"enabled": True, "label": "grafana.io/dashboard", "labelValue": "yes"}}
    dashboard = next(
        d for d in by_kind(render(chart, values), "ConfigMap") if DASHBOARD_KEY in d.get("data", {})
    )
    assert dashboard["metadata"]["labels"]["grafana.io/dashboard"] == "yes"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]
    assert "annotations" not in dashboard["metadata"]


# --- values schema ------------------------------------------------------------------------------

BAD_VALUES = {
    "unknown top-level key": {"replicas": 2},
    "replicaCount not an integer": {"replicaCount": "two"},
    "serviceMonitor.enabled not a boolean": {"serviceMonitor": {"enabled": "yes"}},
    "campaigns as a string": {"campaigns": "cmp_1,cmp_2"},
    "campaign id that changes the path": {"campaigns": ["../admin"]},
    "unknown serviceMonitor key": {"serviceMonitor": {"enable": True}},
    "interval not a duration": {"serviceMonitor": {"interval": "30 seconds"}},
    "shards below one": {"sharding": {"enabled": True, "shards": 0}},
    "log level outside the enum": {"config": {"log_level": "verbose"}},
    "label value not a string": {"podLabels": {"tier": 3}},
    "alert override with an unknown field": {
        "prometheusRule": {"alertOverrides": {"A": {"fr": "5m"}}}
    },
    "alertmanagerConfig.enabled not a boolean": {"alertmanagerConfig": {"enabled": "yes"}},
    "receiver of an unknown purpose": {"alertmanagerConfig": {"receivers": {"pagr": {}}}},
    "receiver field that is not a list of configs": {
        "alertmanagerConfig": {"receivers": {"pager": {"slackConfig": {"channel": "#x"}}}}
    },
    "receiver configs not a list": {
        "alertmanagerConfig": {"receivers": {"tickets": {"slackConfigs": {"channel": "#x"}}}}
    },
    "proxy URL and proxy Secret both": {
        "proxy": {"existingSecret": "egress", "httpsProxy": "http://proxy.internal:3128"}
    },
    "proxy URL with a newline": {"proxy": {"httpsProxy": "http://p:1\n- name: X"}},
    "proxy URL with a space": {"proxy": {"httpProxy": "http://p:1 x"}},
    "unknown proxy key": {"proxy": {"https_proxy": "http://p:1"}},
    "proxy Secret key that is not a key": {
        "proxy": {"existingSecret": "s", "httpsProxyKey": "a/b"}
    },
}


@pytest.mark.parametrize("values", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any]) -> None:
    """values.schema.json rejects the value, both on its own and when rendering."""
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_schema_accepts_every_scenario(chart: helm.Chart, scenario: str) -> None:
    """The defaults and every ci/ file satisfy the schema."""
    chart.validate_schema(scenario_values(scenario))


def test_schema_closes_the_top_level() -> None:
    """additionalProperties is false at the top level and every default key is declared."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = load_yaml((CHART_DIR / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(defaults) <= set(schema["properties"])


def test_every_default_value_is_documented() -> None:
    """Every leaf of values.yaml has a helm-docs ``# --`` comment, on itself or on an ancestor."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    ancestors: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        comment_block = []
        above = index - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            comment_block.append(lines[above].strip())
            above -= 1
        documented = any(comment.startswith("# --") for comment in comment_block)
        inherited = any(flag for _, flag in ancestors)
        key, _, rest = stripped.partition(":")
        if rest.strip() == "":  # a mapping header: its children carry the documentation
            ancestors.append((indent, documented or inherited))
            continue
        if not (documented or inherited):
            undocumented.append(key)
    assert undocumented == []


@pytest.mark.parametrize("sharded", [False, True])
def test_check_on_start_runs_the_check_with_the_exporters_settings(
    chart: helm.Chart, sharded: bool
) -> None:
    """checkOnStart adds an init container running `check --online` with exactly the
    exporter's environment and mounts (key file, config file, shard), hardened the same way;
    off by default."""
    assert "initContainers" not in pod_spec(render(chart, {"existingSecret": "k"}))
    values: dict[str, Any] = {
        "existingSecret": "k",
        "checkOnStart": {"enabled": True},
        "sharding": {"enabled": sharded, "shards": 2},
        "extraEnv": [{"name": "DIALNEXA_LOG_LEVEL", "value": "debug"}],
    }
    docs = render(chart, values)
    spec = pod_spec(docs)
    [check] = spec["initContainers"]
    exporter = exporter_container(docs)
    assert check["args"] == ["check", "--online"]
    assert check["image"] == exporter["image"]
    assert check["env"] == exporter["env"]
    assert check["volumeMounts"] == exporter["volumeMounts"]
    assert check["securityContext"] == exporter["securityContext"]
    assert "DIALNEXA_API_KEY_FILE" in env_of(check)
    values["checkOnStart"]["online"] = False
    [offline] = pod_spec(render(chart, values))["initContainers"]
    assert offline["args"] == ["check"]
    for doc in docs:
        validate_manifest(doc, "1.30.0")


def test_the_service_monitor_scrapes_the_configured_telemetry_path(chart: helm.Chart) -> None:
    """config.telemetry_path moves the exporter's metrics; the ServiceMonitor follows it."""
    values = scenario_values("servicemonitor")
    values["config"] = {"telemetry_path": "/internal/metrics"}
    (endpoint,) = one(render(chart, values), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["path"] == "/internal/metrics"
    assert config_file(render(chart, values))["telemetry_path"] == "/internal/metrics"


@pytest.mark.parametrize(
    "config",
    [
        {"log_format": "xml"},
        {"event_loop": "trio"},
        {"api_budget_share": 0},
        {"max_connections": 0},
        {"telemetry_path": "metrics"},
        {"status_series": "sparse"},
        {"calling_window": "Mon-Fri 09:00-20:00 Europe/Berlin\n"},
        {"calling_window": 9},
        {"stall_after_seconds": 0},
        {"stall_after_seconds": 604801},
    ],
)
def test_the_schema_refuses_bad_new_settings(config: dict[str, Any]) -> None:
    """The schema knows the settings added in this release and refuses bad values at install."""
    report = helm.lint(CHART_DIR, {"config": config}, strict=True)
    assert report["errors"], config


def test_the_calling_window_reaches_the_config_file_the_exporter_reads(
    chart: helm.Chart, tmp_path: Path
) -> None:
    """config.calling_window and stall_after_seconds land in config.yaml and the exporter
    accepts them; left null they are omitted, so the exporter's defaults hold."""
    assert "calling_window" not in config_file(render(chart, {"campaigns": ["c1"]}))
    window = "Mon-Fri 09:00-13:00 14:00-20:00; Sat 10:00-14:00 America/New_York"
    config = {"calling_window": window, "stall_after_seconds": 1200}
    values = {"campaigns": ["c1"], "config": config}
    parsed = config_file(render(chart, values))
    assert (parsed["calling_window"], parsed["stall_after_seconds"]) == (window, 1200)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(parsed))
    settings = load_settings({"api_key": "k", "config_file": path})
    assert (settings.calling_window, settings.stall_after_seconds) == (window, 1200.0)


# --- egress proxy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["deployment", "statefulset"])
def test_proxy_values_reach_the_exporter_and_its_check(chart: helm.Chart, sharded: bool) -> None:
    """proxy.httpsProxy / httpProxy / noProxy become HTTPS_PROXY / HTTP_PROXY / NO_PROXY of the
    exporter and of the checkOnStart container; unset, none of them is there."""
    assert not set(PROXY_VARIABLES) & set(env_of(exporter_container(render(chart))))
    values: dict[str, Any] = {
        "existingSecret": "k",
        "checkOnStart": {"enabled": True},
        "sharding": {"enabled": sharded},
        "proxy": {
            "httpsProxy": "http://proxy.internal:3128",
            "httpProxy": "http://plain-proxy.internal:8080",
            "noProxy": ".cluster.local, 10.0.0.1",
        },
    }
    docs = render(chart, values)
    [check] = pod_spec(docs)["initContainers"]
    for container in (exporter_container(docs), check):
        env = env_of(container)
        assert env["HTTPS_PROXY"] == {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}
        assert env["HTTP_PROXY"]["value"] == "http://plain-proxy.internal:8080"
        assert env["NO_PROXY"]["value"] == ".cluster.local, 10.0.0.1"
    for doc in docs:
        validate_manifest(doc, KUBERNETES_VERSIONS[-1])


def test_proxy_credentials_come_from_an_existing_secret(chart: helm.Chart) -> None:
    """With proxy.existingSecret both URLs come from its keys (each optional), never as a value
    in the pod spec; NO_PROXY stays a plain value."""
    values = {
        "existingSecret": "k",
        "proxy": {"existingSecret": "egress", "httpsProxyKey": "url", "noProxy": ".svc"},
    }
    docs = render(chart, values)
    env = env_of(exporter_container(docs))
    assert env["HTTPS_PROXY"] == {
        "name": "HTTPS_PROXY",
        "valueFrom": {"secretKeyRef": {"name": "egress", "key": "url", "optional": True}},
    }
    assert env["HTTP_PROXY"]["valueFrom"]["secretKeyRef"]["key"] == "http-proxy"
    assert "value" not in env["HTTPS_PROXY"]
    assert "value" not in env["HTTP_PROXY"]
    assert env["NO_PROXY"]["value"] == ".svc"
    assert not by_kind(docs, "Secret"), "the chart makes no Secret of its own for the proxy"
