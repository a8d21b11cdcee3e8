"""A thin client for the running stack, used by the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

from scripts.stack import Stack
from shared.bus import Bus
from shared.bus.identity import dev_password, url_with_user
from shared.events import TERMINAL_STATUSES, DocumentUploaded, Event
from shared.settings import Settings


def upstream_user(settings: Settings, tenant: str) -> str:
    """The upstream AMQP user that publishes for `tenant` (DOCPIPE_AMQP_TENANTS)."""
    users = [user for user, mapped in settings.amqp_tenants.items() if mapped == tenant]
    if not users:
        raise LookupError(f"no upstream AMQP user publishes for tenant {tenant!r}")
    return users[0]


def upstream_settings(settings: Settings, user: str) -> Settings:
    """The settings an upstream app has: the broker, as its own user (dev password)."""
    url = url_with_user(settings.amqp_url, user, dev_password(user))
    return settings.model_copy(update={"amqp_url": url})


async def publish_as_upstream(settings: Settings, event: Event) -> None:
    """Publish one event the way an upstream app would: straight onto the bus. An upload goes
    as the upstream user of its tenant (it may publish nothing else, and declares nothing:
    the stack declared the topology); any other event as the admin connection of the tests,
    standing in for the service that would publish it."""
    if isinstance(event, DocumentUploaded):
        settings = upstream_settings(settings, upstream_user(settings, event.tenant))
    bus = Bus(settings, "upstream-app")
    await bus.connect()
    try:
        if not isinstance(event, DocumentUploaded):
            await bus.declare()
        await bus.publish(event)
    finally:
        await bus.stop()


@dataclass
class StackClient:
    stack: Stack
    key: str
    other_key: str
    admin_key: str

    @property
    def api(self) -> str:
        return self.stack.url("ingest")

    @property
    def ws(self) -> str:
        return self.stack.url("progress").replace("http://", "ws://")

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def submit(
        self,
        path: Path | None = None,
        *,
        data: bytes | None = None,
        name: str | None = None,
        ocr: str = "auto",
        password: str | None = None,
        key: str | None = None,
        priority: int = 0,
        force: bool = True,
    ) -> httpx.Response:
        """POST the document. `force` (the default here) processes it even when an identical
        job has completed: tests share one database, and without it duplicate detection
        would answer a test with another test's job. Tests of duplicate detection use
        `post_job`, which sends only the fields it is given."""
        content = data if data is not None else Path(path).read_bytes()  # type: ignore[arg-type]
        form: dict[str, Any] = {"ocr": ocr, "priority": str(priority)}
        if password is not None:
            form["password"] = password
        if force:
            form["force"] = "true"
        async with httpx.AsyncClient(timeout=60) as client:
            return await client.post(
                f"{self.api}/v1/jobs",
                headers=self.headers(key),
                files={"file": (name or (path.name if path else "upload.bin"), content)},
                data=form,
            )

    async def post_job(
        self, data: bytes, *, name: str = "doc.pdf", key: str | None = None, **form: str
    ) -> dict[str, Any]:
        """POST /v1/jobs with exactly these form fields (no `force`); asserts the 202."""
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{self.api}/v1/jobs",
                headers=self.headers(key),
                files={"file": (name, data)},
                data=form,
            )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_ended(
        self, job_id: str, key: str | None = None, timeout: float = 180.0
    ) -> dict[str, Any]:
        """As `wait`, as another tenant's key may see it, polling faster."""
        async with asyncio.timeout(timeout):
            while True:
                body: dict[str, Any] = (await self.job(job_id, key)).json()
                if body.get("status") in TERMINAL_STATUSES:
                    return body
                await asyncio.sleep(0.1)

    async def submit_ok(self, path: Path, **kw: Any) -> str:
        response = await self.submit(path, **kw)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    async def job(self, job_id: str, key: str | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.get(f"{self.api}/v1/jobs/{job_id}", headers=self.headers(key))

    async def result(self, job_id: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.get(f"{self.api}/v1/jobs/{job_id}/result", headers=self.headers())

    async def wait(self, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Poll until the job is terminal; returns its final GET /v1/jobs/{id} body."""
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = (await self.job(job_id)).json()
            if body.get("status") in TERMINAL_STATUSES:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {body.get('status')} after {timeout:g} s")
            await asyncio.sleep(0.25)

    async def watch(
        self, job_id: str, after: int | None = None, timeout: float = 180.0
    ) -> list[dict[str, Any]]:
        """Every WebSocket message for the job until the final one."""
        url = f"{self.ws}/v1/jobs/{job_id}/events?token={self.key}"
        if after is not None:
            url += f"&after={after}"
        messages: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout), websockets.connect(url) as conn:
            async for raw in conn:
                msg = json.loads(raw)
                messages.append(msg)
                if msg.get("status") in TERMINAL_STATUSES:
                    break
        return messages
