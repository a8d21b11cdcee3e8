"""The event contract: every message on the bus, versioned, each with its routing key.

Messages carry references (blob URIs) and derived text, never the uploaded file's bytes.
Ids are deterministic (uuid5 of job, stage and item) so a redelivered or replayed message
maps onto the same rows and is recognised as a duplicate.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.analysis import (
    SUMMARY_MAX,
    AnalysisOptions,
    AnalysisTask,
    LlmTaskResult,
    LlmTaskStatus,
)
from shared.bounds import (
    CHUNK_TEXT_MAX,
    CHUNKS_PER_MESSAGE_MAX,
    CONTENT_TYPE_MAX,
    ENTITIES_MAX,
    FILENAME_MAX,
    HEADINGS_PER_PAGE_MAX,
    IMAGES_PER_PAGE_MAX,
    KEYWORDS_MAX,
    PAGE_TEXT_MAX,
    PAGES_PER_MESSAGE_MAX,
    PASSWORD_TOKEN_MAX,
    TABLES_PER_PAGE_MAX,
    URI_MAX,
    Format,
    MetaValue,
    Name,
    Reason,
    Tenant,
    Uri,
)
from shared.document_tables import Table as Table
from shared.ocr_languages import OcrLang
from shared.vocabulary import ACTIVE_STATUSES as ACTIVE_STATUSES
from shared.vocabulary import TERMINAL_STATUSES as TERMINAL_STATUSES
from shared.vocabulary import JobPhase as JobPhase
from shared.vocabulary import JobStatus as JobStatus
from shared.vocabulary import OcrMode as OcrMode
from shared.vocabulary import PageSource as PageSource
from shared.vocabulary import Stage as Stage

# Namespace for every deterministic id docpipe derives.
DOCPIPE_NS = uuid.UUID("6f1c1e34-5b8e-4d6b-9d0b-7c1a3c2f9a10")


def derive_id(*parts: object) -> uuid.UUID:
    """uuid5 over the parts: the same job, stage and item always give the same id."""
    return uuid.uuid5(DOCPIPE_NS, "/".join(str(p) for p in parts))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event. `routing_key` doubles as the event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routing_key: ClassVar[str]
    version: Literal[1] = 1
    job_id: uuid.UUID
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def route(self) -> str:
        """The routing key this message is published with: the event type, which a subclass
        may extend with a segment that consumers bind on (see PageExtracted.route)."""
        return self.routing_key

    def message_id(self) -> str:
        """Deterministic per logical event, so redeliveries and replays share one id."""
        return str(derive_id(self.job_id, self.routing_key, *self.identity()))

    def identity(self) -> tuple[object, ...]:
        """What makes this event unique within its job (overridden per item event)."""
        return ()


class DocumentUploaded(Event):
    """A document is ready to process. Published by ingest, or straight onto the bus upstream."""

    routing_key: ClassVar[str] = "document.uploaded"
    tenant: Tenant = "bus"
    document_uri: Uri  # blob://sha256/<hex>, file:///path or http(s)://...
    filename: str | None = Field(default=None, max_length=FILENAME_MAX)
    ocr: OcrMode = OcrMode.AUTO
    # Tesseract languages for this job's OCR, e.g. "deu+eng" (None: the deployment's ocr_lang).
    ocr_lang: OcrLang | None = None
    # The document's password, never in clear: a Fernet token under DOCPIPE_SECRET_KEYS
    # (shared.secret_box), which the extractor alone opens.
    password_token: str | None = Field(
        default=None,
        max_length=PASSWORD_TOKEN_MAX,
        pattern=r"^[A-Za-z0-9_-]+={0,2}$",
        description="The PDF's password as a Fernet token under the deployment's "
        "DOCPIPE_SECRET_KEYS (Fernet(key).encrypt(password.encode())); never the password.",
    )
    priority: int = Field(default=0, ge=0, le=9)
    size_bytes: int | None = Field(default=None, ge=0)
    # As sniffed by ingest; the extractor sniffs again.
    content_type: str | None = Field(default=None, max_length=CONTENT_TYPE_MAX)
    # The batch the job belongs to (batches.batch_id), if any; set by ingest.
    batch_id: uuid.UUID | None = None
    # What the analysis does (None: the deployment's default, the built-in analyzer).
    analysis: AnalysisOptions | None = None
    docx_comments: bool = Field(
        default=False,
        description="Read a Word document's comments too (each after the text of its page).",
    )
    pdf_tables: bool | None = Field(
        default=None,
        description="Find a PDF's ruled tables and send them as rows of cells (None: the "
        "deployment's DOCPIPE_PDF_TABLES).",
    )


class ExtractionAccepted(Event):
    """The extractor has taken the document off its queue and recognised its format; it opens
    it as soon as an extraction slot is free (high priority and small documents first)."""

    routing_key: ClassVar[str] = "extraction.accepted"
    format: Format


class DocumentMetadata(BaseModel):
    """What a document says about itself (PDF info and /Lang, OOXML docProps, ODF meta.xml,
    EPUB OPF, email headers, HTML <title> and <meta>); dates in ISO 8601 where they parse.
    Every field is optional: a format or a file may say nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: MetaValue | None = None
    author: MetaValue | None = None
    subject: MetaValue | None = None
    created: MetaValue | None = None
    modified: MetaValue | None = None
    language: MetaValue | None = None
    producer: MetaValue | None = None
    page_count: int | None = Field(default=None, ge=0)


