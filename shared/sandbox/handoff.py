"""Files in and out of a child that runs as the sandbox user (shared.sandbox.identity).

Such a child cannot read the blob store (the service's, mode 0600 and 0700), which is the
point: a parser exploit in one job must not reach another tenant's documents. So each job
gets a folder of the sandbox user's, under a root the service owns with mode 0711 (it can be
crossed, not listed, and each folder's name is random):
- in: a copy of the job's input (`give`), readable by the child only;
- out: a blob-store layout (`out_dir`) the child writes its blobs to (page images).

What the child wrote is untrusted like the document itself. `take_blob` reads it without
following links (a child could plant one towards another tenant's blob) and stores it under
the address its content hashes to; a blob whose content does not match the name the child
gave it is refused. The folder is removed when the job ends, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from shared.blobstore import Blobs, BlobStore, digest_of
from shared.sandbox.identity import SandboxUser

HANDOFF_FOLDER = "docpipe-handoff"


class HandoffRefused(RuntimeError):
    """A file will not cross between the service and a child: what the child wrote is not
    what it says it is, or the folders are not safe to hand over. Carries the sentence."""


def handoff_root(configured: Path | None) -> Path:
    """The folder the per-job folders live in: owned by the service, crossed not listed.
    One that is already there must be the service's own folder, not a link: in a shared
    temporary folder, anyone could have made it first (and would then see every job)."""
    root = configured or Path(tempfile.gettempdir()) / HANDOFF_FOLDER
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise HandoffRefused(
            f"The sandbox's handoff folder {root} is not a folder of this service's user; "
            "remove it or set DOCPIPE_SANDBOX_HANDOFF_DIR."
        )
    if stat.S_IMODE(info.st_mode) != 0o711:
        os.chmod(root, 0o711)
    return root


class Handoff:
    """One job's folder of the sandbox user's: `input`, a copy of the job's file that only the
    child may read (its suffix kept: a converter may choose its import filter by it), and
    `out_dir`, where the child writes."""

    def __init__(self, folder: Path, source: Path | str) -> None:
        self.folder = folder
        self.input = folder / f"input{Path(source).suffix}"
        self.out_dir = folder / "out"

    @classmethod
    def create(cls, root: Path, user: SandboxUser, source: Path | str) -> Handoff:
        """Everything is written while the folder is still the service's, and given to the
        user last: nothing the user could plant in it is written through."""
        handoff = cls(Path(tempfile.mkdtemp(prefix="job-", dir=root)), source)
        try:
            shutil.copyfile(source, handoff.input)
            os.chmod(handoff.input, 0o400)  # before: a file of the user's needs CAP_FOWNER
            handoff.out_dir.mkdir(mode=0o700)
            for path in (handoff.input, handoff.out_dir, handoff.folder):
                os.chown(path, user.uid, user.gid)
        except BaseException:
            handoff.remove()
            raise
        return handoff

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def job_handoff(
    root: Path | None, user: SandboxUser | None, source: Path | str
) -> AsyncIterator[Handoff | None]:
    """A job's handoff folder, with a copy of `source`, for the block (None: the children run
    as the service's user and read the store directly)."""
    if user is None:
        yield None
        return
    handoff = await asyncio.to_thread(lambda: Handoff.create(handoff_root(root), user, source))
    try:
        yield handoff
    finally:
        await asyncio.to_thread(handoff.remove)


@contextlib.contextmanager
def _open_beneath(root: Path, relative: Path) -> Iterator[int]:
    """A descriptor of the regular file root/relative, opened one component at a time without
    following a link at any of them (the child owns everything below root)."""
    parts = relative.parts
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)]
    try:
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            fds.append(os.open(part, flags, dir_fd=fds[-1]))
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
        fds.append(fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{relative} is not a regular file")
        yield fd
    finally:
        for fd in fds:
            os.close(fd)


def take_blob(blobs: Blobs, out_dir: Path, uri: str) -> None:
    """Store the blob the child wrote into out_dir under `uri`, once its content is checked
    to hash to that address; HandoffRefused otherwise."""
    layout = BlobStore(out_dir)
    wanted = layout.path_for(digest_of(uri)).relative_to(layout.root)

    def chunks(fd: int) -> Iterator[bytes]:
        while block := os.read(fd, 1 << 20):
            yield block

    try:
        with _open_beneath(layout.root, wanted) as fd:
            stored = blobs.put_chunks(chunks(fd))
    except OSError as exc:
        raise HandoffRefused(
            "The extraction wrote an image that could not be taken back from its sandbox."
        ) from exc
    if stored != uri:
        raise HandoffRefused("The extraction wrote an image whose content does not match its name.")
