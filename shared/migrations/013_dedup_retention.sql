-- Duplicate documents, deletion and retention (issue 12, parts 5 and 6).

-- Duplicates: a job's dedup_key is a digest of its tenant's content hash and the options that
-- change what processing produces (services/ingest/dedup.py). A job created for a duplicate
-- names the job whose result it reuses (completed) or waits for (active: it is a follower).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS dedup_key text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS deduplicated_from uuid;
-- Rendered and embedded images are deleted once their OCR is recorded, unless the job asked
-- to keep them.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS keep_images boolean NOT NULL DEFAULT false;
-- Set once the retention sweep has trimmed a finished job's job_updates to its final one.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS updates_trimmed boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS jobs_dedup ON jobs (tenant, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_followers ON jobs (deduplicated_from)
    WHERE deduplicated_from IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_updates_untrimmed ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND NOT updates_trimmed;

-- The blobs a job references besides its document: the images the extractor rendered or cut
-- out of it (recorded by progress from images.extracted). The blob store is content-addressed,
-- so two jobs may share a blob: a blob file is deleted only when no job references it any more.
CREATE TABLE IF NOT EXISTS job_blobs (
    job_id   uuid NOT NULL REFERENCES jobs ON DELETE CASCADE,
    blob_uri text NOT NULL,
    page     integer NOT NULL,
    kind     text NOT NULL,
    PRIMARY KEY (job_id, blob_uri)
);
CREATE INDEX IF NOT EXISTS job_blobs_uri ON job_blobs (blob_uri);
CREATE INDEX IF NOT EXISTS jobs_document_uri ON jobs (document_uri);
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Deleted jobs: only the id and when, so a late message of a deleted job (an upload redelivered
-- to the extractor, a page still in a queue) is dropped instead of re-creating the job. Trimmed
-- after deleted_jobs_keep_days, far beyond any retry.
CREATE TABLE IF NOT EXISTS deleted_jobs (
    job_id     uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deleted_jobs_at ON deleted_jobs (deleted_at);
