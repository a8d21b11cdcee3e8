-- A job's pdf_tables option (issue 14, item 4): NULL = the deployment's DOCPIPE_PDF_TABLES.
-- Kept on the row so that an Idempotency-Key reused with another value is refused (422).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pdf_tables boolean;
