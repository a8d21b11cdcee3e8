"""Memory for large valid input: the peak resident memory of each service's own process (and,
apart, of its sandboxed children) while one ~19 MB plain-text document goes through the stack
and its result is read, then while three go through at once.

The document is within every limit (upload size, extracted characters), so whatever memory it
takes is memory any tenant can make a service take. The parents are what matter: the children
run under their own address-space limits already. Sampled every 100 ms from a thread, so a
busy event loop in this process cannot stretch the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import BenchStack, corpus_dir, http_client, target

# What the issue measured (one 19 MB TXT) and what each service's own process must stay under.
DOCUMENT_BYTES = 19 * 1024 * 1024
PARENT_PEAK_MAX_MB = 300
SAMPLE_SECONDS = 0.1
# The services whose parents hold the document's text on its way through (ocr sees no text).
TEXT_SERVICES = ("ingest", "extractor", "analyzer", "progress")

_MB = 1024 * 1024
_FALLBACK_PROSE = (
    "the report describes how the committee reviewed each invoice before payment was approved "
    "and which supplier delivered the goods on time while the auditors checked every account "
    "in the ledger for errors that might have been missed during the previous financial year"
)


def prose_source() -> str:
    """Realistic English prose to repeat: the corpus's plain-text book when it is there, else
    sentences made from a small fixed vocabulary."""
    book = corpus_dir() / "office" / "txt-snappy-alice29.txt"
    if book.is_file():
        return book.read_text(encoding="utf-8", errors="replace")
    words = _FALLBACK_PROSE.split()
    sentences = []
    for i in range(2000):
        picked = [words[(i * 7 + j * 3) % len(words)] for j in range(12)]
        sentences.append(" ".join(picked).capitalize() + ".")
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


def large_text(size: int = DOCUMENT_BYTES, salt: str = "") -> bytes:
    """About `size` bytes of UTF-8 prose, paragraphs intact. `salt` makes the bytes (and so the
    content hash) differ between documents of one run."""
    source = prose_source().encode("utf-8")
    head = f"Document {salt}\n\n".encode()
    repeats = max(1, (size - len(head)) // (len(source) + 2))
    return head + b"\n\n".join([source] * repeats)


@dataclass
class ProcessPeaks:
    """Peak RSS (MB) of one service's own process, of its children together, and of both at
    one sample (what the service costs the machine)."""

    parent_mb: float = 0.0
    children_mb: float = 0.0
    total_mb: float = 0.0
    parent_last_mb: float = 0.0


@dataclass
class RssSampler:
    """Samples the RSS of each named process and, apart, of its children every interval."""

    pids: dict[str, int]
    interval: float = SAMPLE_SECONDS
    peaks: dict[str, ProcessPeaks] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        self.peaks = {name: ProcessPeaks() for name in self.pids}

    def sample(self) -> None:
        for name, proc in self._procs.items():
            try:
                parent = proc.memory_info().rss / _MB
                children = 0.0
                for child in proc.children(recursive=True):
                    # A child may end between listing and reading it.
                    with contextlib.suppress(psutil.NoSuchProcess):
                        children += child.memory_info().rss / _MB
            except psutil.NoSuchProcess:
                continue
            peak = self.peaks[name]
            peak.parent_mb = max(peak.parent_mb, parent)
            peak.children_mb = max(peak.children_mb, children)
            peak.total_mb = max(peak.total_mb, parent + children)
            peak.parent_last_mb = parent
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    @property
    def total_peak_mb(self) -> dict[str, float]:
        """Per service, the peak of its process and children together."""
        return {name: p.total_mb for name, p in self.peaks.items()}

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.sample()

    def report(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "parent_peak_mb": round(p.parent_mb, 1),
                "children_peak_mb": round(p.children_mb, 1),
                "parent_after_mb": round(p.parent_last_mb, 1),
            }
            for name, p in self.peaks.items()
        }


async def measure(bs: BenchStack, documents: list[bytes], settle: float = 2.0) -> dict[str, Any]:
    """Submit the documents at once, wait for them, sample throughout and `settle` s after."""
    sampler = RssSampler(bs.service_pids())
    started = time.monotonic()
    with sampler.running():
        async with http_client() as client:
            jobs = [
                (await bs.submit(client, data, f"large-{i}.txt", ocr="never"))[0]
                for i, data in enumerate(documents)
            ]
            await bs.wait_all(jobs, timeout=600)
            seconds = time.monotonic() - started
            # A client then reads each result (ingest serves it): tens of MB of JSON each.
            results = await asyncio.gather(
                *(client.get(f"{bs.api}/v1/jobs/{j}/result", headers=bs.headers) for j in jobs)
            )
            result_mb = [round(len(r.content) / _MB, 1) for r in results if r.status_code == 200]
            if len(result_mb) < len(jobs):
                bs.failures.append(f"large text: {len(jobs) - len(result_mb)} results not served")
            del results
        await asyncio.sleep(settle)  # what the services keep once the work is done
    for i, job in enumerate(jobs):
        status, text = await bs.job_texts(job)
        bs.check_job(f"large text {i}", status, text, baseline_has_text=True)
    return {
        "jobs": len(jobs),
        "seconds": round(seconds, 1),
        "result_mb": result_mb,
        "samples": sampler.samples,
        "services": sampler.report(),
    }


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    size = DOCUMENT_BYTES // 16 if smoke else DOCUMENT_BYTES
    one = await measure(bs, [large_text(size, salt="one")])
    three = await measure(bs, [large_text(size, salt=f"three-{i}") for i in range(3)])
    targets = [
        target(
            f"memory_{name}_parent_peak_mb_large_txt",
            one["services"][name]["parent_peak_mb"],
            f"< {PARENT_PEAK_MAX_MB} MB",
            one["services"][name]["parent_peak_mb"] < PARENT_PEAK_MAX_MB,
            three_at_once_mb=three["services"][name]["parent_peak_mb"],
            after_mb=one["services"][name]["parent_after_mb"],
        )
        for name in (*TEXT_SERVICES, "ocr")
        if name in one["services"]
    ]
    return targets, {"document_bytes": size, "one": one, "three": three}


def markdown_section(detail: dict[str, Any]) -> list[str]:
    """The latest.md section: peaks per service, one document and three at once."""
    one, three = detail["one"]["services"], detail["three"]["services"]
    lines = [
        "",
        f"### Memory: peak RSS per service, {detail['document_bytes'] / _MB:.0f} MB text "
        "document (MB)",
        "",
        "| service | parent, one | parent after | children, one | parent, three at once | "
        "children, three |",
        "|---|---|---|---|---|---|",
    ]
    for name in one:
        a, b = one[name], three[name]
        lines.append(
            f"| {name} | {a['parent_peak_mb']} | {a['parent_after_mb']} | "
            f"{a['children_peak_mb']} | {b['parent_peak_mb']} | {b['children_peak_mb']} |"
        )
    return lines
