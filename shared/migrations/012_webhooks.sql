-- Webhooks (issue 12, part 4): signed completion callbacks delivered through an outbox.
-- A job may carry its own callback URL (a batch's is batches.callback_url, migration 010);
-- a tenant may have a default one, copied here from DOCPIPE_WEBHOOK_DEFAULTS by the progress
-- service at start-up, so the transaction that ends a job picks the URL in SQL.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS callback_url text;

CREATE TABLE IF NOT EXISTS webhook_endpoints (
    tenant     text PRIMARY KEY,
    url        text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per event to deliver, written in the transaction that ended the job or batch.
-- status: pending (to send at next_attempt_at), delivered, failed (gave up after the retry
-- schedule, or the URL can never be reached). `failures` counts the failed attempts of the
-- current schedule (an admin's redelivery starts a new one); `attempts` counts them all.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id     uuid PRIMARY KEY,
    dedupe_key      text NOT NULL UNIQUE,
    tenant          text NOT NULL,
    job_id          uuid REFERENCES jobs ON DELETE CASCADE,
    batch_id        uuid REFERENCES batches ON DELETE CASCADE,
    event_type      text NOT NULL,
    url             text NOT NULL,
    data            jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CHECK (job_id IS NOT NULL OR batch_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_batch
    ON webhook_deliveries (batch_id, created_at) WHERE batch_id IS NOT NULL;

-- Every attempt: when, the HTTP status (none when no answer came), latency and error.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    status_code integer,
    latency_ms  double precision NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);
