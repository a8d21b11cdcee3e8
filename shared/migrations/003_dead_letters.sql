-- Dead letters: every message a consumer group gave up on, recorded by the progress service
-- from the <prefix>.<group>.dlq queues, so an operator can list, inspect, replay and purge them.
--
-- Uniqueness: one row per dead-lettering of a message in a queue, i.e. (queue, dedupe_key,
-- replay_token). dedupe_key is the AMQP message_id (deterministic per logical event), or the
-- body's sha256 when a message came without one. A recorder that inserts and then dies before
-- acking sees the same message again and inserts nothing; two copies of one message dying in
-- the same queue are one dead letter (replaying it once covers both). attempts is left out on
-- purpose: the same message can die with attempt 0 (malformed) or N (retries exhausted) only
-- across a replay, and a replay is what replay_token tells apart: a replay stamps the message
-- with "<dead letter id>.<replay number>", which the bus carries through retries into the
-- next dead-lettering, so a message that dies again after a replay is a new row, and history
-- is kept.
CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigserial PRIMARY KEY,
    message_id   text,
    dedupe_key   text NOT NULL,
    replay_token text NOT NULL DEFAULT '',
    queue        text NOT NULL,             -- the work queue the message died in
    routing_key  text NOT NULL DEFAULT '',  -- the event type
    reason       text NOT NULL,             -- malformed | retries-exhausted | rejected | expired ...
    error        text,
    attempts     integer NOT NULL DEFAULT 0,
    job_id       uuid,                      -- parsed leniently from the body; NULL if it has none
    payload      jsonb,                     -- the body when it is JSON (a document password removed)
    body         bytea NOT NULL,            -- the bytes a replay publishes (same password removal)
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz,
    replay_count integer NOT NULL DEFAULT 0,
    UNIQUE (queue, dedupe_key, replay_token)
);
-- The list is newest first (id order), optionally narrowed by queue, job or reason.
CREATE INDEX IF NOT EXISTS dead_letters_queue_id ON dead_letters (queue, id DESC);
CREATE INDEX IF NOT EXISTS dead_letters_job_id ON dead_letters (job_id, id DESC)
    WHERE job_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS dead_letters_reason_id ON dead_letters (reason, id DESC);
CREATE INDEX IF NOT EXISTS dead_letters_pending ON dead_letters (id) WHERE replayed_at IS NULL;

-- Set when a replay brings a job that failed because of a dead letter back to processing: the
-- job's deadline counts from here, and a job.failed that happened before it is stale.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS revived_at timestamptz;
