"""Progress's part of AI analysis, without a database: spend counted once, the budget
sentence making a job partial, the document summary a job waits for, the result section."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from services.progress.analysis import (
    JobSpend,
    add_spend,
    analysis_section,
    apply_spend,
    awaits_summary,
    summary_request,
)
from services.progress.arithmetic import Counts, build_snapshot
from services.progress.transitions import JobState, advance
from shared.analysis import AnalysisTask, LlmTaskResult, LlmTaskStatus
from shared.events import (
    Analysis,
    DocumentSummarize,
    DocumentSummarized,
    DocumentUploaded,
    JobPhase,
    JobStatus,
)
from shared.snapshots import ProgressSnapshot

SENTENCE = "The budget of $0.50 was reached after 2 of 3 chunks"
SUMMARY_JOB = json.dumps({"backend": "llm", "tasks": ["summary"], "max_cost_usd": 0.5})


def row(analysis: str | None = SUMMARY_JOB, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": uuid.uuid4(),
        "tenant": "acme",
        "status": "processing",
        "stage": "analyzing",
        "percent": 50.0,
        "format": "pdf",
        "pages_total": 1,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "partial": False,
        "stalled": False,
        "analysis": analysis,
        **extra,
    }


def analysis(tokens: int, cost: float, status: LlmTaskStatus = LlmTaskStatus.OK) -> Analysis:
    reason = SENTENCE if status is LlmTaskStatus.OVER_BUDGET else None
    return Analysis(
        analyzer="builtin/1",
        language="en",
        word_count=1,
        keywords=[],
        entities=[],
        tokens=tokens,
        cost_usd=cost,
        llm={AnalysisTask.SUMMARY: LlmTaskResult(status=status, reason=reason, value=None)},
    )


def test_spend_sums_chunks_and_keeps_the_first_budget_sentence() -> None:
    job = uuid.uuid4()
    spend: dict[uuid.UUID, JobSpend] = {}
    add_spend(spend, job, analysis(100, 0.001))
    add_spend(spend, job, analysis(0, 0.0, LlmTaskStatus.OVER_BUDGET))
    add_spend(spend, job, analysis(50, 0.0005))
    assert spend[job].tokens == 150 and abs(spend[job].cost_usd - 0.0015) < 1e-12
    assert spend[job].note == SENTENCE
    state = JobState.of(row())
    apply_spend(state, spend[job])
    assert state.tokens == 150 and state.partial and state.error == SENTENCE


def test_a_job_that_asked_for_a_summary_waits_for_it_and_asks_once() -> None:
    r = row()
    state = JobState.of(r)
    assert awaits_summary(r, state)
    ask = summary_request(r, state)
    assert isinstance(ask, DocumentSummarize) and ask.tenant == "acme"
    assert summary_request(r, state) is None  # asked already: the flag is saved with the row
    plain = row(json.dumps({"backend": "llm", "tasks": ["classify"], "labels": ["a", "b"]}))
    assert not awaits_summary(plain, JobState.of(plain))
    assert not awaits_summary(row(None), JobState.of(row(None)))


def test_a_lost_request_is_sent_again_but_its_own_echo_asks_nothing() -> None:
    r = row(summary_requested_at=datetime.now(UTC))
    state = JobState.of(r)
    advance(state, DocumentSummarize(job_id=r["job_id"], tenant="acme"))  # the echo
    assert summary_request(r, state) is None
    advance(state, DocumentUploaded(job_id=r["job_id"], document_uri="blob://x"))  # a retry
    assert isinstance(summary_request(r, state), DocumentSummarize)


def test_the_first_document_summary_counts_once() -> None:
    r = row(summary_requested_at=datetime.now(UTC))
    state = JobState.of(r)
    answer = DocumentSummarized(
        job_id=r["job_id"],
        status=LlmTaskStatus.OK,
        summary="A short letter.",
        cost_usd=0.002,
        tokens=300,
    )
    advance(state, answer)
    advance(state, answer.model_copy(update={"summary": "another"}))  # a redelivery
    assert state.tokens == 300 and state.cost_usd == 0.002
    assert state.document_summary is not None
    assert state.document_summary["summary"] == "A short letter."
    assert not awaits_summary(r, state) and not state.partial


def test_a_summary_the_budget_refused_makes_the_job_partial() -> None:
    r = row()
    state = JobState.of(r)
    refused = DocumentSummarized(
        job_id=r["job_id"], status=LlmTaskStatus.OVER_BUDGET, reason=SENTENCE
    )
    advance(state, refused)
    assert state.partial and state.error == SENTENCE
    section = analysis_section(r, state)
    assert section is not None and section["note"] == SENTENCE
    assert section["document_summary"]["status"] == "over_budget"


def test_a_row_round_trips_through_job_state() -> None:
    stored = {"status": "ok", "summary": "s", "reason": None, "cost_usd": 0.1, "tokens": 9}
    r = row(tokens=9, cost_usd=0.1, document_summary=json.dumps(stored))
    state = JobState.of(r)
    assert state.tokens == 9 and state.document_summary == stored
    assert analysis_section(row(None), JobState.of(row(None))) is None


def test_snapshots_carry_tokens_and_cost() -> None:
    snapshot = build_snapshot(
        job_id=str(uuid.uuid4()),
        seq=3,
        status=JobStatus.PROCESSING,
        stage=JobPhase.ANALYZING,
        percent=60,
        counts=Counts(),
        pages_total=1,
        stalled=False,
        error=None,
        updated_at=None,
        tokens=420,
        cost_usd=0.0042,
    )
    model = ProgressSnapshot.model_validate(snapshot)
    assert model.tokens == 420 and model.cost_usd == 0.0042
