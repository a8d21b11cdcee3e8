-- Admission control (docs/decisions/1080). A tenant's document.uploaded beyond its in-flight
-- limit is held: its outbox row stays unpublished while a row here names it, and the outbox
-- relay skips it. Ingest's admission loop releases held rows (deletes them here, in tenant turn)
-- as jobs end; releases and admissions are serialised by one advisory lock, so replicas never
-- release the same slot twice.
CREATE TABLE IF NOT EXISTS held_uploads (
    outbox_id bigint PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
    job_id    uuid NOT NULL UNIQUE REFERENCES jobs (job_id) ON DELETE CASCADE,
    tenant    text NOT NULL,
    priority  smallint NOT NULL,
    held_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A tenant's next held job: the highest priority, then the oldest.
CREATE INDEX IF NOT EXISTS held_uploads_turn
    ON held_uploads (tenant, priority DESC, held_at, outbox_id);

-- A job that ends frees a slot of its tenant: wake every ingest's admission loop at once
-- (NOTIFY is delivered at commit; the loop also polls, so a lost notice only delays).
CREATE OR REPLACE FUNCTION docpipe_job_ended_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('docpipe_admission', NEW.tenant);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS jobs_ended_notify ON jobs;
CREATE TRIGGER jobs_ended_notify
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IN ('queued', 'processing'))
    EXECUTE FUNCTION docpipe_job_ended_notify();

-- A tenant's jobs in flight, counted at every admission and release.
CREATE INDEX IF NOT EXISTS jobs_active_tenant ON jobs (tenant)
    WHERE status IN ('queued', 'processing');
