"""The batch aggregate's pure rules: status, percent and ETA from the jobs' expected work
(the job's cost model) and never backwards, the stream's seq and messages, and the batch
hub's fan-out."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.progress.arithmetic import Counts, StageCount, build_snapshot
from services.progress.batches import (
    Aggregate,
    JobSums,
    batch_message,
    batch_percent,
    batch_status,
    job_message,
    next_aggregate,
    plan_change,
)
from services.progress.costmodel import NO_WORK, StageWork, Work
from services.progress.hub import BatchHub
from shared.events import JobPhase, JobStatus
from shared.snapshots import BatchJobMessage, BatchSnapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = uuid.UUID(int=7)


def work(done: float, total: float) -> StageWork:
    """A batch's stage work with all of it in extraction."""
    return (Work(done, total), Work(0.0, 0.0), Work(0.0, 0.0))


def sums(**kw: Any) -> JobSums:
    base = {"jobs_total": 4, "jobs_queued": 4, "stages": work(0.0, 4.0)}
    return JobSums(**{**base, **kw})


@pytest.mark.parametrize(
    ("counts", "cancel_requested", "expected"),
    [
        ({"jobs_queued": 4}, False, JobStatus.QUEUED),
        ({"jobs_queued": 3, "jobs_running": 1}, False, JobStatus.PROCESSING),
        ({"jobs_queued": 3, "jobs_failed": 1}, False, JobStatus.PROCESSING),
        ({"jobs_queued": 0, "jobs_completed": 4}, False, JobStatus.COMPLETED),
        # Some failed or cancelled: completed, the counts tell the rest.
        ({"jobs_queued": 0, "jobs_completed": 1, "jobs_failed": 3}, False, JobStatus.COMPLETED),
        ({"jobs_queued": 0, "jobs_completed": 3, "jobs_cancelled": 1}, False, JobStatus.COMPLETED),
        ({"jobs_queued": 0, "jobs_failed": 4}, False, JobStatus.FAILED),
        ({"jobs_queued": 0, "jobs_failed": 3, "jobs_cancelled": 1}, False, JobStatus.CANCELLED),
        # The batch was cancelled: cancelled, even with jobs that completed before the cancel.
        ({"jobs_queued": 0, "jobs_completed": 2, "jobs_cancelled": 2}, True, JobStatus.CANCELLED),
        # Cancel requested but every job had ended otherwise already.
        ({"jobs_queued": 0, "jobs_completed": 4}, True, JobStatus.COMPLETED),
        ({"jobs_queued": 0, "jobs_failed": 4}, True, JobStatus.CANCELLED),
    ],
)
def test_batch_status(counts: dict[str, int], cancel_requested: bool, expected: JobStatus):
    assert batch_status(sums(**counts), cancel_requested=cancel_requested) == expected


def test_a_batch_without_jobs_stays_queued():
    assert batch_status(JobSums(), cancel_requested=False) == JobStatus.QUEUED
    assert batch_status(JobSums(), cancel_requested=True) == JobStatus.QUEUED


def test_percent_is_the_share_of_expected_work_and_never_goes_back():
    s = sums(jobs_queued=3, jobs_running=1, stages=work(5.0, 13.0))
    assert batch_percent(0.0, s, JobStatus.PROCESSING) == pytest.approx(38.5)
    # A job learns it has 300 pages: the raw share falls, the shown does not.
    s2 = replace(s, stages=work(5.0, 312.0))
    assert batch_percent(38.5, s2, JobStatus.PROCESSING) == 38.5
    # At most 99 until every job has ended; 100 then, whatever they ended as.
    s3 = replace(s, stages=work(12.99, 13.0))
    assert batch_percent(38.5, s3, JobStatus.PROCESSING) == 99.0
    assert batch_percent(99.0, s3, JobStatus.FAILED) == 100.0
    # Nothing sized at all yet: 0.
    assert batch_percent(0.0, sums(stages=NO_WORK), JobStatus.PROCESSING) == 0.0


def test_next_aggregate_counts_eta_and_finished_at():
    previous = Aggregate()
    s = sums(
        jobs_queued=2,
        jobs_running=1,
        jobs_completed=1,
        pages_done=12,
        pages_total=10,
        stages=work(10.0, 20.0),
        cost_usd=0.1234567,
    )
    now = T0 + timedelta(seconds=50)
    a = next_aggregate(previous, s, cancel_requested=False, created_at=T0, now=now)
    assert a.status == JobStatus.PROCESSING and a.percent == 50.0
    assert a.pages_done == 10  # never more than the total
    assert a.eta_seconds == 50 and a.cost_usd == 0.123457 and a.finished_at is None
    done = replace(s, jobs_queued=0, jobs_running=0, jobs_completed=4)
    end = next_aggregate(a, done, cancel_requested=False, created_at=T0, now=now)
    assert end.final and end.percent == 100 and end.eta_seconds is None
    assert end.finished_at == now
    later = next_aggregate(end, done, cancel_requested=False, created_at=T0, now=now + timedelta(1))
    assert later.finished_at == now  # kept


