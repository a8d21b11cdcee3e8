"""The benchmark harness on tiny inputs: it starts its own stack, runs every benchmark and
writes a report of the agreed shape (the full run is `make bench`, outside the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.corpus]

EXPECTED_TARGETS = {
    "text_pdf_speed_vs_pypdf",
    "text_pdf_quality_vs_best_engine",
    "text_pdf_defaults_speed_vs_pypdf",
    "ocr_speed_vs_tesseract_cli",
    "ocr_cer_vs_tesseract_cli",
    "progress_push_latency_p99_s",
    "progress_push_latency_p99_two_replicas_s",
    "text_pdf_throughput_two_extractors_vs_one",
    "extractor_replica_takes_work_s",
    "first_progress_idle_p95_s",
    "first_progress_50_queued_p95_s",
    "small_job_behind_big_p95_s",
    "peak_rss_per_service_mb",
    "progress_rate_vs_raw_consume",
    "llm_analyze_wall_vs_bare_concurrent",
    "llm_docpipe_overhead_per_call_p50_ms",
    "llm_rpm_limit_max_in_window",
    "llm_local_model_tokens_per_s_engine_vs_direct",
    "batch_update_p99_s",
    "batch_updates_lost",
    "batch_percent_backwards",
    "dedup_duplicate_500_pages_p95_s",
    "eta_error_scanned_pdf",
    "eta_error_text_pdf",
    "eta_error_batch",
    "fair_share_b_one_page_p95_s",
    "fair_share_a_throughput_ratio",
    *(
        f"memory_{service}_parent_peak_mb_large_txt"
        for service in ("ingest", "extractor", "analyzer", "progress", "ocr")
    ),
}


def test_benchmark_smoke_run_writes_a_report(
    corpus: Path, rabbit_available: None, db_pool: object, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # Every benchmark runs once, small: about 4 minutes on a busy 2-core machine.
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# docpipe benchmarks")
    assert report["smoke"] is True and report["failures"] == []
    for key in ("cores", "memory_gb", "cpu_model", "python", "versions"):
        assert key in report["machine"]
    names = {t["name"] for t in report["targets"]}
    assert names == EXPECTED_TARGETS
    for t in report["targets"]:
        assert set(t) >= {"name", "value", "target", "met"}
        assert isinstance(t["value"], int | float) and isinstance(t["met"], bool)
    # The capacity figures: every page cost something, and the document is made from them.
    per_page = report["details"]["capacity"]["per_page"]
    for kind in ("text_pdf", "scan"):
        assert per_page[kind]["pages"] >= 1
        assert per_page[kind]["cpu_seconds_per_page"]["extractor"] > 0
        assert per_page[kind]["bus_messages_per_page"] >= 2  # uploaded, and at least a page
        assert per_page[kind]["db_rows_written_per_page"] > 0
    assert per_page["scan"]["cpu_seconds_per_page"]["ocr"] > 0
    assert "| peak pages/s |" in (tmp_path / "capacity.md").read_text()
