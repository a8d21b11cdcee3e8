"""Item rows (pages, OCR results, chunks), each write returning the counter deltas of the
rows it wrote first; and the results assembled from them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from services.progress.analysis import Spend, add_spend
from services.progress.store.base import Deltas, add_delta, clean
from services.progress.transitions import (
    CHUNK_ANALYZED,
    page_extracted_delta,
    page_ocred_delta,
)
from shared.events import AnalyzedChunk, ChunksAnalyzed, PageExtracted, PageOcred

# --- items: each write returns the counter deltas of the rows it wrote first -------------

_PAGES_EXTRACTED = """
INSERT INTO job_pages AS p (job_id, page, extracted_at, has_text_layer, text, text_chunks,
                            ocr_pending, error, headings)
SELECT s.job_id, s.page, s.at, s.htl, s.text, s.chunks, s.pending, s.error, s.headings::jsonb
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::bool[], $5::text[], $6::int[],
            $7::bool[], $8::text[], $9::text[])
     AS s(job_id, page, at, htl, text, chunks, pending, error, headings)
ON CONFLICT (job_id, page) DO UPDATE SET
    extracted_at = EXCLUDED.extracted_at, has_text_layer = EXCLUDED.has_text_layer,
    text = EXCLUDED.text, text_chunks = EXCLUDED.text_chunks,
    ocr_pending = EXCLUDED.ocr_pending, error = EXCLUDED.error, headings = EXCLUDED.headings
WHERE p.extracted_at IS NULL
RETURNING p.job_id, p.page, p.ocred_at IS NOT NULL AS ocred, p.ocr_error IS NOT NULL AS ocr_failed
"""

_PAGES_OCRED = """
INSERT INTO job_pages AS p (job_id, page, ocred_at, ocr_text, ocr_chunks, ocr_seconds, ocr_error,
                            ocr_confidence)
SELECT s.job_id, s.page, s.at, s.text, s.chunks, s.secs, s.error, s.confidence
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::int[], $6::real[],
            $7::text[], $8::real[]) AS s(job_id, page, at, text, chunks, secs, error, confidence)
ON CONFLICT (job_id, page) DO UPDATE SET
    ocred_at = EXCLUDED.ocred_at, ocr_text = EXCLUDED.ocr_text,
    ocr_chunks = EXCLUDED.ocr_chunks, ocr_seconds = EXCLUDED.ocr_seconds,
    ocr_error = EXCLUDED.ocr_error, ocr_confidence = EXCLUDED.ocr_confidence
WHERE p.ocred_at IS NULL
RETURNING p.job_id, p.page,
          p.extracted_at IS NOT NULL AND coalesce(p.ocr_pending, false) AS awaited
"""

_CHUNKS_ANALYZED = """
INSERT INTO job_chunks (chunk_id, job_id, page, source, idx, start_offset, end_offset, text,
                        analysis, cost_usd, analyzed_at, tokens)
SELECT s.chunk_id, s.job_id, s.page, s.source, s.idx, s.start_offset, s.end_offset, s.text,
       s.analysis::jsonb, s.cost_usd, s.at, s.tokens
FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::int[], $6::int[], $7::int[],
            $8::text[], $9::text[], $10::float8[], $11::timestamptz[], $12::int[])
     AS s(chunk_id, job_id, page, source, idx, start_offset, end_offset, text, analysis,
          cost_usd, at, tokens)
