-- A job's docx_comments option (issue 14, item 2), kept on its row so that an Idempotency-Key
-- sent again with the other value is refused (422) like any other changed option.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS docx_comments boolean NOT NULL DEFAULT false;
