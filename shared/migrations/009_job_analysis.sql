-- AI analysis in the pipeline (issue 11): what each job asked of the analysis, and what it
-- spent. Ingest writes `analysis`; the progress service alone writes the rest (it alone writes
-- the job row), from chunks.analyzed and document.summarized.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS analysis jsonb;
-- Tokens (in + out) and USD over the job's analysed chunks and its document summary, each
-- counted once (with the chunk's or the summary's first write).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tokens bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cost_usd double precision NOT NULL DEFAULT 0;
-- The document summary's outcome (status, summary, reason, cost_usd, tokens); NULL until the
-- analyzer answers document.summarize, first published at summary_requested_at.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS document_summary jsonb;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS summary_requested_at timestamptz;

ALTER TABLE job_chunks ADD COLUMN IF NOT EXISTS tokens integer NOT NULL DEFAULT 0;
