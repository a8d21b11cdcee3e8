"""The learned stage costs (stage_costs): what completed jobs teach, and reading them back.

A completed job's wall time, from its start to its last item, in the seconds it would have
taken alone (divided by how many jobs ran beside it, so that a busy hour does not teach that
every page is dear, and a batch's jobs weigh what they ask of the machine), is cut into three
phases that follow one another: extraction (to the last page extracted), the OCR that
outlasts it (to the last page ocred) and the analysis that outlasts both (to the last chunk
analyzed). Each phase's seconds per unit of its stage's work, the share of its units done
before the phase began (overlap) and its units per page are folded into a moving average per
stage and format, weighted by the job's pages: `weight` counts the pages the average stands
for, capped at WEIGHT_CAP so that the average follows the running system. The fold is one upsert, so
replicas learning at once each add their jobs.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from services.progress.costmodel import SCAN_SUFFIX, StageCost, seed_costs
from services.progress.store.base import Conn
from shared.events import Stage

# The pages the moving average stands for: older jobs fade out beyond that.
WEIGHT_CAP = 300.0

# Per stage and cost key (the format, with $3 appended when most pages needed OCR), what the
# completed jobs among $1 took, in the seconds they would have
# taken alone: each phase divided by the number of jobs the job ran beside on average (itself
# included; jobs started within $2 before it, the deadline, so the index bounds the scan).
# Ignored: jobs a dead-letter replay revived (their wall time includes the wait for it).
_SAMPLES = """
WITH j AS (
    SELECT job_id, coalesce(format, '') AS format, pages_total, started_at, finished_at
    FROM jobs
    WHERE job_id = ANY($1::uuid[]) AND status = 'completed' AND started_at IS NOT NULL
      AND finished_at > started_at AND pages_total > 0 AND revived_at IS NULL
), load AS (
    SELECT j.job_id,
           greatest(1.0, sum(extract(epoch FROM
               least(coalesce(k.finished_at, now()), j.finished_at)
               - greatest(k.started_at, j.started_at)))
             / extract(epoch FROM j.finished_at - j.started_at)) AS jobs
    FROM j JOIN jobs k
      ON k.started_at < j.finished_at AND k.started_at > j.started_at - $2::interval
     AND coalesce(k.finished_at, now()) > j.started_at
    GROUP BY j.job_id, j.started_at, j.finished_at
), pages AS (
    SELECT p.job_id, p.ocr_pending, p.ocred_at, p.extracted_at,
           max(p.extracted_at) OVER (PARTITION BY p.job_id) AS ex_end
    FROM job_pages p JOIN j USING (job_id)
), ocr AS (
    SELECT job_id, min(ex_end) AS ex_end,
           count(*) FILTER (WHERE ocr_pending AND ocred_at IS NOT NULL) AS units,
           count(*) FILTER (WHERE ocr_pending AND ocred_at <= ex_end) AS early,
           max(ocred_at) FILTER (WHERE ocr_pending) AS ocr_end
    FROM pages GROUP BY job_id
), phases AS (
    SELECT j.job_id, j.pages_total, j.started_at, o.ex_end, o.units, o.early,
           j.format || CASE WHEN 2 * o.units > j.pages_total THEN $3::text ELSE '' END AS format,
           coalesce(o.ocr_end, o.ex_end) AS ocr_end,
           greatest(o.ex_end, coalesce(o.ocr_end, o.ex_end)) AS upstream_end, l.jobs
    FROM j JOIN ocr o USING (job_id) JOIN load l USING (job_id)
), chunks AS (
    SELECT ph.job_id, count(*) AS units,
           count(*) FILTER (WHERE c.analyzed_at <= ph.upstream_end) AS early,
           max(c.analyzed_at) AS an_end
    FROM phases ph JOIN job_chunks c USING (job_id) GROUP BY ph.job_id
), samples AS (
    SELECT 'extract' AS stage, format, ex_end - started_at AS span,
           pages_total AS units, 0 AS early, pages_total AS pages, jobs
    FROM phases
    UNION ALL
    SELECT 'ocr', format, ocr_end - ex_end, units, early, pages_total, jobs FROM phases
    UNION ALL
    SELECT 'analyze', ph.format, coalesce(c.an_end - ph.upstream_end, interval '0'),
           coalesce(c.units, 0), coalesce(c.early, 0), ph.pages_total, ph.jobs
    FROM phases ph LEFT JOIN chunks c USING (job_id)
)
SELECT stage, format,
       sum(greatest(extract(epoch FROM span), 0) / jobs)::float8 AS seconds,
       sum(units)::float8 AS units, sum(early)::float8 AS early, sum(pages)::float8 AS pages
