"""The image (Dockerfile) runs docpipe: one container per service against the host's RabbitMQ
and PostgreSQL (network host), after the image's own migrate and topology steps, and a
document submitted over ingest's HTTP API is processed end to end: a text page and a scanned
page, so the extractor, tesseract's language data in the image, the analyzer and progress all
take part. The containers run as the image's unprivileged user with a read-only root.

`make image` builds the image (cached); without Docker or the image this test skips, and
fails under CI=true."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from scripts.stack import SERVICES, Stack, service_amqp_urls
from shared.settings import Settings
from tests.conftest import unavailable
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient
from tests.stack_fixture import ARTIFACTS, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.deploy]

IMAGE = os.environ.get("DOCPIPE_IMAGE", "docpipe:latest")
IMAGE_UID = 10001  # the Dockerfile's docpipe user
SANDBOX_UID = 10002  # the Dockerfile's docpipe-sandbox user
# The services that start sandboxed children, and the capabilities they run with to start
# them as the sandbox user (shared.sandbox.identity.REQUIRED_CAPABILITIES).
SANDBOXED = ("extractor", "ocr")
SANDBOX_CAPABILITIES = [
    arg
    for cap in ("CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID")
    for arg in ("--cap-add", cap)
]
BLOBS_IN_CONTAINER = "/var/lib/docpipe/blobs"


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def require_image() -> None:
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        unavailable("no Docker daemon (scripts/ensure_docker.sh starts one)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        unavailable(f"image {IMAGE} not built (make image)")


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """Passwords reach the containers through a file, not docker's command line."""
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    path.chmod(0o600)
    return path


