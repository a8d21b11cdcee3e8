"""The Prometheus config and alert rules: valid for promtool, every alert unit-tested both
firing and not firing, and the scrape config covering every service."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.stack import DEFAULT_PORTS, SERVICES
from tests.conftest import ROOT, unavailable

PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"
RABBITMQ_PROMETHEUS_PORT = 15692


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool not installed (apt-get install prometheus)")
    return str(path)


def run_promtool(promtool: str, *args: str | Path) -> str:
    proc = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_promtool_check_config(promtool: str) -> None:
    run_promtool(promtool, "check", "config", CONFIG)


def test_promtool_check_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", RULES)


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", RULE_TESTS)
    assert "SUCCESS" in output


def alert_names() -> set[str]:
    return {rule["alert"] for group in load(RULES)["groups"] for rule in group["rules"]}


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = alert_names()
    assert alerts, "no alerts defined"
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown staying quiet"


def test_the_required_alerts_exist() -> None:
    expressions = " ".join(
        rule["expr"] for group in load(RULES)["groups"] for rule in group["rules"]
    )
    for needle in (
        "deriv(docpipe_queue_messages",  # backlog growing
        'docpipe_job_duration_seconds_count{status="failed"}',  # failure rate
        "docpipe_jobs_stalled",  # stalls
        "docpipe_dead_letters_total",  # DLQ growth
        "histogram_quantile(0.99",  # p99 stage latency
        "up{",  # a service down
        "docpipe_llm_cost_usd_total",  # AI budget burn
        'docpipe_llm_tenant_budget_usd{period="day"}',  # ... against the daily budget
        'docpipe_llm_calls_total{outcome="over_budget"}',  # calls refused by a budget
        "docpipe_llm_model_misconfigured",  # a key the model server refuses
    ):
        assert needle in expressions, needle


def test_every_service_and_rabbitmq_are_scraped() -> None:
    targets = {
        target
        for job in load(CONFIG)["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    # The docpipe services (the local model server has no /metrics: its calls are counted by
    # the analyzer's docpipe_llm_* metrics).
    expected = {f"127.0.0.1:{DEFAULT_PORTS[name]}" for name in SERVICES}
    expected.add(f"127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}")
    assert targets == expected


DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "docpipe.json"


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_dashboard_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses expressions only inside rule files: wrap each as a recording rule.
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    rules = [{"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(expressions)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", path)


def test_dashboard_covers_every_area() -> None:
    joined = " ".join(dashboard_expressions())
    for metric in (
        "docpipe_messages_total",  # throughput
        "docpipe_handler_seconds_bucket",  # latency
        "docpipe_queue_messages",  # queue depth
        'outcome=~"retried|dead_lettered"',  # failures
        "docpipe_dead_letters_total",  # the DLQ
        "docpipe_jobs_stalled",  # stalls
        "docpipe_push_lag_seconds_bucket",  # progress push lag
        "docpipe_llm_cost_usd_total",  # AI spend by tenant and model
        "docpipe_llm_tokens_total",  # tokens by model
        "docpipe_llm_calls_total",  # model calls by outcome
    ):
        assert metric in joined, metric
