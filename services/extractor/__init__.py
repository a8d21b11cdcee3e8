"""The extractor service: turns an uploaded document into page text, chunks and images to OCR."""
