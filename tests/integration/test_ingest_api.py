"""The ingest API against the real PostgreSQL and RabbitMQ: auth, uploads and their limits,
the outbox and the bus, tenant isolation, listing, results and cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from services.ingest.app import create_app
from shared.blobstore import BlobStore
from shared.events import DocumentUploaded, derive_id
from shared.secret_box import secret_box
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import delete_bus

pytestmark = pytest.mark.integration

KEY, OTHER_KEY, ADMIN_KEY, PAGER_KEY = "dev-key", "dev-key-2", "admin-key", "pager-key"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- helpers (also used by test_ingest_outbox.py) -------------------------------------------


@asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The ingest app with its lifespan (pool, bus, relay) running, behind an httpx client."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000", timeout=30
        ) as client,
    ):
        yield client


class BusTap:
    """Every message a temporary auto-delete queue bound to the test exchange receives."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self._changed = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)
        await message.ack()
        self._changed.set()

    def with_id(self, message_id: str) -> list[AbstractIncomingMessage]:
        return [m for m in self.messages if m.message_id == message_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the expected messages did not arrive")
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


@asynccontextmanager
async def bus_tap(settings: Settings, *routing_keys: str) -> AsyncIterator[BusTap]:
    tap = BusTap()
    topo = Topology.from_settings(settings)
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(
            topo.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(tap.on_message)
        yield tap
    finally:
        await conn.close()


def make_pdf(text: str = "Hello docpipe") -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    pdf = canvas.Canvas(buf)
    pdf.drawString(72, 720, text)
    pdf.showPage()
    pdf.save()
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingest_settings(test_settings: Settings) -> Settings:
    # A tenant of its own for the listing test, so other tests' jobs do not interleave, and
    # a bus prefix of its own, so the session stack's workers never pick these jobs up.
    return test_settings.model_copy(
        update={
            "api_keys": f"{test_settings.api_keys},{PAGER_KEY}=pager",
            "bus_prefix": f"{test_settings.bus_prefix}_ingest",
        }
    )


@pytest.fixture(scope="module")
async def client(
    ingest_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(ingest_settings) as c:
        yield c
    await delete_bus(ingest_settings)


async def submit(
    client: httpx.AsyncClient,
    content: bytes,
    name: str = "doc.pdf",
    *,
    key: str = KEY,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    return await client.post(
        "/v1/jobs",
        headers={**auth(key), **(headers or {})},
        files={"file": (name, content, content_type)},
        data=data or {},
    )


# --- auth -----------------------------------------------------------------------------------


async def test_requests_need_a_valid_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/jobs", files={"file": ("a.pdf", make_pdf())})
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"]
    r = await submit(client, make_pdf(), key="wrong-key")
    assert r.status_code == 401
    r = await client.get(f"/v1/jobs/{uuid.uuid4()}", headers=auth("wrong-key"))
    assert r.status_code == 401
    r = await client.get("/v1/jobs")
    assert r.status_code == 401


# --- submitting -----------------------------------------------------------------------------


async def test_submit_pdf_stores_job_and_publishes_event(
    client: httpx.AsyncClient, ingest_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    pdf = make_pdf("ingest test")
    async with bus_tap(ingest_settings, "document.uploaded") as tap:
        r = await submit(
            client,
            pdf,
            "../../secret/Q1\u202e report.pdf",
            data={"priority": "5", "ocr": "never", "password": "s3cret"},
            headers={"X-Request-ID": "req-ingest-1"},
            content_type="text/plain",  # ignored: the bytes decide
        )
        assert r.status_code == 202, r.text
        assert r.headers["x-request-id"] == "req-ingest-1"
        body = r.json()
        job_id = uuid.UUID(body["job_id"])
        assert body["status"] == "queued"
        assert body["filename"] == "Q1 report.pdf"
        assert body["format"] == "pdf"
        assert body["size_bytes"] == len(pdf)
        assert body["sha256"] == hashlib.sha256(pdf).hexdigest()
        assert body["links"] == {
            "self": f"/v1/jobs/{job_id}",
            "result": f"/v1/jobs/{job_id}/result",
            "progress": f"http://127.0.0.1:{ingest_settings.progress_port}/v1/jobs/{job_id}/progress",
            "events": f"ws://127.0.0.1:{ingest_settings.progress_port}/v1/jobs/{job_id}/events",
        }

        message_id = str(derive_id(job_id, "document.uploaded"))
        await tap.wait_for(lambda: bool(tap.with_id(message_id)))

    [message] = tap.with_id(message_id)
    assert message.routing_key == "document.uploaded"
    # Priority 5 was asked: the job keeps it, and a document of a few pages is published one
    # above, to overtake a backlog (fair_share.TenantLimits.bus_priority).
    assert message.priority == 6
    assert message.headers["x-correlation-id"] == "req-ingest-1"
    event = DocumentUploaded.model_validate_json(message.body)
    assert event.job_id == job_id
    assert event.tenant == "dev"
    assert b"s3cret" not in message.body  # sealed: only the extractor opens it
    assert event.password_token is not None
    assert secret_box(ingest_settings).open(event.password_token) == "s3cret"
    assert event.ocr.value == "never"
    assert event.content_type == "application/pdf"
    assert event.size_bytes == len(pdf)
    assert BlobStore(ingest_settings.blob_dir).read_bytes(event.document_uri) == pdf

    job = await db_pool.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    assert job["tenant"] == "dev"
    assert job["status"] == "queued"
    assert job["format"] == "pdf"
    assert job["content_type"] == "application/pdf"
    assert job["ocr_mode"] == "never"
    assert job["priority"] == 5
    assert job["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert job["document_uri"] == event.document_uri
    outbox = await db_pool.fetchrow("SELECT * FROM outbox WHERE message_id = $1", message_id)
    assert outbox["published_at"] is not None
    assert outbox["routing_key"] == "document.uploaded"
    assert "password_token" not in outbox["payload"]  # scrubbed once published

    r = await client.get(f"/v1/jobs/{job_id}", headers=auth(KEY))
    assert r.status_code == 200
    view = r.json()
    assert view["status"] == "queued"
    assert view["ocr"] == "never"
    assert view["priority"] == 5
    assert view["filename"] == "Q1 report.pdf"
    assert view["finished_at"] is None and view["error"] is None


async def test_docx_is_recognised_by_its_zip_members(client: httpx.AsyncClient) -> None:
    docx = zip_bytes({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"})
    r = await submit(client, docx, "letter.bin")
    assert r.status_code == 202, r.text
    assert r.json()["format"] == "docx"


async def test_idempotency_key_returns_the_existing_job(client: httpx.AsyncClient) -> None:
    key = f"idem-{uuid.uuid4()}"
    first = await submit(client, b"first body of text", "a.txt", headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    # The same file again (a client retrying after a lost answer): that job, whatever the name.
    again = await submit(client, b"first body of text", "b.txt", headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["filename"] == "a.txt"
    # The key is scoped to the tenant.
    other = await submit(client, b"first body of text", "a.txt", key=OTHER_KEY,
                         headers={"Idempotency-Key": key})  # fmt: skip
    assert other.status_code == 202
    assert other.json()["job_id"] != first.json()["job_id"]


async def test_idempotency_key_reused_for_another_upload_is_422(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    key = f"idem-{uuid.uuid4()}"
    first = await submit(client, b"the first document", "a.txt", headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    for content, data in (
        (b"a different document", {}),  # another file
        (b"the first document", {"priority": "5"}),  # the same file with other options
        (b"the first document", {"ocr": "always"}),
        (b"the first document", {"docx_comments": "true"}),
        (b"the first document", {"pdf_tables": "false"}),
    ):
        r = await submit(client, content, "a.txt", data=data, headers={"Idempotency-Key": key})
        assert r.status_code == 422, (data, r.text)
        [error] = r.json()["detail"]
        assert error["loc"] == ["header", "idempotency-key"]
        assert job_id in error["msg"] and "use a new key" in error["msg"]
    jobs = await db_pool.fetchval(
        "SELECT count(*) FROM jobs WHERE tenant = 'dev' AND idempotency_key = $1", key
    )
    assert jobs == 1


async def test_missing_file_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/jobs", headers=auth(KEY), data={"ocr": "auto"}, files={})
    assert r.status_code == 422
    r = await client.post("/v1/jobs", headers=auth(KEY), files={"other": ("x.pdf", make_pdf())})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "file"]
    r = await client.post("/v1/jobs", headers=auth(KEY), json={"file": "nope"})
    assert r.status_code == 422


async def test_bad_options_are_422(client: httpx.AsyncClient) -> None:
    for data in ({"priority": "10"}, {"priority": "x"}, {"ocr": "sometimes"}):
        r = await submit(client, make_pdf(), data=data)
        assert r.status_code == 422, (data, r.text)


async def test_overlong_filename_is_422_with_a_sentence(client: httpx.AsyncClient) -> None:
    for name in ("n" * 300 + ".pdf", "n" * 10_000 + ".pdf"):  # the second one: 10 KB
        r = await submit(client, make_pdf(), name)
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "file"]
        assert error["msg"] == (
            f"The file name is too long ({len(name)} characters): at most 255 characters."
        )
    r = await submit(client, make_pdf(), "n" * 251 + ".pdf")  # 255 exactly
    assert r.status_code == 202, r.text
    assert r.json()["filename"] == "n" * 251 + ".pdf"


async def test_empty_file_is_400(client: httpx.AsyncClient) -> None:
    r = await submit(client, b"", "empty.pdf")
    assert r.status_code == 400
    assert r.json()["detail"] == "The uploaded file is empty."


async def test_unsupported_content_is_415_whatever_the_name(client: httpx.AsyncClient) -> None:
    noise = random.Random(7).randbytes(8192)
    assert b"\x00" in noise
    r = await submit(client, noise, "holiday.png", content_type="image/png")
    assert r.status_code == 415
    detail = r.json()["detail"]
    assert "PDF" in detail and "DOCX" in detail and "PNG" in detail

    not_docx = zip_bytes({"notes.txt": b"hello", "data/x.xml": b"<x/>"})
    r = await submit(client, not_docx, "report.docx")
    assert r.status_code == 415


async def test_upload_limit_is_413(
    ingest_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> None:
    small = ingest_settings.model_copy(update={"max_upload_bytes": 1000})
    async with running_ingest(small) as c:
        # Within the Content-Length slack: refused while streaming.
        r = await submit(c, b"a" * 5000, "big.txt")
        assert r.status_code == 413
        assert "limit" in r.json()["detail"]
        # Far over: refused from the Content-Length alone.
        r = await submit(c, b"a" * 500_000, "huge.txt")
        assert r.status_code == 413
        # Exactly at the limit is fine.
        r = await submit(c, b"b" * 1000, "fits.txt")
        assert r.status_code == 202, r.text


# --- reading --------------------------------------------------------------------------------


async def test_tenants_only_see_their_own_jobs(client: httpx.AsyncClient) -> None:
    r = await submit(client, make_pdf("private"), "private.pdf")
    job_id = r.json()["job_id"]
    assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(OTHER_KEY))).status_code == 404
    r = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(OTHER_KEY))
    assert r.status_code == 404
    r = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(OTHER_KEY))
    assert r.status_code == 404
    listed = (await client.get("/v1/jobs?limit=200", headers=auth(OTHER_KEY))).json()["items"]
    assert job_id not in {j["job_id"] for j in listed}
    # Admins read every job; the owner still can.
    r = await client.get(f"/v1/jobs/{job_id}", headers=auth(ADMIN_KEY))
    assert r.status_code == 200 and r.json()["tenant"] == "dev"
    assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(KEY))).status_code == 200


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/v1/jobs/{uuid.uuid4()}", headers=auth(KEY))
    assert r.status_code == 404
    r = await client.get("/v1/jobs/not-a-uuid", headers=auth(KEY))
    assert r.status_code == 422


async def test_job_published_straight_to_the_bus_is_readable_by_its_tenant(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    from shared.jobs import ensure_job

    event = DocumentUploaded(
        job_id=uuid.uuid4(), tenant="dev", document_uri="https://example.org/x.pdf"
    )
    await ensure_job(db_pool, event)
    r = await client.get(f"/v1/jobs/{event.job_id}", headers=auth(KEY))
    assert r.status_code == 200
    assert r.json()["format"] is None and r.json()["status"] == "queued"
    r = await client.get(f"/v1/jobs/{event.job_id}", headers=auth(OTHER_KEY))
    assert r.status_code == 404


async def test_list_paginates_newest_first(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    submitted = []
    for i in range(5):
        r = await submit(client, f"document number {i}\n".encode(), f"n{i}.txt", key=PAGER_KEY)
        assert r.status_code == 202
        submitted.append(r.json()["job_id"])

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/jobs", headers=auth(PAGER_KEY), params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [j["job_id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(submitted))

    # Filter by status (the progress service's part of a cancel done by hand: it is not
    # running here).
    await db_pool.execute(
        "UPDATE jobs SET status = 'cancelled', stage = 'cancelled' WHERE job_id = $1",
        uuid.UUID(submitted[1]),
    )
    r = await client.get("/v1/jobs?status=cancelled", headers=auth(PAGER_KEY))
    assert [j["job_id"] for j in r.json()["items"]] == [submitted[1]]
    assert r.json()["next_cursor"] is None

    assert (await client.get("/v1/jobs?status=nope", headers=auth(KEY))).status_code == 422
    assert (await client.get("/v1/jobs?limit=0", headers=auth(KEY))).status_code == 422
    assert (await client.get("/v1/jobs?limit=201", headers=auth(KEY))).status_code == 422
    r = await client.get("/v1/jobs?cursor=garbage!", headers=auth(KEY))
    assert r.status_code == 400
    assert "cursor" in r.json()["detail"]


# --- results and cancelling -----------------------------------------------------------------


async def test_result_is_409_until_completed(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    job_id = (await submit(client, make_pdf("result"), "r.pdf")).json()["job_id"]
    r = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(KEY))
    assert r.status_code == 409
    assert r.json() == {
        "detail": "The job is queued; the result is available once it has completed.",
        "status": "queued",
    }
    # What the progress service does on completion.
    result = {"job_id": job_id, "pages": [{"number": 1, "text": "result"}], "chunks": []}
    async with db_pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO job_results (job_id, result) VALUES ($1, $2)", uuid.UUID(job_id), result
        )
        await conn.execute(
            "UPDATE jobs SET status = 'completed', stage = 'completed', percent = 100, "
            "finished_at = now() WHERE job_id = $1",
            uuid.UUID(job_id),
        )
    r = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(KEY))
    assert r.status_code == 200
    assert r.json() == result
    r = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(KEY))
    assert r.status_code == 409
    assert "completed" in r.json()["detail"]


async def test_cancel_records_the_request_and_publishes_event(
    client: httpx.AsyncClient, ingest_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    job_id = (await submit(client, make_pdf("cancel me"), "c.pdf")).json()["job_id"]
    async with bus_tap(ingest_settings, "job.cancelled") as tap:
        r = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(KEY))
        assert r.status_code == 202
        assert r.json() == {"job_id": job_id, "status": "cancelled"}
        message_id = str(derive_id(uuid.UUID(job_id), "job.cancelled"))
        await tap.wait_for(lambda: bool(tap.with_id(message_id)))
    [message] = tap.with_id(message_id)
    assert message.priority == 9  # overtakes queued work
    body = json.loads(message.body)
    assert body["job_id"] == job_id and body["reason"] == "Cancelled by the client."

    # Ingest records the request; the status is the progress service's to write (it is not
    # running here), so the job reads as before, with the request's time.
    view = (await client.get(f"/v1/jobs/{job_id}", headers=auth(KEY))).json()
    assert view["status"] == "queued" and view["stage"] == "queued"
    assert view["error"] is None and view["finished_at"] is None
    assert view["cancel_requested_at"] is not None

    # A second cancel while the first is on its way: 200, and no second event.
    again = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(KEY))
    assert again.status_code == 200
    assert again.json() == {"job_id": job_id, "status": "cancelled"}
    count = await db_pool.fetchval("SELECT count(*) FROM outbox WHERE message_id = $1", message_id)
    assert count == 1

    # Once progress has applied it: still 200, and the result is not there (409).
    await db_pool.execute(
        "UPDATE jobs SET status = 'cancelled', stage = 'cancelled', finished_at = now() "
        "WHERE job_id = $1",
        uuid.UUID(job_id),
    )
    again = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(KEY))
    assert again.status_code == 200
    assert again.json() == {"job_id": job_id, "status": "cancelled"}
    r = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(KEY))
    assert r.status_code == 409 and r.json()["status"] == "cancelled"
    assert (
        await db_pool.fetchval("SELECT count(*) FROM outbox WHERE message_id = $1", message_id) == 1
    )
