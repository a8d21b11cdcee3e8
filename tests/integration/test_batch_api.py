"""The batch API and URL jobs against the real PostgreSQL and RabbitMQ: batches of files and of
URLs (1,000 in one request), their limits and refusals, labels on jobs and their filter, batch
job lists, the NDJSON result stream, and the batch cancel with its tenant isolation."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.ingest.models import JobOptions
from shared.events import DocumentUploaded, JobCancelled
from shared.settings import Settings
from tests.conftest import delete_bus
from tests.integration.test_ingest_api import (
    KEY,
    OTHER_KEY,
    auth,
    bus_tap,
    make_pdf,
    running_ingest,
)

pytestmark = pytest.mark.integration

BATCH_KEY = "batch-key"


@pytest.fixture(scope="module")
def batch_settings(test_settings: Settings) -> Settings:
    # A tenant of its own (lists do not interleave with other tests'), a bus prefix of its
    # own (the session stack's workers never pick these jobs up) and a database of its own:
    # the outbox is the database's, so the session stack's ingest relay would otherwise publish
    # these jobs' events to the stack's exchange, never to this prefix's.
    return test_settings.model_copy(
        update={
            "api_keys": f"{test_settings.api_keys},{BATCH_KEY}=batcher",
            "bus_prefix": f"{test_settings.bus_prefix}_batch",
            "database_url": f"{test_settings.database_url}_batch",
            "batch_max_files": 3,
        }
    )


@pytest.fixture(scope="module")
async def db_pool(batch_settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The batch ingest's own database (the session's db_pool: PostgreSQL is reachable)."""
    from shared.db import create_pool, drop_database

    pool = await create_pool(batch_settings.database_url, max_size=4)
    yield pool
    await pool.close()
    await drop_database(batch_settings.database_url)


