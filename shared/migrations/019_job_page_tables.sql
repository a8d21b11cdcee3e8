-- Tables as data (issue 14, item 4): a page's tables ([{index, rows, first_row?, truncated?}],
-- rows of cell text), as the extractor read them (page.extracted `tables`). The progress
-- service writes them with the page and the result carries them on the page.
ALTER TABLE job_pages ADD COLUMN IF NOT EXISTS tables jsonb;
