"""See everything: after a job goes through the running stack, every metric the dashboard and
the alert rules use is served by some service, health and readiness answer on all five, and
`grep <job_id>` over the five JSON logs follows the job through every service."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import SERVICES
from tests.conftest import ROOT
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "docpipe.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Metrics Prometheus makes itself rather than scraping them from a service.
PROMETHEUS_INTERNAL = {"up"}
WORKERS = ("extractor", "ocr", "analyzer")

T = TypeVar("T")

# --- metric names out of PromQL ---------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_METRIC = re.compile(r"(?<![\w:.])(docpipe_[a-zA-Z0-9_:]*|up)(?![\w:])")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: docpipe_* and `up` (label values and regexes,
    which are string literals, are dropped first so a queue name cannot count as a metric)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_metric_names_are_parsed_out_of_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (stage, le) (rate(docpipe_handler_seconds_bucket[5m])))"
        ' > 1 and on (queue) max by (queue) (docpipe_queue_messages{queue=~"docpipe_x\\\\.dlq"})'
        ' or up{job="docpipe"} == 0'
    )
    assert metric_names(expr) == {
        "docpipe_handler_seconds_bucket",
        "docpipe_queue_messages",
        "up",
    }


# --- scraping -------------------------------------------------------------------------------


Samples = list[tuple[str, dict[str, str], float]]


async def scrape(stack: StackClient, service: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{stack.stack.url(service)}/metrics")
    assert response.status_code == 200, (service, response.status_code)
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


async def scrape_all(stack: StackClient) -> dict[str, Samples]:
    results = await asyncio.gather(*(scrape(stack, name) for name in SERVICES))
    return dict(zip(SERVICES, results, strict=True))


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 40.0
) -> T:
    """Probe until ok(result) or the timeout (the stats loops run every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if ok(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(1.0)


# --- the job ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def finished_job(
    stack: StackClient, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One job with a text page and a scanned page, watched over the WebSocket to the end."""
    path = tmp_path_factory.mktemp("observability") / "observed.pdf"
    pdf_with_pages(
        path,
        [
            "Observability check: invoice 42 for ACME, due March 3, 2025.",
            text_image(["Scanned page for the", "observability check"]),
        ],
    )
    job_id = await stack.submit_ok(path)
    messages = await stack.watch(job_id)
    assert messages[-1]["status"] == "completed", messages[-1]
    return {"job_id": job_id, "messages": messages}


# --- metrics -------------------------------------------------------------------------------


async def test_health_and_readiness_answer_on_every_service(stack: StackClient) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for service in SERVICES:
            for path in ("/healthz", "/readyz"):
                response = await client.get(f"{stack.stack.url(service)}{path}")
                assert response.status_code == 200, (service, path, response.text)
            assert (await client.get(f"{stack.stack.url(service)}/healthz")).json()[
                "service"
            ] == service


async def test_every_metric_of_the_dashboard_and_alerts_is_served(
    stack: StackClient, finished_job: dict[str, Any]
) -> None:
    wanted: dict[str, set[str]] = {}
    for source, expressions in (
        ("dashboard", dashboard_expressions()),
        ("alerts", alert_expressions()),
    ):
        for expr in expressions:
            for name in metric_names(expr) - PROMETHEUS_INTERNAL:
                wanted.setdefault(name, set()).add(source)
    assert len(wanted) >= 12, sorted(wanted)

    def served(scraped: dict[str, Samples]) -> set[str]:
        return {name for samples in scraped.values() for name, _, _ in samples}

    # Sample names, not family names: a histogram is selected as <name>_bucket/_count/_sum
    # and a counter as <name>_total, exactly as the exposition names its samples.
    scraped = await eventually(lambda: scrape_all(stack), lambda s: set(wanted) <= served(s))
    missing = {
        name: sorted(sources) for name, sources in wanted.items() if name not in served(scraped)
    }
    assert not missing, f"metrics used by the dashboard/alerts but served by no service: {missing}"


async def test_metrics_count_the_work_of_the_job(
    stack: StackClient, finished_job: dict[str, Any]
) -> None:
    def settled(scraped: dict[str, Samples]) -> bool:
        progress = scraped["progress"]
        return (
            total(progress, "docpipe_jobs", status="completed") >= 1
            and total(progress, "docpipe_queue_consumers") > 0
        )

    scraped = await eventually(lambda: scrape_all(stack), settled)
    extractor, ocr, analyzer, progress = (
        scraped["extractor"],
        scraped["ocr"],
        scraped["analyzer"],
        scraped["progress"],
    )
    # Work counters.
    assert total(extractor, "docpipe_pages_extracted_total") >= 2
    assert total(ocr, "docpipe_images_ocred_total") >= 1
    assert total(ocr, "docpipe_ocr_page_seconds_count") >= 1
    assert total(analyzer, "docpipe_chunks_analyzed_total") >= 1
    # Every consumer counts what it received and acked, and times its handler.
    for service, samples in scraped.items():
        if service == "ingest":
            continue
        received = total(samples, "docpipe_messages_total", queue=service, outcome="received")
        acked = total(samples, "docpipe_messages_total", queue=service, outcome="acked")
        assert received >= 1 and acked >= 1, (service, received, acked)
        handled = total(samples, "docpipe_handler_seconds_count", stage=service)
        assert handled >= acked, (service, handled, acked)
        # Series exist at zero before anything happens, so rate() and alerts see them.
        assert any(
            n == "docpipe_dead_letters_total" and lbl.get("queue") == service
            for n, lbl, _ in samples
        ), service
    # Jobs: durations, time to first progress, counts by status from the database.
    assert total(progress, "docpipe_job_duration_seconds_count", status="completed") >= 1
    assert total(progress, "docpipe_time_to_first_progress_seconds_count") >= 1
    assert total(progress, "docpipe_jobs", status="completed") >= 1
    assert any(n == "docpipe_jobs_stalled" for n, _, _ in progress)
    # Broker: every work queue has its consumers; gauges cover the whole topology.
    queues = {lbl["queue"] for n, lbl, _ in progress if n == "docpipe_queue_messages"}
    prefix = stack.stack.env["DOCPIPE_BUS_PREFIX"]
    for group in ("extractor", "ocr", "analyzer", "progress"):
        assert {f"{prefix}.{group}", f"{prefix}.{group}.dlq"} <= queues, queues
        consumers = total(progress, "docpipe_queue_consumers", queue=f"{prefix}.{group}")
        assert consumers >= 1, (group, consumers)
    # The WebSocket push: the watched job's live updates were timed.
    assert total(progress, "docpipe_push_lag_seconds_count") >= 1
    assert any(n == "docpipe_websocket_clients" for n, _, _ in progress)


# --- logs ----------------------------------------------------------------------------------


def read_log(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def job_lines(log_dir: Path, job_id: str) -> dict[str, list[dict[str, Any]]]:
    """Per service, its log lines mentioning the job (each must be a JSON object)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for service in SERVICES:
        for line in read_log(log_dir / f"{service}.log"):
            if job_id in line:
                record = json.loads(line)  # a line that is not JSON fails the test here
                found.setdefault(service, []).append(record)
    return found


async def test_grepping_the_job_id_finds_every_service(
    stack: StackClient, finished_job: dict[str, Any]
) -> None:
    log_dir = stack.stack.log_dir
    assert log_dir is not None
    job_id = finished_job["job_id"]

    async def probe() -> dict[str, list[dict[str, Any]]]:
        return job_lines(log_dir, job_id)

    found = await eventually(probe, lambda f: set(f) == set(SERVICES), timeout=20)
    assert set(found) == set(SERVICES), f"no line with {job_id} in: {set(SERVICES) - set(found)}"
    for service, records in found.items():
        assert all(r.get("service") == service for r in records), service
        assert all("level" in r and "timestamp" in r and "event" in r for r in records)
    assert any(r["event"] == "job accepted" for r in found["ingest"]), found["ingest"]
    assert any(
        r["event"] == "job finished" and r.get("status") == "completed" for r in found["progress"]
    )
    # Handler lines carry the job and correlation ids bound by the consumer wrapper.
    for service in (*WORKERS, "progress"):
        handled = [r for r in found[service] if r["event"] == "message handled"]
        assert handled, f"{service} logged no 'message handled' line for the job"
        for record in handled:
            assert record.get("job_id") == job_id, record
            assert record.get("correlation_id"), record
            assert record.get("queue") == service, record
            assert record.get("event_type"), record  # the routing key of the message
            assert isinstance(record.get("duration_ms"), int | float), record


async def test_every_log_line_is_json_naming_its_service(
    stack: StackClient, finished_job: dict[str, Any]
) -> None:
    log_dir = stack.stack.log_dir
    assert log_dir is not None
    for service in SERVICES:
        lines = [line for line in read_log(log_dir / f"{service}.log") if line.strip()]
        assert lines, f"{service} wrote no log"
        bad = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            if not isinstance(record, dict) or record.get("service") != service:
                bad.append(line)
        assert not bad, f"{service}: {len(bad)} of {len(lines)} lines are not JSON naming it: " + (
            "\n".join(bad[:5])
        )
