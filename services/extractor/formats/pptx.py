"""PPTX: each slide a page: its title first, then the text of its shapes in reading order
(top to bottom, then left to right), tables row by row and grouped shapes included, then the
speaker notes under a `Notes:` line.

python-pptx parses with lxml set not to resolve entities; the container is checked first
(shared.sniff.zip_problem).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.extractor.formats import Record, check_chars
from services.extractor.formats.containers import ooxml_metadata, open_zip
from services.extractor.formats.headings import heading, headings_of
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractionFatal, ExtractSpec, meta_record, page_record

# Groups inside groups deeper than this are not read (a hostile deck nests them endlessly).
MAX_GROUP_DEPTH = 16


def shape_texts(shapes: Any, depth: int = 0) -> Iterator[str]:
    """The text of each shape, in reading order (top, then left)."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    def position(shape: Any) -> tuple[int, int]:
        return (shape.top or 0, shape.left or 0)

    for shape in sorted(shapes, key=position):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            if depth < MAX_GROUP_DEPTH:
                yield from shape_texts(shape.shapes, depth + 1)
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = [
                "\t".join(" ".join(cell.text.split()) for cell in row.cells)
                for row in shape.table.rows
            ]
            text = "\n".join(row for row in rows if row.strip())
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text
        else:
            continue
        if text.strip():
            yield text.strip()


def slide_title(slide: Any) -> str:
    title_shape = slide.shapes.title
    if title_shape is None or not title_shape.has_text_frame:
        return ""
    return str(title_shape.text).strip()


def slide_text(slide: Any) -> str:
    title_shape = slide.shapes.title
    title = slide_title(slide)
    parts = [title] if title else []
    title_id = title_shape.shape_id if title_shape is not None else None
    for text in shape_texts(shape for shape in slide.shapes if shape.shape_id != title_id):
        parts.append(text)
    if slide.has_notes_slide:
        notes_frame = slide.notes_slide.notes_text_frame
        notes = notes_frame.text.strip() if notes_frame is not None else ""
        if notes:
            parts.append(f"Notes:\n{notes}")
    return normalize_text("\n\n".join(parts))


def open_presentation(path: str) -> Any:
    import pptx

    with open_zip(path, "presentation"):
        pass
    try:
        return pptx.Presentation(path)
    except Exception as exc:  # zipfile's, lxml's and python-pptx's package errors alike
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(
            f"The presentation is damaged and could not be read: {detail}."
        ) from exc


def extract_pptx(spec: ExtractSpec) -> Iterator[Record]:
    with open_zip(spec.path, "presentation") as zf:
        metadata = ooxml_metadata(zf)
    presentation = open_presentation(spec.path)
    slides = list(presentation.slides)
    metadata["page_count"] = len(slides)
    yield meta_record("pptx", len(slides), metadata=metadata)
    total = 0
    for number, slide in enumerate(slides, start=1):
        try:
            text = slide_text(slide)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            yield page_record(number, "", has_text_layer=False, error=f"Slide {number}: {detail}")
            continue
        total += len(text)
        check_chars(total, spec)
        headings = headings_of([heading(2, slide_title(slide))])
        yield page_record(number, text, has_text_layer=bool(text), headings=headings)
