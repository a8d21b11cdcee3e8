-- Jobs and their progress. Counts are derived from per-item rows with unique keys, so a
-- redelivered event can never be counted twice.
CREATE TABLE IF NOT EXISTS jobs (
    job_id            uuid PRIMARY KEY,
    tenant            text NOT NULL,
    filename          text,
    document_uri      text NOT NULL,
    sha256            text,
    size_bytes        bigint,
    content_type      text,
    format            text,
    ocr_mode          text NOT NULL DEFAULT 'auto' CHECK (ocr_mode IN ('auto', 'always', 'never')),
    priority          smallint NOT NULL DEFAULT 0,
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    stage             text NOT NULL DEFAULT 'queued',
    percent           real NOT NULL DEFAULT 0 CHECK (percent >= 0 AND percent <= 100),
    seq               bigint NOT NULL DEFAULT 0,
    pages_total       integer,
    error             text,
    partial           boolean NOT NULL DEFAULT false,
    stalled           boolean NOT NULL DEFAULT false,
    idempotency_key   text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    first_progress_at timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant, created_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status) WHERE status IN ('queued', 'processing');

-- Per job and stage: what is known to be due, done and failed (kept in step by the progress service).
CREATE TABLE IF NOT EXISTS job_progress (
    job_id     uuid NOT NULL REFERENCES jobs ON DELETE CASCADE,
    stage      text NOT NULL CHECK (stage IN ('extract', 'ocr', 'analyze')),
    total      integer NOT NULL DEFAULT 0,
    done       integer NOT NULL DEFAULT 0,
    failed     integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, stage)
);

CREATE TABLE IF NOT EXISTS job_pages (
    job_id         uuid NOT NULL REFERENCES jobs ON DELETE CASCADE,
    page           integer NOT NULL CHECK (page >= 1),
    extracted_at   timestamptz,
    has_text_layer boolean,
    text           text,
    text_chunks    integer,
    ocr_pending    boolean,
    error          text,
    ocred_at       timestamptz,
    ocr_text       text,
    ocr_chunks     integer,
    ocr_seconds    real,
    ocr_error      text,
    PRIMARY KEY (job_id, page)
);

CREATE TABLE IF NOT EXISTS job_chunks (
    chunk_id     uuid PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES jobs ON DELETE CASCADE,
    page         integer NOT NULL,
    source       text NOT NULL CHECK (source IN ('text-layer', 'ocr')),
    idx          integer NOT NULL,
    start_offset integer NOT NULL,
    end_offset   integer NOT NULL,
    text         text NOT NULL,
    analysis     jsonb NOT NULL,
    cost_usd     double precision NOT NULL DEFAULT 0,
    analyzed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, page, source, idx)
);

CREATE TABLE IF NOT EXISTS job_results (
    job_id     uuid PRIMARY KEY REFERENCES jobs ON DELETE CASCADE,
    result     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every progress message ever pushed, so a WebSocket client reconnecting with ?after=<seq>
-- misses nothing.
CREATE TABLE IF NOT EXISTS job_updates (
    job_id     uuid NOT NULL REFERENCES jobs ON DELETE CASCADE,
    seq        bigint NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- Transactional outbox: a job row and its event commit together; a relay publishes them.
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    message_id   text NOT NULL UNIQUE,
    routing_key  text NOT NULL,
    payload      jsonb NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    priority     smallint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