def run_once(name: str, env_file: Path, *command: str) -> str:
    """A one-shot container of the image (the migrate or topology step); asserts it succeeds."""
    done = docker(
        "run", "--rm", "--network", "host", "--read-only", "--env-file", str(env_file),
        "--name", name, IMAGE, *command, check=False, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def container_env(settings: Settings) -> dict[str, str]:
    """The stack's environment, as the containers see it (blobs at the image's folder)."""
    env = stack_env(settings.model_copy(update={"blob_dir": Path(BLOBS_IN_CONTAINER)}))
    env.pop("DOCPIPE_FILE_ROOTS")
    return {**env, "DOCPIPE_HOST": "127.0.0.1", "DOCPIPE_LLM_BASE_URL": "http://127.0.0.1:9/v1"}


async def wait_ready(stack: Stack, timeout: float = 120) -> None:
    async with httpx.AsyncClient(timeout=5) as client, asyncio.timeout(timeout):
        for name in SERVICES:
            while True:
                try:
                    if (await client.get(f"{stack.url(name)}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)


@pytest.fixture
async def image_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, tmp_path: Path
) -> AsyncIterator[StackClient]:
    from tests.conftest import delete_bus  # tests.conftest imports the stack fixtures

    require_image()
    # A bus of its own: on the session's bus, the session stack's extractor (a host process
    # with another blob folder) took the containers' upload and failed the job.
    settings = test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_image"})
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.chown(blobs, IMAGE_UID, IMAGE_UID)  # the containers' user writes the blobs
    env = container_env(settings)
    tag = settings.bus_prefix.replace("_", "-")
    setup = {**env, "DOCPIPE_MIGRATE_DATABASE_URL": settings.database_url}
    setup_file = write_env_file(tmp_path / "setup.env", setup)
    assert "migrations applied" in run_once(
        f"{tag}-migrate", setup_file, "python", "-m", "shared.migrate"
    )
    assert "declared" in run_once(
        f"{tag}-topology", setup_file, "python", "-m", "scripts.declare_topology"
    )
    names = []
    for service, url in service_amqp_urls(env).items():
        own = {**env, "DOCPIPE_AMQP_URL": url, "DOCPIPE_DECLARE_TOPOLOGY": "false"}
        user = ["--user", str(IMAGE_UID)]
        if service in SANDBOXED:
            # As deploy/ documents it: root with only the capabilities that start children
            # as the sandbox user, and the children as that user.
            own["DOCPIPE_SANDBOX_USER"] = str(SANDBOX_UID)
            user = ["--user", "0", "--cap-drop", "ALL", *SANDBOX_CAPABILITIES]
        name = f"{tag}-{service}"
        docker(
            "run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp", *user,
            "--env-file", str(write_env_file(tmp_path / f"{service}.env", own)),
            "-v", f"{blobs}:{BLOBS_IN_CONTAINER}", "--name", name,
            IMAGE, "python", "-m", f"services.{service}",
        )  # fmt: skip
        names.append(name)
    stack = Stack(env, services=())
    try:
        await wait_ready(stack)
        key, other = list(settings.tenants_by_key)[:2]
        yield StackClient(stack, key=key, other_key=other, admin_key="admin-key")
    finally:
        logs = ARTIFACTS / "logs" / settings.bus_prefix
        logs.mkdir(parents=True, exist_ok=True)
        for name in names:
            out = docker("logs", name, check=False)
            (logs / f"{name}.log").write_text(out.stdout + out.stderr)
            docker("rm", "-f", name, check=False)
        print(f"container logs: {logs}")
        await delete_bus(settings)


async def test_one_container_per_service_processes_a_document(
    image_stack: StackClient, tmp_path: Path
) -> None:
    # The containers run as the image's user, not root; the two that start sandboxed children
    # run as root with five capabilities, and their children as the sandbox user.
    for service in SERVICES:
        name = container_name(image_stack, service)
        user = docker("exec", name, "id", "-u").stdout.strip()
        wanted = 0 if service in SANDBOXED else IMAGE_UID
        assert user == str(wanted), f"{service} runs as uid {user}"
    pdf = pdf_with_pages(
        tmp_path / "two-pages.pdf",
        [
            "Packaged pipelines travel well\nfrom one host to many.",
            text_image(["Container scan QUOKKA"]),
        ],
    )
    job_id = await image_stack.submit_ok(pdf, ocr="auto")
    final = await image_stack.wait(job_id, timeout=180)
    assert final["status"] == "completed", final
    result = (await image_stack.result(job_id)).json()
    assert len(result["pages"]) == 2
    assert "Packaged pipelines travel well" in result["text"]
    # The scanned page was read by tesseract inside the OCR container.
    assert "QUOKKA" in result["text"].upper()
    assert result["chunks"], "the analyzer container chunked the text"
    for service, child in (
        ("extractor", "services.extractor.child"),
        ("ocr", "services.ocr.engine"),
    ):
        users = child_users(container_name(image_stack, service), child)
        assert users and users == {SANDBOX_UID}, f"{service}'s children run as {users}"


def container_name(stack: StackClient, service: str) -> str:
    return f"{stack.stack.env['DOCPIPE_BUS_PREFIX'].replace('_', '-')}-{service}"


def child_users(container: str, module: str) -> set[int]:
    """The uids of a container's processes that run `module` (its warm sandboxed children)."""
    table = docker("top", container, "-eo", "pid,uid,args").stdout.splitlines()[1:]
    return {int(row.split()[1]) for row in table if module in row}


async def test_a_service_that_cannot_switch_users_refuses_to_start(
    test_settings: Settings, rabbit_available: None, tmp_path: Path
) -> None:
    """Asked for a sandbox user without the capabilities to start children as that user,
    the OCR service exits with the sentence instead of running them as itself."""
    require_image()
    env = {**container_env(test_settings), "DOCPIPE_SANDBOX_USER": str(SANDBOX_UID)}
    done = docker(
        "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "--user", str(IMAGE_UID), "--env-file", str(write_env_file(tmp_path / "ocr.env", env)),
        IMAGE, "python", "-m", "services.ocr", check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "cannot start processes as another user" in done.stdout + done.stderr
    assert "SETUID" in done.stdout + done.stderr
