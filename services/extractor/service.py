"""The extractor's handler: DocumentUploaded in; ExtractionStarted, ImagesExtracted and
PageExtracted (with the page's chunks) out, as the sandboxed child produces each page."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from prometheus_client import Counter

from services.extractor.fetch import document_file, resolve_document
from services.extractor.records import document_metadata, page_events, parse_record
from services.extractor.scheduler import Scheduler
from services.extractor.spec import ExtractSpec, MetaRecord, PageRecord
from shared.blobstore import Blobs
from shared.bus import Bus, Delivery, Handler
from shared.errors import JobGone, PermanentError
from shared.events import (
    DocumentUploaded,
    Event,
    ExtractionAccepted,
    ExtractionStarted,
    PageExtracted,
    PagesExtracted,
)
from shared.jobs import blob_owner_check, ensure_job, require_active
from shared.sandbox import ChildLimits, SandboxOutcome, SandboxResult, WarmPool, run_sandboxed
from shared.sandbox.handoff import Handoff, HandoffRefused, job_handoff, take_blob
from shared.secret_box import UnreadableSecret, secret_box
from shared.service import ServiceContext
from shared.settings import Settings
from shared.sniff import sniff_path, unsupported_reason
from shared.topology import MAX_PRIORITY

log = structlog.get_logger(__name__)

CHILD_ARGV = (sys.executable, "-m", "services.extractor.child")
# A warm child imports the format libraries while it waits for its job (see WarmPool).
WARM_CHILD_ARGV = (*CHILD_ARGV, "--preload")

PAGES_EXTRACTED = Counter(
    "docpipe_pages_extracted_total", "Pages extracted and published (text layer and images)"
)


def detect_format(path: Path, filename: str | None = None) -> str:
    """The sniffed format, or PermanentError with a sentence saying why it cannot be read."""
    if path.stat().st_size == 0:
        raise PermanentError("The document is empty (0 bytes).")
    fmt = sniff_path(path, filename)
    if fmt is not None:
        return fmt
    raise PermanentError(unsupported_reason(path))


def document_password(event: DocumentUploaded, settings: Settings) -> str | None:
    """The password the event carries sealed, opened; PermanentError with a sentence when this
    deployment's keys cannot open it (the job cannot succeed on any retry)."""
    if event.password_token is None:
        return None
    try:
        return secret_box(settings).open(event.password_token)
    except UnreadableSecret as exc:
        raise PermanentError(str(exc)) from None


def build_spec(
    path: Path,
    fmt: str,
    event: DocumentUploaded,
    settings: Settings,
    password: str | None = None,
    blob_dir: Path | None = None,
) -> ExtractSpec:
    """`blob_dir`: where the child writes page images (the blob store's child_dir)."""
    return ExtractSpec(
        path=str(path),
        format=fmt,
        blob_dir=str(Path(blob_dir or settings.blob_dir).resolve()),
        password=password,
        ocr=event.ocr.value,
        max_pages=settings.max_pages,
        max_image_pixels=settings.max_image_pixels,
        max_extracted_chars=settings.max_extracted_chars,
        ocr_dpi=settings.ocr_dpi,
        ocr_min_image_side=settings.ocr_min_image_side,
        ocr_min_image_area=settings.ocr_min_image_area,
        split_pages=settings.extract_split_pages,
        nice_above_pages=settings.extract_nice_above_pages,
        flowing_page_chars=settings.flowing_page_chars,
        pdf_tables=settings.pdf_tables if event.pdf_tables is None else event.pdf_tables,
        docx_comments=event.docx_comments,
    )


# A batch holds at most this share of a document's pages, so progress moves in steps of 2%.
BATCH_SHARE = 50


