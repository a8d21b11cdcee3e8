"""deploy/compose.yaml validates (`docker-compose config`, or `docker compose config`) and runs
the whole stack as the issue asks: the five services and the model server from the image,
RabbitMQ with the management and Prometheus plugins, PostgreSQL without trust, Prometheus with
the alert rules, Grafana with the dashboard; every long-running service has a health check."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.stack import DEFAULT_PORTS, SERVICES
from tests.conftest import unavailable

pytestmark = pytest.mark.deploy

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
SANDBOX_USER_OVERRIDE = COMPOSE.with_name("compose.sandbox-user.yaml")


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return ["docker", "compose"]
    unavailable("neither docker-compose nor the docker compose plugin is installed")
    raise AssertionError("unreachable")


def resolve(*files: Path) -> dict[str, Any]:
    """The files as compose resolves them (anchors merged, variables at their defaults)."""
    names = [arg for file in files for arg in ("-f", str(file))]
    done = subprocess.run(
        [*compose_command(), *names, "config"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return resolve(COMPOSE)


def test_the_whole_stack_with_health_checks(config: dict[str, Any]) -> None:
    services = config["services"]
    expected = {*SERVICES, "model-server", "rabbitmq", "postgres", "prometheus", "grafana"}
    assert expected <= set(services)
    for name in expected:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert service["build"]["target"] == "runtime"
        assert str(DEFAULT_PORTS[name]) in " ".join(service["healthcheck"]["test"])
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        # Each service connects as its own broker user and the runtime database role.
        env = service["environment"]
        assert env["DOCPIPE_AMQP_URL"].startswith(f"amqp://docpipe-{name}:")
        assert env["DOCPIPE_DATABASE_URL"].startswith("postgresql://docpipe_app:")
        assert set(service["depends_on"]) == {"migrate", "declare-topology"}


def test_no_superuser_or_trust(config: dict[str, Any]) -> None:
    postgres = config["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "trust" not in postgres["POSTGRES_INITDB_ARGS"]
    # No docpipe process connects as the superuser (only the server's own role setup does).
    for name, service in config["services"].items():
        if name == "postgres":
            continue
        for value in (service.get("environment") or {}).values():
            assert "postgresql://postgres" not in str(value).split("@")[0], name


def test_monitoring_is_provisioned(config: dict[str, Any]) -> None:
    services = config["services"]
    mounts = {
        name: " ".join(str(volume) for volume in services[name].get("volumes", []))
        for name in ("rabbitmq", "prometheus", "grafana")
    }
    plugins = (COMPOSE.parent / "compose" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins
    assert "enabled_plugins" in mounts["rabbitmq"]
    assert "alerts.yml" in mounts["prometheus"]
    assert "dashboards" in mounts["grafana"]
    scrape = yaml.safe_load((COMPOSE.parent / "compose" / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert {f"{name}:{DEFAULT_PORTS[name]}" for name in SERVICES} <= targets


def test_the_sandbox_user_override_changes_only_the_childrens_starters(
    config: dict[str, Any],
) -> None:
    """compose.sandbox-user.yaml: the extractor and OCR as root with exactly the capabilities
    the code checks for and DOCPIPE_SANDBOX_USER, the rest of their settings kept; the other
    services as they were."""
    from shared.sandbox.identity import REQUIRED_CAPABILITIES

    def unordered(service: dict[str, Any]) -> dict[str, Any]:
        # Merging two files reorders a service's lists (volumes, secrets): order is not meant.
        return {
            key: sorted(value, key=json.dumps) if isinstance(value, list) else value
            for key, value in service.items()
        }

    overridden = resolve(COMPOSE, SANDBOX_USER_OVERRIDE)["services"]
    assert set(overridden) == set(config["services"])
    for name, service in overridden.items():
        if name not in ("extractor", "ocr"):
            assert unordered(service) == unordered(config["services"][name])
            continue
        assert str(service["user"]) == "0"
        assert service["cap_drop"] == ["ALL"]
        assert sorted(service["cap_add"]) == sorted(REQUIRED_CAPABILITIES.values())
        environment = service["environment"]
        assert str(environment["DOCPIPE_SANDBOX_USER"]) == "10002"
        base = config["services"][name]["environment"]
        assert {k: v for k, v in environment.items() if k != "DOCPIPE_SANDBOX_USER"} == base
