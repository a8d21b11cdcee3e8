-- A held upload's size (issue 13, item 6): a tenant's held jobs are released smallest first,
-- aged by their wait (services/ingest/admission.py), so a one-page document submitted behind
-- the tenant's own backlog of reports starts next, and a large one still gets its turn.
ALTER TABLE held_uploads ADD COLUMN IF NOT EXISTS size_bytes bigint;
