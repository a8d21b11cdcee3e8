"""Item rows (pages, OCR results, chunks), each write returning the counter deltas of the
rows it wrote first; and the results assembled from them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from services.progress.analysis import Spend, add_spend
from services.progress.result import ItemTotals
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
                            ocr_pending, error, headings, tables)
SELECT s.job_id, s.page, s.at, s.htl, s.text, s.chunks, s.pending, s.error, s.headings::jsonb,
       s.tables::jsonb
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::bool[], $5::text[], $6::int[],
            $7::bool[], $8::text[], $9::text[], $10::text[])
     AS s(job_id, page, at, htl, text, chunks, pending, error, headings, tables)
ON CONFLICT (job_id, page) DO UPDATE SET
    extracted_at = EXCLUDED.extracted_at, has_text_layer = EXCLUDED.has_text_layer,
    text = EXCLUDED.text, text_chunks = EXCLUDED.text_chunks,
    ocr_pending = EXCLUDED.ocr_pending, error = EXCLUDED.error, headings = EXCLUDED.headings,
    tables = EXCLUDED.tables
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


def tables_json(event: PageExtracted) -> str | None:
    """The page's tables as JSON text (NUL characters removed), or None when it has none;
    `first_row` and `truncated` only where they say something."""
    if not event.tables:
        return None
    tables = [
        {"index": t.index, **t.model_dump(exclude_defaults=True, exclude={"index"})}
        for t in event.tables
    ]
    return json.dumps(clean(tables), ensure_ascii=False)


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
        [tables_json(e) for e in evs],
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


_ITEM_TOTALS = """
SELECT j.job_id,
       greatest(p.last_at, c.last_at) AS last_at,
       coalesce(p.ocr_seconds, 0) AS ocr_seconds,
       coalesce(c.cost_usd, 0) AS cost_usd,
       coalesce(c.chunks, 0) AS chunks
FROM unnest($1::uuid[]) AS j(job_id)
LEFT JOIN LATERAL (
    SELECT greatest(max(extracted_at), max(ocred_at)) AS last_at,
           sum(ocr_seconds::float8 ORDER BY page) AS ocr_seconds
    FROM job_pages WHERE job_id = j.job_id
) p ON true
LEFT JOIN LATERAL (
    SELECT max(analyzed_at) AS last_at,
           sum(cost_usd ORDER BY page, source DESC, idx) AS cost_usd,
           count(*) AS chunks
    FROM job_chunks WHERE job_id = j.job_id
) c ON true
"""


async def item_totals(
    conn: asyncpg.Connection, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, ItemTotals]:
    """Per job, what the head of its result needs from its page and chunk rows (one
    statement; no text is read)."""
    rows = await conn.fetch(_ITEM_TOTALS, job_ids)
    return {
        r["job_id"]: ItemTotals(
            last_at=r["last_at"],
            ocr_seconds=float(r["ocr_seconds"]),
            cost_usd=float(r["cost_usd"]),
            chunks=int(r["chunks"]),
        )
        for r in rows
    }


# The result's text, pages, chunks and failed_pages, assembled in the database from the rows:
# a long document's result is tens of MB that this process never holds. A page shows its text
# layer if it has one (its OCR text alongside), else its OCR text, with its OCR confidence
# (0-100, one decimal), its headings and its tables when it has them; "source" sorts text-layer
# before ocr ("text-layer" > "ocr", hence DESC).
_INSERT_RESULT = """
WITH p AS (
    SELECT page,
           coalesce(text, '') AS text,
           coalesce(ocr_text, '') AS ocr_text,
           coalesce(has_text_layer, false) OR coalesce(text, '') <> '' AS has_layer,
           ocred_at IS NOT NULL OR coalesce(ocr_pending, false) AS ocr_side,
           nullif(concat_ws('; ', nullif(error, ''), nullif(ocr_error, '')), '') AS err,
           ocr_confidence,
           nullif(headings, '[]'::jsonb) AS headings,
           nullif(tables, '[]'::jsonb) AS tables
    FROM job_pages WHERE job_id = $1
), e AS (
    SELECT page, err, ocr_confidence, headings, tables,
           CASE WHEN has_layer OR NOT ocr_side THEN text ELSE ocr_text END AS main_text,
           CASE WHEN has_layer OR NOT ocr_side THEN 'text-layer' ELSE 'ocr' END AS source,
           CASE WHEN has_layer AND ocr_text <> '' THEN ocr_text END AS extra_ocr
    FROM p
)
INSERT INTO job_results (job_id, result)
SELECT $1, $2::jsonb || jsonb_build_object(
    'text', coalesce((
        SELECT string_agg(part.t, E'\n\n' ORDER BY e.page, part.n)
        FROM e CROSS JOIN LATERAL (VALUES (1, e.main_text), (2, e.extra_ocr)) AS part(n, t)
        WHERE part.t <> ''), ''),
    'pages', coalesce((
        SELECT jsonb_agg(
            jsonb_build_object('number', page, 'text', main_text, 'source', source)
            || CASE WHEN extra_ocr IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('ocr_text', extra_ocr) END
            || CASE WHEN err IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('error', err) END
            || CASE WHEN ocr_confidence IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('ocr_confidence', round(ocr_confidence::numeric, 1))
               END
            || CASE WHEN headings IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('headings', headings) END
            || CASE WHEN tables IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('tables', tables) END
            ORDER BY page)
        FROM e), '[]'::jsonb),
    'failed_pages', coalesce((
        SELECT jsonb_agg(jsonb_build_object('page', page, 'reason', err) ORDER BY page)
        FROM e WHERE err IS NOT NULL), '[]'::jsonb),
    'chunks', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
            'chunk_id', chunk_id::text, 'page', page, 'source', source, 'index', idx,
            'start', start_offset, 'end', end_offset, 'text', text, 'analysis', analysis)
            ORDER BY page, source DESC, idx)
        FROM job_chunks WHERE job_id = $1), '[]'::jsonb))
ON CONFLICT (job_id) DO NOTHING
"""


async def insert_results(
    conn: asyncpg.Connection, results: Iterable[tuple[uuid.UUID, dict[str, Any]]]
) -> None:
    """Store each job's result: its head (result.result_head) with the text, pages, chunks and
    failed pages the database assembles from the job's rows. First write wins: a job's result
    is stored once."""
    await conn.executemany(_INSERT_RESULT, list(results))
