-- Who may read what over the bus (issue 10).
--
-- blob_owners: a document.uploaded naming a blob:// is honoured only when its tenant uploaded
-- that blob. Ingest records the owner in the transaction that creates the job; the same bytes
-- uploaded by two tenants are one blob with two owners.
CREATE TABLE IF NOT EXISTS blob_owners (
    blob_uri   text NOT NULL,
    tenant     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blob_uri, tenant)
);
-- Uploads made before this table existed: jobs with a sha256 came through ingest's upload
-- (a job created from the bus has none), so their tenant uploaded their blob.
INSERT INTO blob_owners (blob_uri, tenant, created_at)
SELECT DISTINCT ON (document_uri, tenant) document_uri, tenant, created_at
FROM jobs
WHERE sha256 IS NOT NULL AND document_uri LIKE 'blob://sha256/%'
ON CONFLICT DO NOTHING;

-- refused_messages: bus messages refused because they claim a job that belongs to another
-- tenant or document (shared.jobs.ensure_job). Nothing of such a message reaches the job;
-- this is where an operator sees that someone tried.
CREATE TABLE IF NOT EXISTS refused_messages (
    id                   bigserial PRIMARY KEY,
    job_id               uuid NOT NULL,
    routing_key          text NOT NULL,
    claimed_tenant       text NOT NULL,
    claimed_document_uri text NOT NULL,
    reason               text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS refused_messages_job_id ON refused_messages (job_id, id DESC);