def batch_size(pages_total: int, max_pages: int) -> int:
    """Pages per message for a document of pages_total pages: 1 below 100 pages, then ~2% of
    the document, at most max_pages."""
    return max(1, min(max_pages, pages_total // BATCH_SHARE))


@dataclass
class ExtractionRun:
    """Turns the children's lines into published events as they arrive.

    Publishing is pipelined: each batch of pages goes out as a task (its images first, then
    the pages, so a PageExtracted never announces an OCR that was not confirmed), with at
    most `max_in_flight` batches waiting for broker confirms.

    A long document's pages are batched into pages.extracted messages of at most
    `batch_pages` pages (~2% of the document, see batch_size) or `batch_seconds` of waiting.
    A short document's pages go one by one (a page.extracted each), so its progress moves
    page by page. (Why: docs/decisions/0401-extraction-publishing.md.)

    A large PDF is split: the first child extracts the first half and its meta record says
    so; the run then starts a second child on the rest, so both cores work on one document.
    """

    event: DocumentUploaded
    bus: Bus
    settings: Settings
    spec: ExtractSpec | None = None
    blobs: Blobs | None = None  # where the child's page images go (None: they stay local)
    # The job's folder of the sandbox user's, when the children run as that user: the child's
    # page images are taken back from it, checked, instead of pushed from the store's folder.
    handoff: Handoff | None = None
    fetched_uri: str | None = None
    pages_total: int | None = None
    pages_done: int = 0
    chars: int = 0
    fatal: str | None = None
    priority: int = 0
    max_in_flight: int = 32
    second_child: asyncio.Task[SandboxResult] | None = None
    warm: WarmPool | None = None  # pre-started children to take the work, when ready
    batch_pages: int = 1  # set from the page count (batch_size)
    batch_seconds: float = 0.05
    # A batch's text is bounded too: consumers prefetch messages by count, so the size of
    # one message bounds what a full prefetch window holds in memory.
    batch_max_chars: int = 64_000

    def __post_init__(self) -> None:
        self.priority = self.event.priority
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._pending: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []
        self._batch: list[PageExtracted] = []
        self._batch_chars = 0
        self._batch_images: list[Event] = []
        self._batch_timer: asyncio.TimerHandle | None = None

    async def publish(self, ev: Event) -> None:
        await self.bus.publish(ev, priority=self.priority)

    async def _publish_batch(self, images: list[Event], pages: list[PageExtracted]) -> None:
        await self._slots.acquire()
        try:
            await asyncio.gather(*(self.publish(ev) for ev in images))
            if len(pages) == 1:
                await self.publish(pages[0])
            else:
                await self.publish(PagesExtracted(job_id=self.event.job_id, pages=pages))
            PAGES_EXTRACTED.inc(len(pages))
        except BaseException as exc:
            self._errors.append(exc)
            raise
        finally:
            self._slots.release()

    async def _add_page(self, events: list[Event]) -> None:
        *images, page = events
        assert isinstance(page, PageExtracted)
        self._batch.append(page)
        # A page's tables travel beside its text: they count toward the batch's bound too.
        self._batch_chars += len(page.text) + page.table_chars
        self._batch_images += images
        if len(self._batch) >= self.batch_pages or self._batch_chars >= self.batch_max_chars:
            self.flush()
        elif self._batch_timer is None:
            # A page never waits long for the rest of its batch (a slow page behind it).
            self._batch_timer = asyncio.get_running_loop().call_later(
                self.batch_seconds, self.flush
            )
        while len(self._pending) > self.max_in_flight:
            # Back-pressure: the child waits on a full pipe while confirms are outstanding.
            await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)

    def flush(self) -> None:
        """Start publishing the pages held for the current batch; drain awaits the confirms.
        Synchronous, so a batch is never half taken and drain always sees its task."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        if not self._batch:
            return
        pages, images = self._batch, self._batch_images
        self._batch, self._batch_images, self._batch_chars = [], [], 0
        task = asyncio.create_task(self._publish_batch(images, pages))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Publish what is held, wait for every publish; re-raise the first failure (the bus
        retries)."""
        self.flush()
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._errors:
            raise self._errors[0]

    async def on_line(self, line: bytes) -> None:
        record = parse_record(line)
        if record is None:
            log.warning("ignored a malformed line from the child", line=line[:200])
            return
        if self.fatal is not None:
            return
        if record["type"] == "meta":
            await self._on_meta(record)
        elif record["type"] == "page":
            await self._on_page(record)
        else:
            self.fatal = record["reason"] or "The document could not be read."

    async def _on_meta(self, record: MetaRecord) -> None:
        pages_total = record["pages_total"]
        if self.pages_total is not None:
            return  # the second child's meta: ExtractionStarted went out already
        self.pages_total = pages_total
        self.batch_pages = batch_size(pages_total, self.settings.extract_batch_max_pages)
        if pages_total <= self.settings.small_job_pages:
            # Small jobs overtake bulk ones in every downstream priority queue.
            self.priority = max(self.priority, self.settings.small_job_priority)
        # One small message per job that shows the job has started: it overtakes any
        # backlog of chunk and page events in the downstream queues.
        await self.bus.publish(
            ExtractionStarted(
                job_id=self.event.job_id,
                format=record["format"],
                pages_total=pages_total,
                document_uri=self.fetched_uri,
                metadata=document_metadata(record),
            ),
            priority=MAX_PRIORITY,
        )
        last = record.get("last_page") or pages_total
        if last < pages_total and self.spec is not None:
            rest = replace(self.spec, page_start=last, page_stop=pages_total, split_pages=0)
            self.second_child = asyncio.create_task(
                run_child(self.event, self.settings, rest, self)
            )

    async def _on_page(self, record: PageRecord) -> None:
        self.chars += len(record["text"])
        if self.chars > self.settings.max_extracted_chars:
            # Each child checks its own share; the document-wide limit is checked here.
            self.fatal = (
                "The document has more text than the limit of "
                f"{self.settings.max_extracted_chars} characters."
            )
            return
        if record["images"] and self.blobs is not None:
            # In the store before any ImagesExtracted names them (OCR may run elsewhere).
            try:
                await asyncio.to_thread(store_images, self.blobs, record, self.handoff)
            except HandoffRefused as exc:
                self.fatal = str(exc)
                return
        await self._add_page(page_events(self.event, record, self.settings))
        self.pages_done += 1


def store_images(blobs: Blobs, record: PageRecord, handoff: Handoff | None) -> None:
    for image in record["images"]:
        if handoff is None:
            blobs.push(image["uri"])
        else:
            take_blob(blobs, handoff.out_dir, image["uri"])


async def run_child(
    event: DocumentUploaded, settings: Settings, spec: ExtractSpec, run: ExtractionRun
) -> SandboxResult:
    return await run_sandboxed(
        CHILD_ARGV,
        warm=run.warm,
        job_id=event.job_id,
        timeout=settings.extract_timeout_seconds,
        cpu_seconds=settings.extract_cpu_seconds,
        memory_mb=settings.extract_memory_mb,
        stdin=spec.to_json(),
        on_line=run.on_line,
        child_limits=ChildLimits.from_settings(settings),
    )


def raise_failure(result: SandboxResult) -> None:
    """A child's job that did not end well, sorted into the failure taxonomy."""
    if result.outcome is SandboxOutcome.OK:
        return
    reason = result.failure or "The document could not be extracted."
    if result.outcome is SandboxOutcome.CANCELLED:
        raise JobGone(reason)
    log.warning(
        "extraction child failed",
        outcome=result.outcome,
        failure=reason,
        stderr=result.stderr[-2000:],
    )
    raise PermanentError(reason)


@dataclass
class ExtractorRuntime:
    """What the extractor's handler keeps for the life of the service."""

    # Picks the next document when a slot frees (None: each document runs at once).
    scheduler: Scheduler | None = None
    # Pre-started children that take the work when ready (None: a child per document).
    warm_children: WarmPool | None = None


async def handle_document(
    ctx: ServiceContext, event: DocumentUploaded, runtime: ExtractorRuntime
) -> None:
    settings = ctx.settings
    await ensure_job(ctx.pool, event)
    await require_active(ctx.pool, event.job_id)
    password = document_password(event, settings)
    doc = await resolve_document(
        event.document_uri,
        settings,
        ctx.blobs,
        tenant=event.tenant,
        owns_blob=blob_owner_check(ctx.pool),
    )
    async with document_file(ctx.blobs, doc) as path:
        fmt = await asyncio.to_thread(detect_format, path, event.filename)
        spec = build_spec(path, fmt, event, settings, password, ctx.blobs.child_dir)
        scheduler = runtime.scheduler
        if scheduler is None:
            await extract_document(ctx, event, spec, doc.fetched_uri, runtime.warm_children)
            return
        # Many documents wait here at once; the highest-priority, then smallest, runs next.
        # Say so at once, so a client sees the job move while it waits for a slot.
        await ctx.bus.publish(ExtractionAccepted(job_id=event.job_id, format=fmt), priority=9)
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        async with scheduler.slot(priority=event.priority, size=size):
            await require_active(ctx.pool, event.job_id)  # it may have been cancelled meanwhile
            await extract_document(ctx, event, spec, doc.fetched_uri, runtime.warm_children)


async def extract_document(
    ctx: ServiceContext,
    event: DocumentUploaded,
    spec: ExtractSpec,
    fetched_uri: str | None,
    warm: WarmPool | None = None,
) -> None:
    settings = ctx.settings
    run_as = ChildLimits.from_settings(settings).run_as
    async with job_handoff(settings.sandbox_handoff_dir, run_as, spec.path) as handoff:
        if handoff is not None:  # the child cannot read the store: it gets a copy
            spec = replace(spec, path=str(handoff.input), blob_dir=str(handoff.out_dir))
        run = ExtractionRun(
            event,
            ctx.bus,
            settings,
            spec=spec,
            fetched_uri=fetched_uri,
            warm=warm,
            blobs=ctx.blobs,
            handoff=handoff,
        )
        await run_to_end(event, settings, spec, run)
    log.info("document extracted", format=spec.format, pages=run.pages_done)


async def run_to_end(
    event: DocumentUploaded, settings: Settings, spec: ExtractSpec, run: ExtractionRun
) -> None:
    """Run the document's child (and a split PDF's second), then judge how it all ended."""
    try:
        result = await run_child(event, settings, spec, run)
        second = await run.second_child if run.second_child is not None else None
    finally:
        if run.second_child is not None and not run.second_child.done():
            run.second_child.cancel()  # the first child failed: its sibling's work is moot
            await asyncio.gather(run.second_child, return_exceptions=True)
        await run.drain()
    raise_failure(result)
    if second is not None:
        raise_failure(second)
    if run.fatal is not None:
        raise PermanentError(run.fatal)
    if run.pages_total is None or run.pages_done < run.pages_total:
        log.error("extraction child ended early", stderr=result.stderr[-2000:])
        raise PermanentError(
            f"Extraction stopped after {run.pages_done} of {run.pages_total or '?'} pages."
        )


def make_handler(ctx: ServiceContext, runtime: ExtractorRuntime) -> Handler:
    async def handler(event: DocumentUploaded, delivery: Delivery) -> None:
        await handle_document(ctx, event, runtime)

    return handler