def _row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        **{k: getattr(Aggregate(), k) for k in Aggregate.__dataclass_fields__},
        "status": "queued",
        "seq": 0,
        "created_at": T0,
        "cancel_requested_at": None,
    }
    row.update(kw)
    return row


def _job_update(seq: int, status: JobStatus = JobStatus.PROCESSING) -> Any:
    return build_snapshot(
        job_id=str(uuid.UUID(int=1)),
        seq=seq,
        status=status,
        stage=JobPhase.EXTRACTING,
        percent=10.0,
        counts=Counts(extract=StageCount(3, 1, 0)),
        pages_total=3,
        stalled=False,
        error=None,
        updated_at=T0,
    )


def test_plan_change_numbers_job_messages_then_the_aggregate():
    s = sums(jobs_queued=3, jobs_running=1, stages=work(0.3, 6.0))
    change = plan_change(BATCH, _row(seq=4), s, [_job_update(2)], T0)
    assert change is not None
    assert [m["type"] for m in change.messages] == ["job", "batch"]
    assert [m["seq"] for m in change.messages] == [5, 6] and change.seq == 6
    # The same again: the job's message, but the aggregate did not change.
    row = _row(seq=6, **{**change.aggregate.__dict__, "status": change.aggregate.status.value})
    again = plan_change(BATCH, row, s, [_job_update(3)], T0 + timedelta(seconds=30))
    assert again is not None and [m["type"] for m in again.messages] == ["job"]
    assert again.seq == 7
    # Nothing changed at all: nothing to write.
    assert plan_change(BATCH, row, s, [], T0) is None


def test_the_first_refresh_always_writes_the_aggregate():
    change = plan_change(BATCH, _row(), JobSums(), [], T0)
    assert change is not None and [m["seq"] for m in change.messages] == [1]


def test_messages_match_the_contract_models():
    a = next_aggregate(
        Aggregate(), sums(jobs_running=1, jobs_queued=3), cancel_requested=False,
        created_at=T0, now=T0,
    )  # fmt: skip
    BatchSnapshot.model_validate(batch_message(BATCH, 3, a, T0))
    BatchJobMessage.model_validate(job_message(BATCH, 4, _job_update(1)))


async def test_batch_hub_drops_a_subscriber_that_falls_behind():
    hub = BatchHub(queue_size=2)
    other = uuid.UUID(int=8)
    with hub.subscribe(BATCH) as slow, hub.subscribe(other) as elsewhere:
        for seq in (1, 2, 3):
            hub.publish(job_message(BATCH, seq, _job_update(seq)))
        assert slow.overflowed and elsewhere.queue.empty()
        assert [(await slow.get(0))["seq"] for _ in range(2)] == [1, 2]  # type: ignore[index]
        assert await elsewhere.get(0.01) is None
    assert not hub._subs
    await asyncio.sleep(0)


def test_only_jobs_with_a_batch_and_a_new_update_touch_it():
    from types import SimpleNamespace

    from services.progress.batch_refresh import _touched, _updates_of
    from services.progress.models import Outcome

    shared = Outcome()  # the sweep's: one outcome for several jobs
    a, b = uuid.UUID(int=1), uuid.UUID(int=2)
    update_a = {**_job_update(3), "job_id": str(a)}
    update_b = {**_job_update(5), "job_id": str(b)}
    shared.updates += [update_a, update_b]

    def job(job_id: uuid.UUID, batch: uuid.UUID | None, outcome: Outcome) -> Any:
        return SimpleNamespace(row={"batch_id": batch}, job_id=job_id, outcome=outcome)

    in_batch = job(a, BATCH, shared)
    other_batch = job(b, uuid.UUID(int=9), shared)
    no_batch = job(uuid.UUID(int=3), None, Outcome(updates=[_job_update(1)]))
    quiet = job(uuid.UUID(int=4), BATCH, Outcome())
    touched = _touched([in_batch, other_batch, no_batch, quiet])
    assert touched == {BATCH: [in_batch], uuid.UUID(int=9): [other_batch]}
    # Each batch gets its own jobs' updates, not the others' in the shared outcome.
    assert _updates_of(touched[BATCH]) == [update_a]
    assert _updates_of([in_batch, in_batch]) == [update_a]
