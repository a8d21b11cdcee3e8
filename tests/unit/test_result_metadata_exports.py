"""Document metadata from extraction.started to the result, and the result's Markdown and
text exports (pure functions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.extractor.records import document_metadata
from services.extractor.spec import meta_record
from services.ingest.exports import ExportFormat, render, to_markdown, to_text
from services.progress.result import ItemTotals, result_head
from services.progress.transitions import advance
from shared.events import DocumentMetadata, ExtractionStarted, JobStatus
from tests.unit.test_progress_transitions import JOB, state

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
METADATA = DocumentMetadata(
    title="Regional sales", author="Finance Team", created="2024-03-05T09:30:00", page_count=2
)


def test_the_meta_records_metadata_becomes_the_events() -> None:
    record = meta_record("xlsx", 2, metadata={"title": "T" * 5000, "language": "en"})
    metadata = document_metadata(record)
    assert metadata is not None and metadata.language == "en"
    assert metadata.title is not None and len(metadata.title) == 1000, "cut, not refused"
    assert document_metadata(meta_record("txt", 1)) is None


def test_the_first_extraction_start_sets_the_metadata() -> None:
    s = state()
    advance(s, ExtractionStarted(job_id=JOB, format="xlsx", pages_total=2, metadata=METADATA))
    later = DocumentMetadata(title="Another")
    advance(s, ExtractionStarted(job_id=JOB, format="xlsx", pages_total=2, metadata=later))
    assert s.document_metadata == {
        "title": "Regional sales",
        "author": "Finance Team",
        "created": "2024-03-05T09:30:00",
        "page_count": 2,
    }


def result_with(metadata: dict[str, object] | None, fmt: str = "xlsx") -> dict[str, object]:
    job = {
        "job_id": uuid.UUID(int=7),
        "filename": "sales.xlsx",
        "format": fmt,
        "pages_total": 2,
        "created_at": T0,
        "started_at": T0,
        "document_metadata": metadata,
    }
    # The head as progress builds it, the text and pages as the database adds them
    # (services/progress/store/items.py; their shape is tested in test_progress_result_sql).
    result = result_head(job, ItemTotals(), status=JobStatus.COMPLETED, finished_at=T0)
    sheet = "Sales\n\nRegion\tRevenue\nNorth\t1200"
    result["pages"] = [
        {"number": 1, "text": sheet, "source": "text-layer"},
        {"number": 2, "text": "Notes on | pipes", "source": "text-layer", "ocr_text": "Scan"},
    ]
    result["text"] = "\n\n".join(
        ["Sales\n\nRegion\tRevenue\nNorth\t1200", "Notes on | pipes", "Scan"]
    )
    return result


def test_the_result_carries_every_metadata_field() -> None:
    result = result_with(METADATA.model_dump(exclude_none=True))
    assert result["metadata"] == {
        "title": "Regional sales",
        "author": "Finance Team",
        "subject": None,
        "created": "2024-03-05T09:30:00",
        "modified": None,
        "language": None,
        "producer": None,
        "page_count": 2,
    }
    bare = result_with(None)["metadata"]
    assert isinstance(bare, dict) and bare["title"] is None and bare["page_count"] == 2


def test_markdown_export_has_title_metadata_page_marks_and_tables() -> None:
    markdown = to_markdown(result_with(METADATA.model_dump(exclude_none=True)))
    assert markdown == (
        "# Regional sales\n"
        "\n"
        "- Author: Finance Team\n"
        "- Created: 2024-03-05T09:30:00\n"
        "- Pages: 2\n"
        "\n"
        "<!-- page 1 -->\n"
        "\n"
        "Sales\n"
        "\n"
        "| Region | Revenue |\n"
        "|---|---|\n"
        "| North | 1200 |\n"
        "\n"
        "<!-- page 2 -->\n"
        "\n"
        "Notes on | pipes\n"
        "\n"
        "Scan\n"
    )


def test_a_markdown_document_keeps_its_own_headings() -> None:
    result = result_with({"title": "Release notes"}, fmt="md")
    result["pages"] = [{"number": 1, "text": "# Release notes\n\n- one\n- two"}]
    markdown = render(result, ExportFormat.MARKDOWN)
    assert markdown == "<!-- page 1 -->\n\n# Release notes\n\n- one\n- two\n"


def test_the_pages_headings_are_marked_in_the_markdown_export() -> None:
    result = result_with({"title": "Minutes"}, fmt="odt")
    result["pages"] = [
        {
            "number": 1,
            "text": "Minutes of the board\n\nThe board met.\n\nVotes\n\nAll agreed.",
            "headings": [
                {"level": 1, "text": "Minutes of the board"},
                {"level": 2, "text": "Votes"},
            ],
        }
    ]
    markdown = render(result, ExportFormat.MARKDOWN)
    assert markdown.endswith(
        "<!-- page 1 -->\n\n# Minutes of the board\n\nThe board met.\n\n## Votes\n\nAll agreed.\n"
    )


def test_text_export_is_plain_with_form_feeds_between_pages() -> None:
    text = to_text(result_with(None))
    assert text == "Sales\n\nRegion\tRevenue\nNorth\t1200\n\f\nNotes on | pipes\n\nScan\n"
    assert render(["not", "a", "result"], ExportFormat.TEXT) == ""


def test_metadata_loses_the_control_characters_postgresql_cannot_store() -> None:
    # A corpus PDF (PDFBOX-3042) has a NUL-terminated /Title: stored as it was, it made
    # progress fail the job (jsonb refuses "\u0000").
    metadata = DocumentMetadata(title="05-30197-CV0.wpd\x00", author="A\x01B\tC")
    assert metadata.title == "05-30197-CV0.wpd"
    assert metadata.author == "AB\tC"