class Heading(BaseModel):
    """A heading the document marks as such (a heading style, <h1>, a slide's title, a sheet's
    name), as it stands in the page's text: what the Markdown export marks as a heading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: int = Field(ge=1, le=6)
    text: MetaValue


class ExtractionStarted(Event):
    """The extractor opened the document and knows how many pages it has, and what the
    document says about itself."""

    routing_key: ClassVar[str] = "extraction.started"
    format: Format
    pages_total: int = Field(ge=0)
    # Set when the extractor had to fetch the document itself.
    document_uri: str | None = Field(default=None, max_length=URI_MAX)
    metadata: DocumentMetadata | None = None


class Chunk(BaseModel):
    """A bounded piece of one page's text; offsets index that page's text of the same source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: uuid.UUID
    page: int
    index: int  # position among the page's chunks of this source
    source: PageSource
    start: int
    end: int
    text: str = Field(max_length=CHUNK_TEXT_MAX)

    @staticmethod
    def make_id(job_id: uuid.UUID, page: int, source: PageSource, index: int) -> uuid.UUID:
        return derive_id(job_id, "chunk", page, source.value, index)


# A page event with chunks to analyse is published as "<type>.chunks": the analyzer binds on
# that, so pages without text (scans awaiting OCR, blank pages) never reach its queue; the
# progress service binds "#" and sees both.
CHUNKS_ROUTE_SUFFIX = "chunks"


def chunked_route(routing_key: str, chunks: list[Chunk]) -> str:
    return f"{routing_key}.{CHUNKS_ROUTE_SUFFIX}" if chunks else routing_key


class CarriesChunks:
    """A page event that carries the chunks of its text: it owes that many analyses, and it is
    routed to the analyzer only when it has any. Deliberately without annotations: pydantic
    would take them for fields of the models that mix this in."""

    @property
    def chunks_total(self) -> int:
        """How many chunk analyses this page event owes (one chunks.analyzed brings them)."""
        return len(self.chunks)  # type: ignore[attr-defined]

    @property
    def route(self) -> str:
        return chunked_route(self.routing_key, self.chunks)  # type: ignore[attr-defined]


def event_type_of(routing_key: str) -> str:
    """The event type a routing key carries: its first two segments ("page.extracted.chunks"
    is a page.extracted)."""
    return ".".join(routing_key.split(".")[:2])


