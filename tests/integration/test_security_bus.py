"""The reproductions of issue 10, item 1, against the running services: a message published
straight onto the bus cannot read a local file, read another tenant's upload, or write into
another tenant's job."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.events import DocumentUploaded
from shared.settings import Settings
from tests.integration.stack_client import StackClient, publish_as_upstream

pytestmark = pytest.mark.integration


async def wait_as(stack: StackClient, job_id: str, key: str, timeout: float = 120) -> Any:
    """Poll the job as the tenant of `key` until it ends; its final body."""
    deadline = time.monotonic() + timeout
    while True:
        response = await stack.job(job_id, key=key)
        if response.status_code == 200 and response.json()["status"] in (
            "completed",
            "failed",
            "cancelled",
        ):
            return response.json()
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: {response.status_code} {response.text}")
        await asyncio.sleep(0.25)


def tenants(stack: StackClient, settings: Settings) -> tuple[str, str]:
    by_key = settings.tenants_by_key
    return by_key[stack.key], by_key[stack.other_key]


async def test_a_bus_upload_cannot_read_a_local_file_outside_the_roots(
    stack: StackClient, test_settings: Settings
) -> None:
    _, intruder = tenants(stack, test_settings)
    event = DocumentUploaded(
        job_id=uuid.uuid4(), tenant=intruder, document_uri="file:///etc/passwd"
    )
    await publish_as_upstream(test_settings, event)
    final = await wait_as(stack, str(event.job_id), stack.other_key)
    assert final["status"] == "failed"
    assert final["error"] == (
        "The file /etc/passwd is outside the folders documents may be read from."
    )


async def test_a_bus_upload_cannot_read_another_tenants_blob(
    stack: StackClient, test_settings: Settings, tmp_path: Path
) -> None:
    owner, intruder = tenants(stack, test_settings)
    secret = tmp_path / "payroll.txt"
    secret.write_text("Payroll of the owner tenant: confidential figures.\n")
    job_id = await stack.submit_ok(secret)
    uploaded = await stack.wait(job_id)
    assert uploaded["status"] == "completed"
    uri = "blob://sha256/" + hashlib.sha256(secret.read_bytes()).hexdigest()

    stolen = DocumentUploaded(job_id=uuid.uuid4(), tenant=intruder, document_uri=uri)
    await publish_as_upstream(test_settings, stolen)
    final = await wait_as(stack, str(stolen.job_id), stack.other_key)
    assert final["status"] == "failed"
    assert final["error"] == f"The uploaded document {uri} is not in the blob store."

    # The tenant that uploaded it may name its own blob on the bus.
    own = DocumentUploaded(job_id=uuid.uuid4(), tenant=owner, document_uri=uri)
    await publish_as_upstream(test_settings, own)
    assert (await wait_as(stack, str(own.job_id), stack.key))["status"] == "completed"
    assert "confidential figures" in (await stack.result(str(own.job_id))).json()["text"]


async def test_a_bus_upload_cannot_write_into_another_tenants_job(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    _, intruder = tenants(stack, test_settings)
    original = tmp_path / "contract.txt"
    original.write_text("The original contract text of the owner.\n")
    job_id = await stack.submit_ok(original)
    injected = tmp_path / "injected.txt"
    injected.write_text("INJECTED BY THE INTRUDER.\n")
    intrusion = DocumentUploaded(
        job_id=uuid.UUID(job_id), tenant=intruder, document_uri=injected.as_uri()
    )
    await publish_as_upstream(test_settings, intrusion)

    final = await stack.wait(job_id)
    assert final["status"] == "completed"
    text = (await stack.result(job_id)).json()["text"]
    assert "original contract text" in text and "INJECTED" not in text
    assert (await stack.job(job_id, key=stack.other_key)).status_code == 404

    deadline = time.monotonic() + 30
    while not (
        refused := await db_pool.fetch(
            "SELECT claimed_tenant, claimed_document_uri FROM refused_messages WHERE job_id = $1",
            uuid.UUID(job_id),
        )
    ):
        assert time.monotonic() < deadline, "the refusal was not recorded"
        await asyncio.sleep(0.2)
    assert [tuple(r) for r in refused] == [(intruder, injected.as_uri())]


async def test_no_key_in_the_logs_of_the_services(
    stack: StackClient, test_settings: Settings, tmp_path: Path
) -> None:
    """A WebSocket follower passes its key as ?token= (uvicorn logs that path), an upload
    sends it in a header: the services' log files carry neither key."""
    doc = tmp_path / "followed.txt"
    doc.write_text("A document followed over the WebSocket.\n")
    job_id = await stack.submit_ok(doc)
    messages = await stack.watch(job_id)
    assert messages[-1]["status"] == "completed"
    await stack.watch(job_id, after=1)
    log_dir = stack.stack.log_dir
    assert log_dir is not None
    logs = {path.name: path.read_text(errors="replace") for path in log_dir.glob("*.log")}
    assert "progress.log" in logs and f"{job_id}/events?token=[REDACTED]" in logs["progress.log"]
    keys = [*test_settings.tenants_by_key, *test_settings.admin_key_set]
    leaks = {(name, key) for name, text in logs.items() for key in keys if key in text}
    assert leaks == set()
