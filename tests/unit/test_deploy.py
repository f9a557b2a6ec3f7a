"""The deployment files: Kubernetes schemas, and agreement with the server's own configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from infrastructure.config.loader import validate
from infrastructure.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.name}:{doc['kind']}", doc))
    return found


def by_kind(kind: str) -> dict[str, Any]:
    matches = [doc for _, doc in documents() if doc["kind"] == kind]
    assert len(matches) >= 1, f"no {kind} in deploy/kubernetes"
    return matches[0]


def check_manifest(doc: dict[str, Any]) -> None:
    """How every manifest is checked. strict: an unknown (misspelt) field fails instead of
    being silently ignored by the API server."""
    kubernetes_validate.validate(doc, latest_version(), strict=True)


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[name for name, _ in documents()])
def test_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    check_manifest(doc)


def test_the_manifest_check_catches_a_misspelt_field() -> None:
    # The check above, on our own Deployment with one field misspelt: if that check ever
    # stops being strict, or stops reading the Deployment, this fails.
    broken = yaml.safe_load(yaml.safe_dump(by_kind("Deployment")))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        check_manifest(broken)


def load_config(text: str, tmp_path: Path) -> Settings:
    raw = yaml.safe_load(text)
    secret = tmp_path / "jwt-secret"
    secret.write_text("x" * 44)
    secret.chmod(0o600)
    # The mounted Secret's path does not exist here; point it at a stand-in.
    raw["auth"]["secret_file"] = str(secret)
    for section, key, value in (
        ("quotas", "redis_url_file", "redis://llm-proxy-redis:6379/0"),
        ("ledger", "postgres_dsn_file", "postgresql://u:p@llm-proxy-postgres:5432/llm_proxy"),
    ):
        if key in raw.get(section, {}):
            stand_in = tmp_path / key
            stand_in.write_text(value)
            stand_in.chmod(0o600)
            raw[section][key] = str(stand_in)
    return validate(raw)


def configmap_settings(tmp_path: Path) -> Settings:
    return load_config(by_kind("ConfigMap")["data"]["config.yaml"], tmp_path)


def test_the_configmap_and_the_image_default_are_valid_configurations(tmp_path: Path) -> None:
    in_cluster = configmap_settings(tmp_path)
    image = load_config((ROOT / "deploy" / "config.yaml").read_text(), tmp_path)
    for settings in (in_cluster, image):
        assert settings.server.health and settings.auth.enabled and settings.metrics.enabled
    # Several replicas share their limits and their ledger.
    replicas = by_kind("Deployment")["spec"]["replicas"]
    assert replicas > 1
    assert (in_cluster.quotas.store, in_cluster.ledger.backend) == ("redis", "postgres")
    assert in_cluster.quotas.redis_url == "redis://llm-proxy-redis:6379/0"


def test_probes_and_ports_agree_with_the_configuration(tmp_path: Path) -> None:
    settings = configmap_settings(tmp_path)
    spec = by_kind("Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": settings.server.port, "metrics": settings.metrics.port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == settings.server.port
    # Kubernetes kills the pod at terminationGracePeriodSeconds: draining must end before.
    drain = settings.server.shutdown_delay_seconds + settings.server.grace_period_seconds
    assert drain < spec["terminationGracePeriodSeconds"]
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_the_dockerfile_runs_unprivileged_with_a_grpc_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "0" and users[-1] != "root"
    assert '"infrastructure.cli", "health"' in dockerfile
    spec = by_kind("Deployment")["spec"]["template"]["spec"]
    assert str(spec["securityContext"]["runAsUser"]) == users[-1]