ON CONFLICT DO NOTHING
RETURNING job_id, chunk_id
"""


def headings_json(event: PageExtracted) -> str | None:
    """The page's headings as JSON text (NUL characters removed, as from all stored text), or
    None when it names none."""
    if not event.headings:
        return None
    headings = clean([h.model_dump() for h in event.headings])  # before \u0000 escapes hide NUL
    return json.dumps(headings, ensure_ascii=False)


async def write_pages_extracted(
    conn: asyncpg.Connection, events: list[PageExtracted], deltas: Deltas
) -> None:
    by_key: dict[tuple[uuid.UUID, int], PageExtracted] = {}
    for ev in events:
        by_key.setdefault((ev.job_id, ev.page), ev)  # a duplicate in the window changes nothing
    evs = [by_key[k] for k in sorted(by_key)]
    rows = await conn.fetch(
        _PAGES_EXTRACTED,
        [e.job_id for e in evs],
        [e.page for e in evs],
        [e.occurred_at for e in evs],
        [e.has_text_layer for e in evs],
        [clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_pending for e in evs],
        [clean(e.error) for e in evs],
        [headings_json(e) for e in evs],
    )
    for row in rows:  # only the pages written first here
        ev = by_key[(row["job_id"], row["page"])]
        delta = page_extracted_delta(ev, ocred=row["ocred"], ocr_failed=row["ocr_failed"])
        add_delta(deltas, ev.job_id, delta)


async def write_pages_ocred(
    conn: asyncpg.Connection, events: list[PageOcred], deltas: Deltas
) -> None:
    by_key: dict[tuple[uuid.UUID, int], PageOcred] = {}
    for ev in events:
        by_key.setdefault((ev.job_id, ev.page), ev)
    evs = [by_key[k] for k in sorted(by_key)]
    rows = await conn.fetch(
        _PAGES_OCRED,
        [e.job_id for e in evs],
        [e.page for e in evs],
        [e.occurred_at for e in evs],
        [clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_seconds for e in evs],
        [clean(e.error) for e in evs],
        [e.confidence for e in evs],
    )
    for row in rows:
        ev = by_key[(row["job_id"], row["page"])]
        add_delta(deltas, ev.job_id, page_ocred_delta(ev, awaited=row["awaited"]))


async def write_chunks_analyzed(
    conn: asyncpg.Connection,
    events: list[ChunksAnalyzed],
    deltas: Deltas,
    spend: Spend | None = None,
) -> None:
    """Each chunk counts once, whichever message brought it first: its analysis, and (into
    `spend`) its AI tokens and cost and a budget sentence when it was not analysed."""
    by_id: dict[uuid.UUID, tuple[ChunksAnalyzed, AnalyzedChunk]] = {}
    for ev in events:
        for item in ev.items:
            by_id.setdefault(item.chunk.chunk_id, (ev, item))
    rows_in = [by_id[k] for k in sorted(by_id)]
    rows = await conn.fetch(
        _CHUNKS_ANALYZED,
        [i.chunk.chunk_id for _, i in rows_in],
        [e.job_id for e, _ in rows_in],
        [i.chunk.page for _, i in rows_in],
        [i.chunk.source.value for _, i in rows_in],
        [i.chunk.index for _, i in rows_in],
        [i.chunk.start for _, i in rows_in],
        [i.chunk.end for _, i in rows_in],
        [clean(i.chunk.text) for _, i in rows_in],
        [json.dumps(clean(i.analysis.model_dump(mode="json"))) for _, i in rows_in],
        [i.analysis.cost_usd for _, i in rows_in],
        [e.occurred_at for e, _ in rows_in],
        [i.analysis.tokens for _, i in rows_in],
    )
    for row in rows:
        add_delta(deltas, row["job_id"], CHUNK_ANALYZED)
        if spend is not None:
            add_spend(spend, row["job_id"], by_id[row["chunk_id"]][1].analysis)


# --- results ------------------------------------------------------------------------------


async def read_items(
    conn: asyncpg.Connection, job_ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, list[asyncpg.Record]], dict[uuid.UUID, list[asyncpg.Record]]]:
    """Every page and chunk row of the jobs, grouped by job (two statements)."""
    pages: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in job_ids}
    chunks: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in job_ids}
    for r in await conn.fetch("SELECT * FROM job_pages WHERE job_id = ANY($1::uuid[])", job_ids):
        pages[r["job_id"]].append(r)
    for r in await conn.fetch("SELECT * FROM job_chunks WHERE job_id = ANY($1::uuid[])", job_ids):
        chunks[r["job_id"]].append(r)
    return pages, chunks


async def insert_results(
    conn: asyncpg.Connection, results: Iterable[tuple[uuid.UUID, dict[str, Any]]]
) -> None:
    """First write wins: a job's result is stored once."""
    await conn.executemany(
        "INSERT INTO job_results (job_id, result) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING",
        list(results),
    )
