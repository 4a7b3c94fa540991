"""deploy/kubernetes/: every manifest validated in strict mode (unexpected properties rejected) against
the Kubernetes API schemas that kubernetes-validate ships, and held to what the limiter needs there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.service_process import ROOT
from tornado_rate_limiter.app.process import DRAIN_SECONDS
from tornado_rate_limiter.limiter.policies.loader import parse_policies

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
VERSION = kubernetes_validate.latest_version()


def resources() -> list[dict[str, Any]]:
    return [document for path in MANIFESTS for document in yaml.safe_load_all(path.read_text()) if document]


def resource(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_is_valid_in_strict_mode(path: Path) -> None:
    """Each resource of each file validates against the API schema of its kind, strictly."""
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, VERSION, strict=True)


def test_strict_mode_rejects_an_unexpected_property() -> None:
    """A misspelt field (readinesProbe) is an error, not ignored: the validation above can fail."""
    deployment = resource("Deployment", "rate-limiter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def test_the_deployment_has_what_a_limiter_needs() -> None:
    """At least 2 replicas; /livez liveness and /readyz readiness; a preStop pause, and a grace period
    above it plus the drain; requests and limits; non-root on a read-only root filesystem; the policy
    file mounted as a directory (no subPath: hot reload sees edits); a fallback share of 1/replicas."""
    deployment = resource("Deployment", "rate-limiter")
    replicas = deployment["spec"]["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert replicas >= 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause > 0 and pod["terminationGracePeriodSeconds"] > pause + DRAIN_SECONDS
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (mount,) = container["volumeMounts"]
    assert "subPath" not in mount
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert Path(env["RATE_LIMIT_CONFIG"]).parent == Path(mount["mountPath"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    hpa = resource("HorizontalPodAutoscaler", "rate-limiter")
    assert float(env["RATE_LIMIT_FALLBACK_SHARE"]) == pytest.approx(1 / replicas)
    assert hpa["spec"]["minReplicas"] == replicas
    configmap = resource("ConfigMap", volume["configMap"]["name"])
    assert Path(env["RATE_LIMIT_CONFIG"]).name in configmap["data"]


def test_the_configmaps_policy_file_is_valid() -> None:
    """The policy file the ConfigMap carries loads (the service would start with it)."""
    configmap = resource("ConfigMap", "rate-limiter-policies")
    policies = parse_policies(configmap["data"]["limits.toml"].encode(), "limits.toml")
    assert policies.limits_for("ip", "GET", "/", None)


def test_the_service_the_pdb_and_the_hpa_select_the_deployments_pods() -> None:
    """Service, PodDisruptionBudget and HPA point at the Deployment and its pods' labels."""
    labels = resource("Deployment", "rate-limiter")["spec"]["template"]["metadata"]["labels"]
    assert resource("Service", "rate-limiter")["spec"]["selector"] == labels
    assert resource("PodDisruptionBudget", "rate-limiter")["spec"]["selector"]["matchLabels"] == labels
    assert resource("HorizontalPodAutoscaler", "rate-limiter")["spec"]["scaleTargetRef"]["name"] == "rate-limiter"