FROM samples WHERE span IS NOT NULL GROUP BY stage, format
"""

# Fold samples into the averages. A sample without units of its stage (a text PDF's OCR:
# samples 0) teaches only its units per page.
_FOLD = """
INSERT INTO stage_costs AS s
    (stage, format, seconds_per_unit, overlap, units_per_page, weight, samples)
SELECT x.stage, x.format, x.spu, x.overlap, x.upp, least(x.pages, $7), x.timed
FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
            $8::int[])
     AS x(stage, format, spu, overlap, upp, pages, timed)
ON CONFLICT (stage, format) DO UPDATE SET
    seconds_per_unit = CASE WHEN EXCLUDED.samples = 0 THEN s.seconds_per_unit
        ELSE s.seconds_per_unit + (EXCLUDED.seconds_per_unit - s.seconds_per_unit)
             * EXCLUDED.weight / (s.weight + EXCLUDED.weight) END,
    overlap = CASE WHEN EXCLUDED.samples = 0 THEN s.overlap
        ELSE s.overlap + (EXCLUDED.overlap - s.overlap)
             * EXCLUDED.weight / (s.weight + EXCLUDED.weight) END,
    units_per_page = s.units_per_page + (EXCLUDED.units_per_page - s.units_per_page)
                     * EXCLUDED.weight / (s.weight + EXCLUDED.weight),
    weight = least(s.weight + EXCLUDED.weight, $7),
    samples = s.samples + EXCLUDED.samples,
    updated_at = now()
"""


def _sample(row: asyncpg.Record) -> tuple[Any, ...]:
    """One (stage, format) sample as _FOLD's columns. Without units, a new row starts from the
    seed's seconds per unit and overlap (an existing one keeps its own)."""
    stage, fmt = Stage(row["stage"]), row["format"]
    units, pages = row["units"], row["pages"]
    seed = seed_costs(fmt).of(stage)
    if units > 0:
        spu, overlap = row["seconds"] / units, min(1.0, row["early"] / units)
    else:
        spu, overlap = seed.seconds_per_unit, seed.overlap
    return (stage.value, fmt, spu, overlap, units / pages, pages, int(units > 0))


async def learn(
    conn: Conn, job_ids: list[uuid.UUID], horizon: timedelta = timedelta(hours=1)
) -> int:
    """Fold what the completed jobs among job_ids took into the stage costs; returns how many
    (stage, format) averages moved. `horizon`: the longest a job runs (the job deadline)."""
    if not job_ids:
        return 0
    rows = await conn.fetch(_SAMPLES, job_ids, horizon, SCAN_SUFFIX)
    samples = [_sample(r) for r in rows]
    if not samples:
        return 0
    stage, fmt, spu, overlap, upp, pages, timed = (list(c) for c in zip(*samples, strict=True))
    await conn.execute(_FOLD, stage, fmt, spu, overlap, upp, pages, WEIGHT_CAP, timed)
    return len(samples)


async def read_costs(conn: Conn) -> dict[tuple[Stage, str], StageCost]:
    """Every learned cost, by (stage, format)."""
    rows = await conn.fetch(
        "SELECT stage, format, seconds_per_unit, overlap, units_per_page FROM stage_costs"
    )
    return {
        (Stage(r["stage"]), r["format"]): StageCost(
            r["seconds_per_unit"], r["overlap"], r["units_per_page"]
        )
        for r in rows
    }
