"""Sandboxed children as a user of their own (DOCPIPE_SANDBOX_USER): who they are, what they
inherit, what they can read, and how files go in and come back (shared.sandbox.identity and
shared.sandbox.handoff). These run real children; starting one as another user needs root,
which CI has."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.blobstore import BlobStore
from shared.sandbox import ChildLimits, SandboxOutcome, WarmPool, identity, run_sandboxed, startup
from shared.sandbox.handoff import HandoffRefused, handoff_root, job_handoff, take_blob
from shared.sandbox.identity import (
    SandboxUser,
    SandboxUserError,
    check_sandbox_user,
    child_environment,
    resolve_sandbox_user,
)
from tests.conftest import unavailable

JOB: dict[str, Any] = {"job_id": None, "timeout": 60, "cpu_seconds": 30, "memory_mb": 2048}
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def sandbox_user() -> SandboxUser:
    if os.geteuid() != 0:
        unavailable("starting a child as another user needs root")
    user = resolve_sandbox_user("nobody")
    assert user is not None
    return user


@pytest.fixture
def handoff_dir() -> Iterator[Path]:
    """A handoff root where the sandbox user can reach it (pytest's tmp_path is root's, 0700)."""
    root = Path(tempfile.gettempdir()) / f"docpipe-handoff-test-{uuid.uuid4().hex}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_setting_names_a_user_by_name_or_number() -> None:
    assert resolve_sandbox_user("") is None
    assert resolve_sandbox_user("nobody") == SandboxUser(NOBODY.pw_uid, NOBODY.pw_gid, "nobody")
    assert resolve_sandbox_user(str(NOBODY.pw_uid)) == resolve_sandbox_user("nobody")
    # A number a container gives without a passwd entry: its group is the same number.
    assert resolve_sandbox_user("54321") == SandboxUser(54321, 54321, "54321")
    with pytest.raises(SandboxUserError, match="does not exist on this machine"):
        resolve_sandbox_user("no-such-docpipe-user")
    with pytest.raises(SandboxUserError, match="may not be root"):
        resolve_sandbox_user("0")


def test_a_service_without_the_capabilities_refuses_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(identity, "_effective_capabilities", lambda: 1 << 5)  # KILL only
    with pytest.raises(SandboxUserError) as refused:
        check_sandbox_user("nobody")
    assert "cannot start processes as another user" in str(refused.value)
    assert "CHOWN, DAC_OVERRIDE, SETGID, SETUID" in str(refused.value)
    assert check_sandbox_user("") is None  # unset: nothing to check


def test_the_children_inherit_no_secrets() -> None:
    service = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_THREAD_LIMIT": "1",
        "DOCPIPE_DATABASE_URL": "postgresql://docpipe:secret@db/docpipe",
        "DOCPIPE_AMQP_URL": "amqp://extractor:secret@rabbit/",
        "DOCPIPE_API_KEYS": "k1:tenant-a",
        "DOCPIPE_SECRET_KEYS": "aaaa",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "DOCPIPE_S3_ENDPOINT": "http://s3:9000",
    }
    env = child_environment(service, {"DOCPIPE_SANDBOX_CPU_SECONDS": "30"})
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_THREAD_LIMIT": "1",
        "DOCPIPE_SANDBOX_CPU_SECONDS": "30",
    }


# What a child can see of itself and of the service's files. A shell, not Python: the
# interpreter of this checkout may live where the sandbox user cannot run it (the service's
# own check refuses to start then; test_image.py runs the real children as that user).
PROBE = r"""
status() { grep "^$1:" /proc/self/status | cut -f2- | tr -s '\t ' ' '; }
cat "$1" >/dev/null 2>&1 && read_secret=true || read_secret=false
echo x > "$TMPDIR/scratch"
printf '{"uid": "%s", "gid": "%s", "groups": "%s", "read_secret": %s, ' \
  "$(status Uid)" "$(status Gid)" "$(id -G)" "$read_secret"
