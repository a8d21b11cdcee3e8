"""The Kubernetes manifests (deploy/k8s): `kubectl kustomize` renders them, every object
validates against the Kubernetes API schemas (kubernetes-validate, strict: an unknown field
fails) and the KEDA objects against the KEDA CRD schemas vendored in deploy/k8s/schemas; and
what they say agrees with the code: each service's command, port and health routes, the
queue names KEDA scales on, a disruption budget per Deployment."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from scripts.stack import DEFAULT_PORTS, SERVICES
from shared import topology
from shared.sandbox.identity import REQUIRED_CAPABILITIES
from tests.conftest import unavailable

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SANDBOX_USER_OVERLAY = ROOT / "deploy" / "k8s-overlays" / "sandbox-user"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests target (KEDA 2.16 supports it)
SCALED = {"extractor": topology.EXTRACTOR, "ocr": topology.OCR, "analyzer": topology.ANALYZER}


def render(folder: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        unavailable("kubectl not installed (apt-get install kubectl)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(K8S)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def keda_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (K8S / "schemas" / f"{kind.lower()}-keda-v1alpha1.json").read_text()
    )
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Raises if `doc` does not fit its kind's schema."""
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.Draft202012Validator(keda_schema(doc["kind"])).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_rendered_object_validates(rendered: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert {"Deployment", "Job", "ConfigMap", "Secret", "Service", "Ingress"} <= kinds
    assert {"PodDisruptionBudget", "ScaledObject", "TriggerAuthentication"} <= kinds
    for doc in rendered:
        validate(doc)


def test_validation_catches_a_broken_object(rendered: list[dict[str, Any]]) -> None:
    # A misspelt ScaledObject field and a Deployment probe with a string where a number goes.
    scaled = copy.deepcopy(next(iter(by_kind(rendered, "ScaledObject").values())))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    deployment = copy.deepcopy(by_kind(rendered, "Deployment")["docpipe-ingest"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_a_deployment_per_service_with_its_command_port_and_probes(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = by_kind(rendered, "Deployment")
    assert set(deployments) == {f"docpipe-{name}" for name in SERVICES}
    budgets = by_kind(rendered, "PodDisruptionBudget")
    for name in SERVICES:
        pod = deployments[f"docpipe-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["ports"] == [{"name": "http", "containerPort": DEFAULT_PORTS[name]}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        selector = deployments[f"docpipe-{name}"]["spec"]["selector"]
        assert budgets[f"docpipe-{name}"]["spec"]["selector"] == selector
    services = by_kind(rendered, "Service")
    assert set(services) == {"docpipe-ingest", "docpipe-progress"}
    backends = {
        path["backend"]["service"]["name"]
        for rule in by_kind(rendered, "Ingress")["docpipe"]["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == set(services)


def test_keda_scales_the_workers_on_their_queues(rendered: list[dict[str, Any]]) -> None:
    scaled = by_kind(rendered, "ScaledObject")
    auths = by_kind(rendered, "TriggerAuthentication")
    deployments = by_kind(rendered, "Deployment")
    assert set(scaled) == {f"docpipe-{name}" for name in SCALED}
    for name, group in SCALED.items():
        spec = scaled[f"docpipe-{name}"]["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert "replicas" not in deployments[spec["scaleTargetRef"]["name"]]["spec"]
        assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        assert spec["cooldownPeriod"] >= 60
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == topology.Topology("docpipe", ()).queue_name(
            group
        )
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in auths


def test_the_setup_job_migrates_then_declares_the_topology(rendered: list[dict[str, Any]]) -> None:
    pod = by_kind(rendered, "Job")["docpipe-setup"]["spec"]["template"]["spec"]
    assert [c["command"] for c in pod["initContainers"]] == [["python", "-m", "shared.migrate"]]
    assert [c["command"] for c in pod["containers"]] == [
        ["python", "-m", "scripts.declare_topology"]
    ]


def test_the_sandbox_user_overlay_gives_only_the_children_starters_their_capabilities(
    rendered: list[dict[str, Any]],
) -> None:
    """deploy/k8s-overlays/sandbox-user: the extractor and OCR run as root with exactly the
    capabilities the code checks for, their children as the image's sandbox user; the rest is
    the base, unchanged."""
    overlay = render(SANDBOX_USER_OVERLAY)
    for doc in overlay:
        validate(doc)
    base = by_kind(rendered, "Deployment")
    for name, deployment in by_kind(overlay, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        if name not in ("docpipe-extractor", "docpipe-ocr"):
            assert deployment == base[name]
            continue
        assert pod["securityContext"]["runAsUser"] == 0
        assert pod["securityContext"]["runAsNonRoot"] is False
        capabilities = container["securityContext"]["capabilities"]
        assert capabilities["drop"] == ["ALL"]
        assert sorted(capabilities["add"]) == sorted(REQUIRED_CAPABILITIES.values())
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert env["DOCPIPE_SANDBOX_USER"] == "10002"  # the Dockerfile's docpipe-sandbox
