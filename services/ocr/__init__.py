"""The OCR service: runs tesseract over the images of each page and publishes the text."""
