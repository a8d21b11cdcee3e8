from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest

from shared.blobstore import BlobStore
from shared.sandbox import kill_job, run_sandboxed, running_children
from shared.sniff import sniff_bytes
from tests.waiting import wait_until


class TestBlobStore:
    def test_content_addressed_and_idempotent(self, tmp_path: Path) -> None:
        store = BlobStore(tmp_path)
        uri = store.put_bytes(b"hello")
        assert uri == store.put_bytes(b"hello")
        assert uri.startswith("blob://sha256/2cf24dba")
        assert store.read_bytes(uri) == b"hello"
        assert not list(tmp_path.glob(".incoming-*"))

    def test_rejects_paths_that_are_not_digests(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            BlobStore(tmp_path).local_path("blob://sha256/../../etc/passwd")


class TestSandbox:
    async def test_streams_lines(self) -> None:
        lines: list[bytes] = []

        async def collect(line: bytes) -> None:
            lines.append(line)

        result = await run_sandboxed(
            [sys.executable, "-c", "print('a'); print('b')"],
            job_id=None,
            timeout=10,
            cpu_seconds=10,
            memory_mb=512,
            on_line=collect,
        )
        assert result.failure is None and lines == [b"a\n", b"b\n"]

    async def test_wall_clock_limit(self) -> None:
        result = await run_sandboxed(
            ["sleep", "30"], job_id=None, timeout=0.5, cpu_seconds=10, memory_mb=256
        )
        assert result.failure and "time limit" in result.failure

    async def test_cpu_limit(self) -> None:
        result = await run_sandboxed(
            [sys.executable, "-c", "while True: pass"],
            job_id=None,
            timeout=20,
            cpu_seconds=1,
            memory_mb=512,
        )
        assert result.failure and "CPU-time" in result.failure

    async def test_memory_limit(self) -> None:
        result = await run_sandboxed(
            [sys.executable, "-c", "x = bytearray(3 * 1024**3)"],
            job_id=None,
            timeout=20,
            cpu_seconds=10,
            memory_mb=400,
        )
        assert result.failure is not None and "MemoryError" in result.stderr

    async def test_kill_job_stops_its_children(self) -> None:
        job = uuid.uuid4()
        task = asyncio.ensure_future(
            run_sandboxed(["sleep", "30"], job_id=job, timeout=30, cpu_seconds=10, memory_mb=256)
        )
        await wait_until(lambda: running_children(job) == 1, what="the child runs the job")
        assert kill_job(job) == 1
        result = await asyncio.wait_for(task, 5)
        assert result.failure == "The job was cancelled."


class TestSniff:
    @pytest.mark.parametrize(
        ("head", "expected"),
        [
            (b"%PDF-1.7\n", "pdf"),
            (b"\x89PNG\r\n\x1a\n....", "png"),
            (b"\xff\xd8\xff\xe0", "jpeg"),
            (b"II*\x00\x08\x00", "tiff"),
            (b"<!DOCTYPE html><html><body>hi</body></html>", "html"),
            (b"a,b,c\n1,2,3\n4,5,6\n", "csv"),
            (b"Just some words.\nAnother line.\n", "txt"),
            (b"\x00\x01\x02\x03\x04garbage", None),
            (b"", None),
        ],
    )
    def test_formats_by_bytes(self, head: bytes, expected: str | None) -> None:
        assert sniff_bytes(head) == expected

    def test_an_office_zip_is_told_by_its_main_part(self) -> None:
        assert sniff_bytes(b"PK\x03\x04rest", zip_names=["word/document.xml"]) == "docx"
        office = ["[Content_Types].xml"]
        assert sniff_bytes(b"PK\x03\x04rest", zip_names=[*office, "xl/workbook.xml"]) == "xlsx"
        assert sniff_bytes(b"PK\x03\x04rest", zip_names=["xl/workbook.xml"]) is None
        assert sniff_bytes(b"PK\x03\x04rest", zip_names=["a.txt"], zip_format="epub") == "epub"