@pytest.fixture(scope="module")
async def client(
    batch_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(batch_settings) as c:
        yield c
    await delete_bus(batch_settings)


def urls(n: int, host: str = "docs.example.com") -> list[str]:
    return [f"https://{host}/files/doc-{i:04d}.pdf" for i in range(n)]


# --- submitting -------------------------------------------------------------------------------


async def test_a_batch_of_1000_urls_is_one_request_with_every_job_in_order(
    client: httpx.AsyncClient, batch_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    wanted = urls(1000)
    async with bus_tap(batch_settings, "document.uploaded") as tap:
        started = time.monotonic()
        r = await client.post(
            "/v1/batches",
            headers=auth(BATCH_KEY),
            json={
                "urls": wanted,
                "name": "back office",
                "labels": {"project": "thousand"},
                "options": {"priority": 3, "ocr": "never"},
            },
        )
        elapsed = time.monotonic() - started
        assert r.status_code == 202, r.text
        body = r.json()
        batch_id = uuid.UUID(body["batch_id"])
        assert [j["url"] for j in body["jobs"]] == wanted
        assert body["jobs"][7]["filename"] == "doc-0007.pdf"
        assert body["links"]["events"].endswith(f"/v1/batches/{batch_id}/events")
        job_ids = [uuid.UUID(j["job_id"]) for j in body["jobs"]]
        assert len(set(job_ids)) == 1000
        await tap.wait_for(lambda: len(tap.messages) >= 1000, timeout=30)
    events = [DocumentUploaded.model_validate_json(m.body) for m in tap.messages]
    assert {e.job_id for e in events} == set(job_ids)
    assert all(e.batch_id == batch_id and e.priority == 3 for e in events)
    rows = await db_pool.fetch(
        "SELECT job_id, tenant, labels, ocr_mode, batch_id FROM jobs WHERE batch_id = $1 "
        "ORDER BY created_at",
        batch_id,
    )
    assert [r["job_id"] for r in rows] == job_ids  # submitted order kept
    assert {(r["tenant"], r["ocr_mode"]) for r in rows} == {("batcher", "never")}
    assert rows[0]["labels"] == {"project": "thousand"}
    batch = await db_pool.fetchrow("SELECT * FROM batches WHERE batch_id = $1", batch_id)
    assert batch["name"] == "back office"
    # Every option the batch's jobs get, defaults included (never the password).
    given = JobOptions(priority=3, ocr="never").model_dump(mode="json", exclude={"password"})
    assert batch["options"] == given and given["priority"] == 3 and given["ocr"] == "never"
    assert elapsed < 15, f"1,000 URLs took {elapsed:.1f} s"


async def test_a_batch_of_files_and_urls_in_one_form(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    files = [
        ("files", ("one.pdf", make_pdf("one"), "application/pdf")),
        ("files", ("two.pdf", make_pdf("two"), "application/pdf")),
    ]
    r = await client.post(
        "/v1/batches",
        headers=auth(BATCH_KEY),
        files=files,
        data={
            "name": "dealer folder",
            "labels": json.dumps({"dealer": "42"}),
            "urls": "https://docs.example.com/a.pdf\nhttps://docs.example.com/b.pdf",
            "priority": "5",
        },
    )
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["filename"] for j in jobs] == ["one.pdf", "two.pdf", "a.pdf", "b.pdf"]
    assert [j["url"] for j in jobs][:2] == [None, None]
    rows = await db_pool.fetch(
        "SELECT format, priority, labels, document_uri FROM jobs WHERE batch_id = $1 "
        "ORDER BY created_at",
        uuid.UUID(r.json()["batch_id"]),
    )
    assert [row["format"] for row in rows] == ["pdf", "pdf", None, None]
    assert {row["priority"] for row in rows} == {5}
    assert all(row["labels"] == {"dealer": "42"} for row in rows)
    owners = await db_pool.fetchval(
        "SELECT count(*) FROM blob_owners WHERE tenant = 'batcher' AND blob_uri = ANY($1)",
        [row["document_uri"] for row in rows[:2]],
    )
    assert owners == 2  # the extractor will read these blobs for this tenant


async def test_batch_refusals_say_why(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    before = await db_pool.fetchval("SELECT count(*) FROM batches WHERE tenant = 'batcher'")
    r = await client.post("/v1/batches", headers=auth(BATCH_KEY), json={"urls": urls(1001)})
    assert r.status_code == 413
    assert "at most 1000 URLs" in r.json()["detail"]
    r = await client.post(
        "/v1/batches",
        headers=auth(BATCH_KEY),
        json={"urls": ["https://docs.example.com/a.pdf", "ftp://docs.example.com/b.pdf"]},
    )
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "urls", "1"]
    assert "'ftp'" in error["msg"] and "http and https" in error["msg"]
    r = await client.post(
        "/v1/batches", headers=auth(BATCH_KEY), json={"urls": ["http://docs.example.com:8080/x"]}
    )
    assert r.status_code == 422 and "port 8080" in r.text
    r = await client.post(
        "/v1/batches", headers={**auth(BATCH_KEY), "Content-Type": "text/plain"}, content=b"x"
    )
    assert r.status_code == 422 and "multipart/form-data" in r.text
    r = await client.post("/v1/batches", headers=auth(BATCH_KEY), json={"urls": []})
    assert r.status_code == 422 and "no documents" in r.text
    r = await client.post(
        "/v1/batches",
        headers=auth(BATCH_KEY),
        json={"urls": urls(1), "labels": {"bad key!": "x"}},
    )
    assert r.status_code == 422 and "label key" in r.text
    four = [("files", (f"{i}.pdf", make_pdf(str(i)), "application/pdf")) for i in range(4)]
    r = await client.post("/v1/batches", headers=auth(BATCH_KEY), files=four)
    assert r.status_code == 413 and "at most 3 files" in r.json()["detail"]
    odd = [("files", ("notes.bin", b"\x00\x01\x02 not a document", "application/pdf"))]
    r = await client.post("/v1/batches", headers=auth(BATCH_KEY), files=odd)
    assert r.status_code == 415 and "notes.bin" in r.json()["detail"]
    after = await db_pool.fetchval("SELECT count(*) FROM batches WHERE tenant = 'batcher'")
    assert after == before  # nothing recorded for a refused batch


# --- URL jobs and labels ----------------------------------------------------------------------


async def test_url_job_over_http_with_labels(
    client: httpx.AsyncClient, batch_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    url = "https://docs.example.com/reports/q3%20report.pdf"
    async with bus_tap(batch_settings, "document.uploaded") as tap:
        r = await client.post(
            "/v1/jobs",
            headers={**auth(BATCH_KEY), "Idempotency-Key": "url-job-1"},
            json={"url": url, "priority": 2, "labels": {"source": "crawler"}},
        )
        assert r.status_code == 202, r.text
        job_id = uuid.UUID(r.json()["job_id"])
        assert r.json()["filename"] == "q3 report.pdf"
        await tap.wait_for(lambda: len(tap.messages) >= 1)
    event = DocumentUploaded.model_validate_json(tap.messages[0].body)
    assert (event.job_id, event.document_uri, event.tenant) == (job_id, url, "batcher")
    again = await client.post(
        "/v1/jobs",
        headers={**auth(BATCH_KEY), "Idempotency-Key": "url-job-1"},
        json={"url": url, "priority": 2, "labels": {"source": "crawler"}},
    )
    assert again.status_code == 200 and again.json()["job_id"] == str(job_id)
    view = (await client.get(f"/v1/jobs/{job_id}", headers=auth(BATCH_KEY))).json()
    assert view["labels"] == {"source": "crawler"} and view["batch_id"] is None
    found = await client.get(
        "/v1/jobs", params={"label": "source:crawler"}, headers=auth(BATCH_KEY)
    )
    assert [j["job_id"] for j in found.json()["items"]] == [str(job_id)]
    none = await client.get("/v1/jobs", params={"label": "source:crawler"}, headers=auth(KEY))
    assert none.json()["items"] == []  # another tenant's labelled jobs stay hidden
    bad = await client.get("/v1/jobs", params={"label": "nocolon"}, headers=auth(BATCH_KEY))
    assert bad.status_code == 400 and "key:value" in bad.text


async def test_url_job_refusals(client: httpx.AsyncClient) -> None:
    cases = {
        "file:///etc/passwd": "'file'",
        "https://": "no host",
        "https://user:pw@docs.example.com/a.pdf": "credentials",
        "https://docs.example.com:22/a.pdf": "port 22",
        "https://docs.example.com/" + "a" * 5000: "at most 4096",
    }
    for url, said in cases.items():
        r = await client.post("/v1/jobs", headers=auth(BATCH_KEY), json={"url": url})
        assert r.status_code == 422, url
        assert said in r.json()["detail"][0]["msg"], (url, r.text)
    r = await client.post("/v1/jobs", headers=auth(BATCH_KEY), json={"uri": "https://x.org/a"})
    assert r.status_code == 422  # a misspelt field is refused, not ignored


async def test_labels_on_an_upload_form(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/jobs",
        headers=auth(BATCH_KEY),
        files={"file": ("l.pdf", make_pdf("labelled"), "application/pdf")},
        data={"labels": json.dumps({"kind": "invoice", "year": "2026"})},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    found = await client.get(
        "/v1/jobs",
        params=[("label", "kind:invoice"), ("label", "year:2026")],
        headers=auth(BATCH_KEY),
    )
    assert [j["job_id"] for j in found.json()["items"]] == [job_id]
    r = await client.post(
        "/v1/jobs",
        headers=auth(BATCH_KEY),
        files={"file": ("l.pdf", make_pdf("labelled"), "application/pdf")},
        data={"labels": "not json"},
    )
    assert r.status_code == 422 and "JSON object" in r.text


# --- reading a batch --------------------------------------------------------------------------


async def _batch(client: httpx.AsyncClient, n: int, key: str = BATCH_KEY) -> dict[str, Any]:
    r = await client.post("/v1/batches", headers=auth(key), json={"urls": urls(n, "r.example")})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_batch_jobs_list_filter_and_pages(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    batch = await _batch(client, 5)
    batch_id = batch["batch_id"]
    ids = [j["job_id"] for j in batch["jobs"]]
    await db_pool.execute(
        "UPDATE jobs SET status = 'failed', error = 'The server answered 404.' WHERE job_id = $1",
        uuid.UUID(ids[1]),
    )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get(f"/v1/batches/{batch_id}/jobs", params=params, headers=auth(BATCH_KEY))
        ).json()
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first: the last submitted first
    failed = await client.get(
        f"/v1/batches/{batch_id}/jobs", params={"status": "failed"}, headers=auth(BATCH_KEY)
    )
    assert [j["job_id"] for j in failed.json()["items"]] == [ids[1]]
    other = await client.get(f"/v1/batches/{batch_id}/jobs", headers=auth(OTHER_KEY))
    assert other.status_code == 404
    listed = await client.get("/v1/batches", params={"limit": 1}, headers=auth(BATCH_KEY))
    assert listed.json()["items"][0]["batch_id"] == batch_id
    assert listed.json()["next_cursor"]
    theirs = await client.get("/v1/batches", headers=auth(OTHER_KEY))
    assert batch_id not in {b["batch_id"] for b in theirs.json()["items"]}


async def test_batch_result_streams_one_line_per_job(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    batch = await _batch(client, 120)
    ids = [j["job_id"] for j in batch["jobs"]]
    done = uuid.UUID(ids[3])
    await db_pool.execute("UPDATE jobs SET status = 'completed' WHERE job_id = $1", done)
    await db_pool.execute(
        "INSERT INTO job_results (job_id, result) VALUES ($1, $2)", done, {"pages": 1}
    )
    path = f"/v1/batches/{batch['batch_id']}/result"
    async with client.stream("GET", path, headers=auth(BATCH_KEY)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) async for line in r.aiter_lines() if line]
    assert [line["job_id"] for line in lines] == ids
    assert lines[3]["status"] == "completed"
    assert lines[3]["result_url"] == f"/v1/jobs/{done}/result"
    assert "result_url" not in lines[0] and lines[0]["status"] == "queued"
    r = await client.get(path, params={"inline": "true"}, headers=auth(BATCH_KEY))
    inline = [json.loads(line) for line in r.text.splitlines()]
    assert [line["job_id"] for line in inline] == ids  # every page, in order
    assert inline[3]["result"] == {"pages": 1} and "result" not in inline[0]
    assert (await client.get(path, headers=auth(OTHER_KEY))).status_code == 404


# --- cancelling -------------------------------------------------------------------------------


async def test_batch_cancel_cancels_every_unfinished_job_once(
    client: httpx.AsyncClient, batch_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    batch = await _batch(client, 4)
    batch_id = uuid.UUID(str(batch["batch_id"]))
    ids = [uuid.UUID(j["job_id"]) for j in batch["jobs"]]
    await db_pool.execute("UPDATE jobs SET status = 'completed' WHERE job_id = $1", ids[0])
    other = await client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(OTHER_KEY))
    assert other.status_code == 404
    async with bus_tap(batch_settings, "job.cancelled") as tap:
        r = await client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(BATCH_KEY))
        assert r.status_code == 202, r.text
        assert r.json() == {"batch_id": str(batch_id), "jobs_cancelled": 3}
        await tap.wait_for(lambda: len(tap.messages) >= 3)
        again = await client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(BATCH_KEY))
        assert again.json()["jobs_cancelled"] == 0
    cancelled = {JobCancelled.model_validate_json(m.body).job_id for m in tap.messages}
    assert cancelled == set(ids[1:])
    rows = await db_pool.fetch(
        "SELECT job_id, cancel_requested_at FROM jobs WHERE batch_id = $1", batch_id
    )
    requested = {r["job_id"] for r in rows if r["cancel_requested_at"] is not None}
    assert requested == set(ids[1:])
    assert await db_pool.fetchval(
        "SELECT cancel_requested_at IS NOT NULL FROM batches WHERE batch_id = $1", batch_id
    )
    missing = await client.post(f"/v1/batches/{uuid.uuid4()}/cancel", headers=auth(BATCH_KEY))
    assert missing.status_code == 404
