-- OCR languages (issue 14, item 5). A job's ocr_lang as submitted (tesseract codes joined by '+';
-- NULL: the deployment's DOCPIPE_OCR_LANG), and each OCRed page's mean word confidence (0-100,
-- tesseract's) carried by page.ocred and shown in the result (NULL: no words recognised, or the
-- page was not OCRed).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ocr_lang text;
ALTER TABLE job_pages ADD COLUMN IF NOT EXISTS ocr_confidence real
    CHECK (ocr_confidence >= 0 AND ocr_confidence <= 100);
