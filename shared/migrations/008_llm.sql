-- The LLM analysis engine (services/analyzer/llm): a ledger of every model call, the results
-- and cache they produce, budgets shared by every analyzer process, and per-model limits.
-- No foreign key to jobs: the ledger is a record of money spent and outlives the job rows.

-- One row per model call (and per cache hit or budget refusal, which make no call). The row is
-- written with outcome 'reserved' and cost_usd = its worst case before the call is sent, and
-- settled to the server's usage after: a crash in between leaves the reserved cost as spent.
CREATE TABLE IF NOT EXISTS llm_calls (
    call_id          uuid PRIMARY KEY,   -- uuid5 of (job, chunk, task, attempt)
    job_id           uuid NOT NULL,
    tenant           text NOT NULL,
    stage            text NOT NULL DEFAULT 'analyze',
    task             text NOT NULL,      -- summary, classify, extract, summary_document
    chunk_id         uuid NOT NULL,      -- a document-level call uses a uuid5 of the job
    attempt          integer NOT NULL CHECK (attempt >= 1),
    model            text NOT NULL,
    prompt_version   text NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN
                     ('reserved', 'ok', 'retried', 'failed', 'cache_hit', 'cancelled', 'over_budget')),
    reason           text,
    reserved_tokens  integer NOT NULL DEFAULT 0,  -- prompt tokens counted + max_tokens
    reserved_usd     numeric(20, 10) NOT NULL DEFAULT 0,
    input_tokens     integer NOT NULL DEFAULT 0,  -- the server's usage.prompt_tokens
    output_tokens    integer NOT NULL DEFAULT 0,  -- usage.completion_tokens
    cached_tokens    integer NOT NULL DEFAULT 0,  -- usage.prompt_tokens_details.cached_tokens
    cost_usd         numeric(20, 10) NOT NULL DEFAULT 0,
    latency_ms       real,
    budget_scopes    text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz,
    UNIQUE (job_id, chunk_id, task, attempt)
);
CREATE INDEX IF NOT EXISTS llm_calls_tenant_created ON llm_calls (tenant, created_at);
CREATE INDEX IF NOT EXISTS llm_calls_reserved ON llm_calls (created_at) WHERE outcome = 'reserved';

-- A chunk's (or document's) result per task, written once: the first write is kept.
CREATE TABLE IF NOT EXISTS llm_results (
    job_id         uuid NOT NULL,
    chunk_id       uuid NOT NULL,
    task           text NOT NULL,
    tenant         text NOT NULL,
    page           integer,
    chunk_index    integer,
    status         text NOT NULL CHECK (status IN ('ok', 'failed')),
    result         jsonb,
    reason         text,
    model          text NOT NULL,
    prompt_version text NOT NULL,
    cost_usd       numeric(20, 10) NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_id, task)
);

-- Answers reused for identical work of the same tenant (text, model, prompt, options, schema).
CREATE TABLE IF NOT EXISTS llm_cache (
    tenant      text NOT NULL,
    cache_key   text NOT NULL,
    answer      jsonb NOT NULL,
    model       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, cache_key)
);

-- Budgets: spent_usd holds reservations and settled costs; a reservation is an UPDATE that
-- succeeds only while spent_usd + worst case <= limit_usd, under the row's lock.
-- scope: 'job:<uuid>', 'tenant-day:<tenant>:<yyyy-mm-dd>', 'tenant-month:<tenant>:<yyyy-mm>'.
CREATE TABLE IF NOT EXISTS llm_budgets (
    scope      text PRIMARY KEY,
    limit_usd  numeric(20, 10) NOT NULL CHECK (limit_usd >= 0),
    spent_usd  numeric(20, 10) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per model: a shared "not before" (a 429 slows every process) and the misconfigured flag
-- (401/403: stop calling the model until an operator fixes its settings).
CREATE TABLE IF NOT EXISTS llm_models (
    model               text PRIMARY KEY,
    not_before          timestamptz NOT NULL DEFAULT 'epoch',
    misconfigured       text,
    misconfigured_at    timestamptz
);

-- Admissions of the last minute per model: the sliding window behind requests/min and
-- tokens/min, shared by every process (admitted under the llm_models row lock).
CREATE TABLE IF NOT EXISTS llm_rate_admissions (
    model       text NOT NULL,
    admitted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    tokens      integer NOT NULL
);
CREATE INDEX IF NOT EXISTS llm_rate_admissions_model_at ON llm_rate_admissions (model, admitted_at);