printf '"tmp_owner": %s, "home": "%s", "secret_env": %s, "no_new_privs": "%s", ' \
  "$(stat -c %u "$TMPDIR")" "$HOME" "$(env | grep -c -e DATABASE -e AMQP)" "$(status NoNewPrivs)"
printf '"interfaces": "%s"}\n' "$(tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' ')"
"""


async def probe(limits: ChildLimits, secret: Path, warm: WarmPool | None = None) -> dict[str, Any]:
    lines: list[bytes] = []

    async def on_line(line: bytes) -> None:
        lines.append(line)

    result = await run_sandboxed(
        ("/bin/sh", "-c", PROBE, "probe", str(secret)),
        stdin=b"",
        on_line=on_line,
        child_limits=limits,
        warm=warm,
        **JOB,
    )
    assert result.outcome is SandboxOutcome.OK, result
    report: dict[str, Any] = json.loads(lines[-1])
    return report


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file of the service's, as the blobs are: mode 0600."""
    path = tmp_path / "another-tenants-blob"
    path.write_bytes(b"confidential")
    path.chmod(0o600)
    return path


async def test_a_child_runs_as_the_sandbox_user_for_good(
    sandbox_user: SandboxUser, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCPIPE_DATABASE_URL", "postgresql://docpipe:secret@db/docpipe")
    report = await probe(ChildLimits(run_as=sandbox_user), secret)
    # Real, effective, saved and file-system ids: all the sandbox user's, so no way back.
    assert report["uid"] == " ".join([str(sandbox_user.uid)] * 4)
    assert report["gid"] == " ".join([str(sandbox_user.gid)] * 4)
    assert report["groups"] == str(sandbox_user.gid)  # no supplementary groups
    assert report["read_secret"] is False, "the service's files stay the service's"
    assert report["no_new_privs"] == "1"
    # Its temporary folder is its own, and is its HOME; the network namespace came first.
    assert report["tmp_owner"] == sandbox_user.uid
    assert report["home"].startswith(tempfile.gettempdir())
    assert report["interfaces"] == "lo"
    assert report["secret_env"] == 0
    # Without the setting, the same child is the service's user and reads the same file.
    same = await probe(ChildLimits(), secret)
    assert same["uid"].startswith("0 ") and same["read_secret"] is True


async def test_a_pools_children_run_as_the_sandbox_user(
    sandbox_user: SandboxUser, secret: Path
) -> None:
    limits = ChildLimits(run_as=sandbox_user)
    pool = WarmPool(
        ("/bin/sh", "-c", PROBE, "probe", str(secret)),
        size=1,
        cpu_seconds=JOB["cpu_seconds"],
        memory_mb=JOB["memory_mb"],
        max_jobs_per_child=1,
        child_limits=limits,
    )
    try:
        pool.fill()
        report = await probe(limits, secret, warm=pool)
    finally:
        await pool.close()
    assert report["uid"].startswith(f"{sandbox_user.uid} ") and report["read_secret"] is False


async def test_a_service_whose_python_the_sandbox_user_cannot_run_refuses_to_start(
    sandbox_user: SandboxUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"  # root's, 0700: out of the sandbox user's reach
    private.mkdir(mode=0o700)
    interpreter = private / "python"
    shutil.copy("/bin/true", interpreter)
    monkeypatch.setattr(startup, "PROBE", (str(interpreter),))
    with pytest.raises(SandboxUserError, match="could not run this service's Python"):
        await startup.require_sandbox_user("nobody", tmp_path / "handoff")
    monkeypatch.setattr(startup, "PROBE", ("/bin/true",))
    assert await startup.require_sandbox_user("nobody", tmp_path / "handoff") == sandbox_user
    assert await startup.require_sandbox_user("") is None
    # A handoff folder that is not the service's own stops the start too.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, sandbox_user.uid, sandbox_user.gid)
    with pytest.raises(SandboxUserError, match="not a folder of this service's user"):
        await startup.require_sandbox_user("nobody", foreign)


async def test_a_job_folder_is_the_childs_and_goes_with_the_job(
    sandbox_user: SandboxUser, handoff_dir: Path, secret: Path
) -> None:
    async with job_handoff(handoff_dir, sandbox_user, secret) as handoff:
        assert handoff is not None
        given = handoff.input
        assert given.read_bytes() == b"confidential" and given.suffix == ""
        for path, mode in ((handoff.folder, 0o700), (handoff.out_dir, 0o700), (given, 0o400)):
            info = path.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (sandbox_user.uid, mode)
        # The root can be crossed, not listed.
        assert stat.S_IMODE(handoff_dir.stat().st_mode) == 0o711
        folder = handoff.folder
    assert not folder.exists()
    async with job_handoff(handoff_dir, None, secret) as none:
        assert none is None  # no sandbox user: the children read the store directly


def test_a_childs_blob_is_taken_back_only_when_its_content_matches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child_store = BlobStore(out)
    store = BlobStore(tmp_path / "store")
    uri = child_store.put_bytes(b"a rendered page")
    take_blob(store, out, uri)
    assert store.read_bytes(uri) == b"a rendered page"
    # A file whose content is not what its name says.
    forged = child_store.uri_for("ab" * 32)
    path = child_store.path_for("ab" * 32)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"something else")
    with pytest.raises(HandoffRefused, match="does not match its name"):
        take_blob(store, out, forged)
    assert not store.exists(forged)


def test_a_link_the_child_planted_is_not_followed(tmp_path: Path) -> None:
    """Towards another blob, at the file or at a folder on the way: refused either way."""
    store = BlobStore(tmp_path / "store")
    victim = store.put_bytes(b"another tenant's page")
    digest = victim.rsplit("/", 1)[1]
    out = tmp_path / "out"
    planted = BlobStore(out).path_for(digest)
    planted.parent.mkdir(parents=True)
    planted.symlink_to(store.path_for(digest))
    with pytest.raises(HandoffRefused, match="could not be taken back"):
        take_blob(store, out, victim)
    planted.unlink()
    planted.parent.rmdir()
    planted.parent.symlink_to(store.path_for(digest).parent)
    with pytest.raises(HandoffRefused, match="could not be taken back"):
        take_blob(store, out, victim)


def test_what_root_writes_into_a_store_stays_usable_by_the_stores_users(
    sandbox_user: SandboxUser, tmp_path: Path
) -> None:
    """The extractor and OCR run as root where their children run as the sandbox user; the
    other services write the same folder store as its owner, or as its group (fsGroup)."""
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, NOBODY.pw_uid, NOBODY.pw_gid)
    uri = BlobStore(owned).put_bytes(b"a page image")
    path = BlobStore(owned).local_path(uri)
    for each in (path, path.parent, path.parent.parent):
        assert (each.stat().st_uid, each.stat().st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    grouped = tmp_path / "grouped"  # root's, given to a group, as a volume with an fsGroup
    grouped.mkdir()
    os.chown(grouped, 0, NOBODY.pw_gid)
    uri = BlobStore(grouped).put_bytes(b"another page image")
    path = BlobStore(grouped).local_path(uri)
    assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (NOBODY.pw_gid, 0o640)
    for folder in (path.parent, path.parent.parent):
        assert folder.stat().st_gid == NOBODY.pw_gid
        assert stat.S_IMODE(folder.stat().st_mode) == 0o2775


def test_a_handoff_folder_someone_else_made_first_is_not_used(
    sandbox_user: SandboxUser, handoff_dir: Path, tmp_path: Path
) -> None:
    """In a shared temporary folder another user could make the folder first, or a link."""
    handoff_dir.mkdir()
    os.chown(handoff_dir, sandbox_user.uid, sandbox_user.gid)
    with pytest.raises(HandoffRefused, match="not a folder of this service's user"):
        handoff_root(handoff_dir)
    handoff_dir.rmdir()
    handoff_dir.symlink_to(tmp_path)
    with pytest.raises(HandoffRefused, match="not a folder of this service's user"):
        handoff_root(handoff_dir)
    handoff_dir.unlink()
    assert handoff_root(handoff_dir) == handoff_dir  # made here: used
