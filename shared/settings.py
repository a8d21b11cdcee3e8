"""All configuration, read from DOCPIPE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def parse_key_map(spec: str) -> dict[str, str]:
    """Parse 'key1=tenant1,key2=tenant2' into {key: tenant}."""
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, tenant = item.partition("=")
        if not sep or not key.strip() or not tenant.strip():
            raise ValueError(f"bad key mapping {item!r}: expected key=tenant")
        mapping[key.strip()] = tenant.strip()
    return mapping


# The development keys: live only with DOCPIPE_ENV=dev.
DEV_API_KEYS = "dev-key=dev,dev-key-2=other"
DEV_ADMIN_KEYS = "admin-key"
# The development key that encrypts document passwords on the bus (shared.secret_box): live
# only with DOCPIPE_ENV=dev. Fernet's format: 32 bytes, url-safe base64.
DEV_SECRET_KEY = "ZG9jcGlwZS1kZXYta2V5LW5vdC1hLXNlY3JldC0zMmI="


def service_user(service: str) -> str:
    """The RabbitMQ user of a docpipe service (scripts/rabbitmq_users.sh creates them)."""
    return f"docpipe-{service}"


# The development upstream publishers, one per development tenant (live only in dev).
DEV_AMQP_TENANTS = {"upstream-dev": "dev", "upstream-other": "other"}
# Trusted to carry any tenant on the bus: ingest publishes the uploads of HTTP tenants; the
# extractor retries uploads and progress replays dead letters (both keep x-published-by).
DEFAULT_TRUSTED_USERS = [service_user(s) for s in ("ingest", "extractor", "progress")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCPIPE_", extra="ignore")

    # Infrastructure
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # The runtime role's URL: DML only (docs/decisions/0980). The default, the local
    # superuser, keeps a bare development checkout working; stacks and deployments set both.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/docpipe"
    # The schema owner's URL, for the migrate step (create, migrate, grant the runtime role).
    # Unset: migrations run with database_url, as they did before the split; a runtime role
    # there starts as long as nothing is pending and otherwise refuses with a sentence.
    migrate_database_url: str | None = None
    blob_dir: Path = Path("var/blobs")
    # Where blobs live (docs/decisions/1050): "local", the folder blob_dir itself; or "s3", an
    # S3-compatible bucket that every machine shares, with blob_dir as this machine's bounded
    # cache of it (the sandboxed children read and write local files there).
    blob_backend: Literal["local", "s3"] = "local"
    blob_cache_max_bytes: int = Field(default=2 * 1024**3, gt=0)
    # The bucket: an endpoint URL for a server other than AWS (MinIO, Ceph, R2...); credentials
    # left empty are read from the usual AWS_* variables and instance metadata by the client.
    s3_bucket: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # Multipart upload: part size (S3's minimum, 5 MiB, by default), and parts in flight at
    # once. One upload holds about part x (concurrency + 2) in memory (measured: 5 MiB x 2,
    # ~23 MB for a 100 MB upload; docs/decisions/1050).
    s3_part_bytes: int = Field(default=5 * 1024**2, ge=5 * 1024**2)
    s3_upload_concurrency: int = Field(default=2, ge=1)
    # Prefix of every exchange and queue name, so a test run can own a private topology. No
    # dot: the RabbitMQ users' permission regexes find the prefix as the first dotted word.
    bus_prefix: str = Field(default="docpipe", pattern=r"^[A-Za-z0-9_-]+$")
    # The queue type of every durable queue (shared/topology.py): "classic" (priority queues,
    # one node) or "quorum" (replicated over a RabbitMQ cluster; an urgent and a bulk lane per
    # worker group instead of priorities). Every service of a deployment must agree.
    queue_type: Literal["classic", "quorum"] = "classic"
    # Whether a service declares the whole topology at start. Least-privilege users may not:
    # the deployment declares it once with an admin user (`python -m scripts.declare_topology`,
    # the stack, compose's definitions) and each service sets this to false.
    declare_topology: bool = True
    # Publishers on the bus (issue 10; shared/bus/identity.py). AMQP users that publish uploads
    # for one tenant each, as JSON ({"upstream-acme": "acme"}; dev: DEV_AMQP_TENANTS), and the
    # users trusted to carry any tenant (a comma list).
    amqp_tenants: dict[str, str] = Field(default_factory=dict)
    amqp_trusted_users: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_TRUSTED_USERS)
    )

    # Auth: "key=tenant,..." for the job API, and a comma list of admin keys. None by
    # default: DOCPIPE_ENV=dev alone fills in the development keys (see the keys block below).
    api_keys: str = ""
    admin_keys: str = ""

    # Network
    host: str = "127.0.0.1"
    ingest_port: int = 8000
    progress_port: int = 8001
    extractor_port: int = 9101
    ocr_port: int = 9102
    analyzer_port: int = 9103

    # Consumers: prefetch bounds how many messages one process works on at once.
    prefetch: int = 16
    extractor_concurrency: int = 2
    # Documents the extractor holds beyond the extractor_concurrency it runs: they wait in a
    # local scheduler, highest priority then smallest file first (a wait of
    # extractor_aging_seconds halves how much a file's size counts). Kept small so replicas
    # share the queue: what one holds, another starting up cannot take (decision 1070). The
    # queue itself is ordered by priority in RabbitMQ.
    extractor_prefetch_spare: int = Field(default=2, ge=0)
    extractor_aging_seconds: float = 10.0
    # Pre-started extraction children waiting for a document (imports paid in advance).
    extract_warm_children: int = 1
    # Consumers whose queued work is reordered by priority (small jobs first) keep their
    # prefetch small: a message already buffered in a consumer cannot be overtaken.
    analyzer_prefetch: int = 8
    ocr_concurrency: int = 2
    progress_prefetch: int = 1024
    # Speed (issue: fast at every scale). A PDF of at least extract_split_pages pages is
    # extracted by two children at once, each on half its pages (0 = never split).
    extract_split_pages: int = 64
    # A long document's pages travel in pages.extracted batches of ~2% of the document, at
    # most this many pages (services/extractor/service.py: batch_size).
    extract_batch_max_pages: int = 32
    # Jobs of at most small_job_pages pages publish their work with at least this priority,
    # so they overtake the pages of a bulk document in every downstream queue.
    small_job_pages: int = 10
    # Extraction children of documents longer than this run at a lower CPU priority (0: off).
    # Off by default: measured here, it cost ~40% of text throughput with a 500-page PDF and
    # did not improve small-job latency, which the scheduler and priorities already keep low.
    extract_nice_above_pages: int = 0
    small_job_priority: int = 5
    # An upload of at most this many bytes is published (and released from admission) with at
    # least small_job_priority. With a small prefetch per extractor replica (decision 1070)
    # and a tenant's jobs beyond its in-flight limit held (1080), the queue's priority is what
    # lets a one-page document overtake its own tenant's backlog (0: off).
    small_upload_bytes: int = 1_048_576
    # Progress: events of every job arriving within this window (or until progress_batch_max
    # of them) are applied in one set-based transaction, with one coalesced update per job
    # (see services/progress/batcher.py; 0: apply whatever is pending at once).
    progress_batch_window_ms: float = 5.0
    progress_batch_max: int = 512

    # Limits (bad input fails its job, never the worker)
    max_upload_bytes: int = 100 * 1024 * 1024
    max_pages: int = 2000
    max_image_pixels: int = 80_000_000
    max_extracted_chars: int = 20_000_000
    extract_timeout_seconds: float = 300.0
    extract_cpu_seconds: int = 300
    extract_memory_mb: int = 1536
    ocr_timeout_seconds: float = 120.0
    ocr_cpu_seconds: int = 120
    ocr_memory_mb: int = 1024
    allow_private_urls: bool = False
    http_fetch_timeout_seconds: float = 30.0

    # OCR
    # The OCR language(s) of a job that names none (a job's ocr_lang), e.g. "eng" or "deu+eng".
    ocr_lang: str = "eng"
    # Turn rotated images upright before recognition: orientation detection runs on an image
    # whose upright reading's mean word confidence is below this (services/ocr/engine.py).
    ocr_orientation: bool = True
    ocr_orientation_below_confidence: float = Field(default=60.0, ge=0, le=100)
    # Tesseract's language data; unset: TESSDATA_PREFIX, else the distribution's folder.
    ocr_tessdata_dir: Path | None = None
    ocr_dpi: int = 300
    ocr_min_image_side: int = 48
    ocr_min_image_area: int = 10_000

    # Chunking
    chunk_max_chars: int = 1200
    # Formats without pages of their own (TXT, CSV, HTML, Markdown, a DOCX between its page and
    # section breaks) are cut into pages of at most this many characters, between paragraphs.
    # A page is what one bus message carries, so this bounds the services' memory per message
    # (docs/decisions/0990, 1020); smaller pages report progress more often.
    flowing_page_chars: int = Field(default=50_000, ge=1_000, le=1_000_000)
    # PDF tables as data (pdfplumber on the pages whose ruling lines look like a grid). Off by
    # default: on the corpus text PDFs it took the pipeline from 0.24 to 0.69 x the bare pypdf
    # loop (benchmarks/pdf_tables.py, the text benchmark; docs/decisions/1040). Other formats'
    # tables cost next to nothing and are always read.
    pdf_tables: bool = False

    # Reliability
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1000, 10000, 60000])
    stall_seconds: float = 300.0
    job_deadline_seconds: float = 3600.0
    # How often the progress service looks for stalled jobs and jobs past their deadline.
    stall_check_seconds: float = 5.0

    # Operations
    log_level: str = "INFO"
    log_json: bool = True
    corpus_dir: Path = Path("../shared/corpus")

    # Sandbox (typed): what extraction and OCR children may do besides CPU time and memory
    # (shared.sandbox.ChildLimits). RLIMIT_FSIZE in MB, RLIMIT_NOFILE, RLIMIT_NPROC (counted per
    # user, not enforced for root), and a network namespace of their own where the kernel allows.
    sandbox_file_mb: int = 512
    sandbox_open_files: int = 256
    sandbox_processes: int = 256
    sandbox_isolate_network: bool = True
    # The user the extraction and OCR children run as ("" = the service's own). Needs root or
    # the capabilities CHOWN, DAC_OVERRIDE, KILL, SETGID and SETUID; a service that lacks them
    # refuses to start. Each job's input is then copied into a folder of that user's
    # (sandbox_handoff_dir, default: a docpipe-handoff folder in the system's temporary folder),
    # and what the child writes is taken back after a check of its content address.
    sandbox_user: str = ""
    sandbox_handoff_dir: Path | None = None

    # Security (issue 10): what a bus message may make the extractor read.
    # file:// documents are read only below these folders ("/a,/b"); none: file:// is refused.
    file_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Ports an http(s):// document may be fetched from ("80,443"); allow_private_urls, a trusted
    # network, lifts this as it lifts the address filter.
    fetch_allowed_ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [80, 443])

    @field_validator("file_roots", "fetch_allowed_ports", "amqp_trusted_users", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _tenants_fit_the_bus(cls, value: str) -> str:
        from shared.bounds import TENANT_MAX

        for tenant in parse_key_map(value).values():
            if len(tenant) > TENANT_MAX:
                raise ValueError(f"tenant {tenant[:80]!r} is longer than {TENANT_MAX} characters")
        return value

    @property
    def tenants_by_key(self) -> dict[str, str]:
        return parse_key_map(self.api_keys)

    @property
    def admin_key_set(self) -> set[str]:
        return {k.strip() for k in self.admin_keys.split(",") if k.strip()}

    # Ingest uploads (issue 10, HTTP hygiene). A request body that sends nothing for
    # upload_read_timeout_seconds is answered 408 and its connection closed; a tenant may stream
    # at most max_concurrent_uploads_per_tenant uploads at once per ingest process (more: 429).
    upload_read_timeout_seconds: float = Field(default=30.0, gt=0)
    max_concurrent_uploads_per_tenant: int = Field(default=100, ge=1)

    # Batches (issue 12, batch API): how many documents one POST /v1/batches may carry.
    batch_max_files: int = Field(default=100, ge=1)
    batch_max_urls: int = Field(default=1000, ge=1)

    # Webhooks (issue 12, part 4; services/progress/webhooks). Default callback URLs per tenant
    # ("tenant=https://...,...") and signing secrets per tenant ("tenant=whsec_<base64>,...";
    # with DOCPIPE_ENV=dev a tenant without one gets a fixed dev secret). A failed delivery is
    # retried after each of these delays in turn (default ~32 h in all), then given up.
    # webhook_public_url: the ingest API's address as receivers reach it (result_url).
    webhook_defaults: str = ""
    webhook_secrets: str = ""
    webhook_retry_delays_seconds: list[float] = Field(
        default_factory=lambda: (
            [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0] + [28800.0] * 3
        )
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_batch: int = Field(default=20, ge=1)
    webhook_allowed_ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [80, 443])
    webhook_public_url: str = ""

    @field_validator("webhook_allowed_ports", mode="before")
    @classmethod
    def _webhook_ports(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_defaults")
    @classmethod
    def _webhook_defaults(cls, value: str) -> str:
        parse_key_map(value)  # raises on a malformed item
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _webhook_secrets(cls, value: str) -> str:
        from standardwebhooks.webhooks import Webhook

        for tenant, secret in parse_key_map(value).items():
            try:
                Webhook(secret)
            except Exception:
                raise ValueError(
                    f"the webhook secret of tenant {tenant!r} is not whsec_<base64>"
                ) from None
        return value

    # Retention (issue 12, dedup-retention; services/progress/retention.py). Finished jobs older
    # than retention_days are purged (None: kept for ever), retention_batch per transaction;
    # page images are deleted image_keep_seconds after their OCR is recorded (unless the job
    # asked keep_images); sent outbox rows, the updates of finished jobs but the final one,
    # and the tombstones of deleted jobs are trimmed after their keep times.
    retention_days: float | None = Field(default=None, gt=0)
    retention_check_seconds: float = Field(default=60.0, gt=0)
    retention_batch: int = Field(default=100, ge=1)
    image_keep_seconds: float = Field(default=300.0, ge=0)
    outbox_keep_seconds: float = Field(default=3600.0, ge=0)
    job_updates_keep_seconds: float = Field(default=3600.0, ge=0)
    deleted_jobs_keep_days: float = Field(default=7.0, gt=0)

    # Keys, scopes, WebSocket tickets (issue 10, "keys"; shared/auth.py, shared/tickets.py).
    # env "dev" (make up, the demo, the benchmarks, the tests) turns on the development keys
    # and long-lived keys in WebSocket URLs (?token=); anywhere else there is neither, and
    # ingest and progress refuse to start without a key. Keys added with `docpipe keys` are
    # looked up again after key_cache_seconds, so a revocation takes effect within that time.
    env: str = "production"
    key_cache_seconds: float = Field(default=5.0, ge=0)
    # Signs WebSocket tickets; unset: a random secret per process (tickets then work only on
    # the progress replica that issued them).
    ticket_secret: SecretStr = SecretStr("")
    ticket_ttl_seconds: float = Field(default=60.0, gt=0, le=3600)

    # Secrets at rest (issue 10, item 5; shared/secret_box.py). Fernet keys ("key1,key2"): the
    # first encrypts document passwords for the bus, every one decrypts, so a new key goes
    # first and an old one stays after it until no message encrypted with it can be left.
    # Ingest and the extractor refuse to start without one outside dev; with
    # DOCPIPE_ENV=dev an unset list holds the development key.
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _secret_key_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def is_dev(self) -> bool:
        return self.env.strip().lower() == "dev"

    @model_validator(mode="after")
    def _dev_keys(self) -> Settings:
        if self.is_dev:
            self.api_keys = self.api_keys or DEV_API_KEYS
            self.admin_keys = self.admin_keys or DEV_ADMIN_KEYS
            self.secret_keys = self.secret_keys or [SecretStr(DEV_SECRET_KEY)]
            self.amqp_tenants = self.amqp_tenants or dict(DEV_AMQP_TENANTS)
        return self

    @model_validator(mode="after")
    def _s3_bucket_named(self) -> Settings:
        if self.blob_backend == "s3" and not self.s3_bucket:
            raise ValueError(
                "DOCPIPE_BLOB_BACKEND=s3 needs the bucket's name in DOCPIPE_S3_BUCKET."
            )
        return self

    # AI analysis (issue 11, the pipeline). Named analysis profiles a submit may name
    # (`{"profile": "invoices"}`), JSON: {"invoices": {"backend": "llm", "tasks": [...], ...}};
    # the request's own members override the profile's. The analyzer keeps this many jobs'
    # options in memory (read from the job row: page events do not carry them).
    analysis_profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    analysis_jobs_cached: int = Field(default=1000, ge=1)

    # Progress ETA (issue 12): how often a progress replica rereads the stage costs that every
    # replica learns from completed jobs (it rereads them at once after learning itself).
    stage_costs_reload_seconds: float = Field(default=15.0, gt=0)

    # Fair shares between tenants (issue 13, item 6; services/ingest/admission.py, decision
    # 1080). A tenant has at most tenant_inflight_default jobs in flight (published, not ended;
    # per tenant: DOCPIPE_TENANT_INFLIGHT='{"t1": 50}'); later ones wait, queued, in PostgreSQL.
    # Beyond tenant_pending_default jobs queued and in flight (DOCPIPE_TENANT_PENDING), a submit
    # is answered 429 with Retry-After: admission_retry_after_seconds. admission_global_inflight
    # (0: none) caps every tenant's together; held jobs are then released by weighted fair share
    # (DOCPIPE_TENANT_WEIGHTS='{"t1": 2}', default 1). A priority above the tenant's ceiling is
    # refused (422); an admin key may use up to 9. The loop rereads the counts every
    # admission_poll_seconds, and at once when a job ends (NOTIFY).
    tenant_inflight_default: int = Field(default=8, ge=1)
    tenant_inflight: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    tenant_pending_default: int = Field(default=10_000, ge=1)
    tenant_pending: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    tenant_weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    admission_global_inflight: int = Field(default=0, ge=0)
    admission_retry_after_seconds: int = Field(default=30, ge=1)
    admission_poll_seconds: float = Field(default=1.0, gt=0)
    priority_ceiling_default: int = Field(default=5, ge=0, le=9)
    tenant_priority_ceiling: dict[str, Annotated[int, Field(ge=0, le=9)]] = Field(
        default_factory=dict
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
