-- Batches (issue 12): several jobs submitted together, followed, cancelled and called back as
-- one. Ingest writes a batch's request columns and its jobs' batch_id and labels; the progress
-- service alone writes the aggregate columns (status .. finished_at) and batch_updates, as it
-- alone writes jobs.status.
CREATE TABLE IF NOT EXISTS batches (
    batch_id            uuid PRIMARY KEY,
    tenant              text NOT NULL,
    name                text,
    labels              jsonb NOT NULL DEFAULT '{}'::jsonb,
    options             jsonb NOT NULL DEFAULT '{}'::jsonb,
    callback_url        text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    cancel_requested_at timestamptz,
    -- The aggregate, kept by progress.
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    jobs_total          integer NOT NULL DEFAULT 0,
    jobs_queued         integer NOT NULL DEFAULT 0,
    jobs_running        integer NOT NULL DEFAULT 0,
    jobs_completed      integer NOT NULL DEFAULT 0,
    jobs_failed         integer NOT NULL DEFAULT 0,
    jobs_cancelled      integer NOT NULL DEFAULT 0,
    pages_done          integer NOT NULL DEFAULT 0,
    pages_total         integer NOT NULL DEFAULT 0,
    percent             real NOT NULL DEFAULT 0 CHECK (percent >= 0 AND percent <= 100),
    eta_seconds         integer,
    cost_usd            double precision NOT NULL DEFAULT 0,
    seq                 bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX IF NOT EXISTS batches_tenant_created ON batches (tenant, created_at DESC, batch_id DESC);

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS batch_id uuid REFERENCES batches ON DELETE CASCADE;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS labels jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id, created_at) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_labels ON jobs USING gin (labels jsonb_path_ops);

-- Every aggregate change of a batch, in seq order: what the batch WebSocket replays after ?after=.
CREATE TABLE IF NOT EXISTS batch_updates (
    batch_id   uuid NOT NULL REFERENCES batches ON DELETE CASCADE,
    seq        bigint NOT NULL,
    snapshot   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, seq)
);
