"""What ingest refuses, as domain errors. Each carries the sentence the client reads; the HTTP
layer (services/ingest/api/errors.py) maps each class to its status code."""

from __future__ import annotations

from typing import Any

from services.ingest.filenames import MAX_FILENAME_CHARS


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class IngestError(Exception):
    """A request ingest refuses; `detail` is the sentence shown to the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NoTenant(IngestError):
    def __init__(self) -> None:
        super().__init__("This key has no tenant to submit as.")


class JobNotFound(IngestError):
    def __init__(self) -> None:
        super().__init__("No such job.")


class JobAlreadyEnded(IngestError):
    def __init__(self, status: str) -> None:
        super().__init__(
            f"The job has already {status}; only a queued or running job can be cancelled."
        )
        self.status = status


class UploadRejected(IngestError):
    """The request's form is unusable (400)."""


class UploadInterrupted(UploadRejected):
    def __init__(self) -> None:
        super().__init__("The upload was interrupted.")


class EmptyUpload(UploadRejected):
    def __init__(self) -> None:
        super().__init__("The uploaded file is empty.")


class UploadTooLarge(IngestError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than the upload limit of {human_bytes(limit)}.")
        self.limit = limit


class UnsupportedFormat(IngestError):
    """The bytes are no format docpipe reads; `detail` says which formats it does."""


class UploadTimedOut(IngestError):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The upload sent nothing for {seconds:g} seconds and was stopped; send it again."
        )


class TooManyUploads(IngestError):
    def __init__(self, limit: int, retry_after_seconds: int) -> None:
        super().__init__(
            f"This tenant already has {limit} uploads in progress; "
            f"try again in {retry_after_seconds} s."
        )
        self.retry_after_seconds = retry_after_seconds


def _validation_error(kind: str, loc: tuple[str, ...], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": None}


class InvalidRequest(IngestError):
    """Refused like a FastAPI validation error (422): `errors` in pydantic's shape, so every
    422 of the API has one body schema."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(e.get("msg")) for e in errors))
        self.errors = errors


class MissingFile(InvalidRequest):
    def __init__(self) -> None:
        super().__init__([_validation_error("missing", ("body", "file"), "Field required")])


class FilenameTooLong(InvalidRequest):
    def __init__(self, length: int | None = None) -> None:
        told = f" ({length} characters)" if length is not None else ""
        msg = f"The file name is too long{told}: at most {MAX_FILENAME_CHARS} characters."
        super().__init__([_validation_error("filename_too_long", ("body", "file"), msg)])


class IdempotencyConflict(InvalidRequest):
    def __init__(self, job_id: object) -> None:
        msg = (
            f"This Idempotency-Key was used for job {job_id} with a different file or "
            "options; use a new key for a new upload."
        )
        loc = ("header", "idempotency-key")
        super().__init__([_validation_error("idempotency_conflict", loc, msg)])


# Batches and URL jobs (issue 12, batch API).
class BatchNotFound(IngestError):
    def __init__(self) -> None:
        super().__init__("No such batch.")


class TooManyInBatch(IngestError):
    """More files or URLs than one batch may carry (413)."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(
            f"A batch may carry at most {limit} {what}; split the documents into several batches."
        )
        self.limit = limit


class InvalidDocumentUrl(InvalidRequest):
    def __init__(self, loc: tuple[str, ...], sentence: str) -> None:
        super().__init__([_validation_error("url", loc, sentence)])


class NotABatchBody(InvalidRequest):
    def __init__(self) -> None:
        msg = (
            "Send the batch as a JSON body (application/json, with urls) or as a "
            "multipart/form-data form (files parts)."
        )
        super().__init__([_validation_error("missing", ("body",), msg)])


class EmptyBatch(InvalidRequest):
    def __init__(self) -> None:
        msg = "The batch has no documents: send files (the files field) or urls."
        super().__init__([_validation_error("missing", ("body", "files"), msg)])


class BodyTooLarge(UploadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.detail = f"The JSON body is larger than the limit of {human_bytes(limit)}."
        self.args = (self.detail,)


class OcrLanguageNotInstalled(InvalidRequest):
    def __init__(self, loc: tuple[str, ...], sentence: str) -> None:
        super().__init__([_validation_error("ocr_lang", loc, sentence)])


# Fair shares between tenants (services/ingest/admission.py, decision 1080).
class TooManyPendingJobs(IngestError):
    """The tenant has its limit of jobs queued and in flight (429, with Retry-After)."""

    def __init__(self, limit: int, retry_after_seconds: int) -> None:
        super().__init__(
            f"This tenant already has {limit} jobs queued or in progress, its limit; "
            f"try again in {retry_after_seconds} s, when some have finished."
        )
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds


class PriorityAboveCeiling(InvalidRequest):
    def __init__(self, loc: tuple[str, ...], priority: int, ceiling: int) -> None:
        msg = (
            f"Priority {priority} is above this tenant's ceiling of {ceiling}; "
            f"use a priority from 0 to {ceiling}."
        )
        super().__init__([_validation_error("priority_above_ceiling", loc, msg)])