class PageExtracted(CarriesChunks, Event):
    """One page's text layer, cut into chunks, and what is still to come for the page.

    The chunks travel inside the page event: the analyzer consumes page events, so a page
    costs one message to publish, route and store, not one per chunk.
    """

    routing_key: ClassVar[str] = "page.extracted"
    page: int = Field(ge=1)
    text: str = Field(default="", max_length=PAGE_TEXT_MAX)
    has_text_layer: bool = False
    ocr_pending: bool = False  # an images.extracted was published; a page.ocred will follow
    # The text's chunks, source text-layer.
    chunks: list[Chunk] = Field(default_factory=list, max_length=CHUNKS_PER_MESSAGE_MAX)
    error: Reason | None = None  # this page failed; the job may still complete
    # The page's headings in order, where the format knows them.
    headings: list[Heading] = Field(default_factory=list, max_length=HEADINGS_PER_PAGE_MAX)
    # The tables whose rows stand on this page, in order, where the format has tables.
    tables: list[Table] = Field(default_factory=list, max_length=TABLES_PER_PAGE_MAX)

    def identity(self) -> tuple[object, ...]:
        return (self.page,)

    @property
    def table_chars(self) -> int:
        """What the page's tables weigh in a message: their cells' characters, and three
        more per cell (its quotes and comma in the JSON)."""
        return sum(len(cell) + 3 for table in self.tables for row in table.rows for cell in row)


class PagesExtracted(CarriesChunks, Event):
    """Consecutive pages of a long document in one message: each item is the page.extracted
    it stands for. The extractor batches a long document's pages (at most ~2% of the
    document per message, and never holding a page back long), so its bus, analyzer and
    progress cost is per batch, not per page; a short document's pages go one by one."""

    routing_key: ClassVar[str] = "pages.extracted"
    pages: list[PageExtracted] = Field(min_length=1, max_length=PAGES_PER_MESSAGE_MAX)

    @model_validator(mode="after")
    def _one_job(self) -> PagesExtracted:
        if any(p.job_id != self.job_id for p in self.pages):
            raise ValueError("every page of a pages.extracted belongs to its job")
        return self

    @property
    def chunks(self) -> list[Chunk]:
        return [c for p in self.pages for c in p.chunks]

    def identity(self) -> tuple[object, ...]:
        return tuple(p.page for p in self.pages)


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image_id: uuid.UUID
    uri: Uri
    width: int
    height: int
    kind: Literal["page-scan", "embedded"] = "embedded"


class ImagesExtracted(Event):
    """Images of one page to OCR: a rendered scan, or the embedded images of a text page."""

    routing_key: ClassVar[str] = "images.extracted"
    page: int = Field(ge=1)
    images: list[ImageRef] = Field(max_length=IMAGES_PER_PAGE_MAX)
    lang: Name = "eng"

    def identity(self) -> tuple[object, ...]:
        return (self.page,)


class PageOcred(CarriesChunks, Event):
    """OCR of one page's images is done."""

    routing_key: ClassVar[str] = "page.ocred"
    page: int = Field(ge=1)
    text: str = Field(default="", max_length=PAGE_TEXT_MAX)
    # The OCR text's chunks, source ocr.
    chunks: list[Chunk] = Field(default_factory=list, max_length=CHUNKS_PER_MESSAGE_MAX)
    images_ocred: int = 0
    images_skipped: int = 0  # below the size threshold
    # Images turned upright (orientation detection found them rotated) before recognition.
    images_rotated: int = Field(default=0, ge=0)
    ocr_seconds: float = 0.0
    # Tesseract's mean word confidence over the page's recognised words (0-100); None: no words.
    confidence: float | None = Field(default=None, ge=0, le=100)
    error: Reason | None = None

    def identity(self) -> tuple[object, ...]:
        return (self.page,)


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["email", "url", "phone", "date", "money"]
    text: str = Field(max_length=CHUNK_TEXT_MAX)
    start: int
    end: int


