-- What a document says about itself (issue 14): title, author, subject, dates, language,
-- producer and page count, as the extractor read them (extraction.started). The progress
-- service writes it with the job row and puts it in the result.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS document_metadata jsonb;
-- A page's headings ([{level, text}], where the format marks them), for the Markdown export.
ALTER TABLE job_pages ADD COLUMN IF NOT EXISTS headings jsonb;
