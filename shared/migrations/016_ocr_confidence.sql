-- Each OCRed page's mean word confidence (0-100, tesseract's), carried by page.ocred and shown in
-- the result (issue 14, OCR languages); NULL: no words were recognised, or the page was not OCRed.
ALTER TABLE job_pages ADD COLUMN IF NOT EXISTS ocr_confidence real
    CHECK (ocr_confidence >= 0 AND ocr_confidence <= 100);