class Analysis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    analyzer: Name  # which backend produced it, e.g. "builtin/1"
    language: Name | None
    word_count: int
    keywords: list[Annotated[str, Field(max_length=CHUNK_TEXT_MAX)]] = Field(
        max_length=KEYWORDS_MAX
    )
    entities: list[Entity] = Field(max_length=ENTITIES_MAX)
    cost_usd: float = 0.0  # built-in analysis is free; an LLM backend reports its spend here
    # The LLM's results by task (llm backend); tokens (in + out) as the ledger recorded them.
    llm: dict[AnalysisTask, LlmTaskResult] | None = None
    tokens: int = Field(default=0, ge=0)


class AnalyzedChunk(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk: Chunk
    analysis: Analysis


class ChunksAnalyzed(Event):
    """The analyses of every chunk one page event carried (a page's text layer, or its OCR;
    for a pages.extracted, the chunks of all its pages: `page` is the first of them)."""

    routing_key: ClassVar[str] = "chunks.analyzed"
    page: int = Field(ge=1)
    source: PageSource
    items: list[AnalyzedChunk] = Field(min_length=1, max_length=CHUNKS_PER_MESSAGE_MAX)

    def identity(self) -> tuple[object, ...]:
        return (self.page, self.source.value, *sorted({i.chunk.page for i in self.items}))


class DocumentSummarize(Event):
    """Published by progress instead of completing a job that asked for a summary, once every
    chunk is analysed: the analyzer reduces the chunk summaries to the document's."""

    routing_key: ClassVar[str] = "document.summarize"
    tenant: Tenant


class DocumentSummarized(Event):
    """The document's summary (or why there is none), and what making it cost."""

    routing_key: ClassVar[str] = "document.summarized"
    status: LlmTaskStatus
    summary: str | None = Field(default=None, max_length=SUMMARY_MAX)
    reason: Reason | None = None
    cost_usd: float = Field(default=0.0, ge=0)
    tokens: int = Field(default=0, ge=0)
    chunks_summarised: int = Field(default=0, ge=0)


class JobFailed(Event):
    """The job cannot complete. `reason` is a sentence a person can read."""

    routing_key: ClassVar[str] = "job.failed"
    stage: Name
    reason: Reason


class JobCancelled(Event):
    routing_key: ClassVar[str] = "job.cancelled"
    reason: Reason = "Cancelled by the client."


class JobCompleted(Event):
    """Published by the progress service once it has assembled the result."""

    routing_key: ClassVar[str] = "job.completed"
    tenant: Tenant
    pages_total: int
    chunks_total: int


class JobDeduplicated(Event):
    """Published by ingest for a submission identical to another job of its tenant (same
    content hash and processing options): the job reuses `source_job_id`'s result instead of
    being processed. The progress service completes it at once when the source has completed,
    or when the source completes (it waits as a follower while the source runs)."""

    routing_key: ClassVar[str] = "job.deduplicated"
    source_job_id: uuid.UUID


ALL_EVENTS: tuple[type[Event], ...] = (
    DocumentUploaded,
    ExtractionAccepted,
    ExtractionStarted,
    PageExtracted,
    PagesExtracted,
    ImagesExtracted,
    PageOcred,
    ChunksAnalyzed,
    DocumentSummarize,
    DocumentSummarized,
    JobFailed,
    JobCancelled,
    JobCompleted,
    JobDeduplicated,
)
EVENTS_BY_KEY: dict[str, type[Event]] = {e.routing_key: e for e in ALL_EVENTS}


def parse_event(routing_key: str, body: bytes | str | dict[str, Any]) -> Event:
    """Validate a message body against the model its routing key names.

    Raises KeyError for an unknown key and pydantic.ValidationError for a malformed body.
    """
    model = EVENTS_BY_KEY[event_type_of(routing_key)]
    if isinstance(body, dict):
        return model.model_validate(body)
    return model.model_validate_json(body)
