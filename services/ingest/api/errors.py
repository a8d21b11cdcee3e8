"""Domain errors to HTTP: one status per error class, and the JSON bodies the API has always
answered with ({"detail": sentence}; 422s in FastAPI's validation-error shape)."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from services.ingest.errors import (
    BatchNotFound,
    IngestError,
    InvalidRequest,
    JobAlreadyEnded,
    JobNotFound,
    NoTenant,
    TooManyInBatch,
    TooManyPendingJobs,
    TooManyUploads,
    UnsupportedFormat,
    UploadRejected,
    UploadTimedOut,
    UploadTooLarge,
)

STATUS_OF: dict[type[IngestError], int] = {
    IngestError: status.HTTP_400_BAD_REQUEST,  # a refusal with no status of its own
    UploadRejected: status.HTTP_400_BAD_REQUEST,
    NoTenant: status.HTTP_403_FORBIDDEN,
    JobNotFound: status.HTTP_404_NOT_FOUND,
    BatchNotFound: status.HTTP_404_NOT_FOUND,
    UploadTimedOut: status.HTTP_408_REQUEST_TIMEOUT,
    JobAlreadyEnded: status.HTTP_409_CONFLICT,
    UploadTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    TooManyInBatch: status.HTTP_413_CONTENT_TOO_LARGE,
    UnsupportedFormat: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    InvalidRequest: status.HTTP_422_UNPROCESSABLE_CONTENT,
    TooManyUploads: status.HTTP_429_TOO_MANY_REQUESTS,
    TooManyPendingJobs: status.HTTP_429_TOO_MANY_REQUESTS,
}


def status_of(error: IngestError) -> int:
    """The status of the error's nearest class in STATUS_OF."""
    return next(STATUS_OF[cls] for cls in type(error).__mro__ if cls in STATUS_OF)


def error_response(error: IngestError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(error, TooManyUploads | TooManyPendingJobs):
        headers["Retry-After"] = str(error.retry_after_seconds)
    if isinstance(error, UploadTimedOut):
        # The rest of the body may still come: the connection cannot be reused.
        headers["Connection"] = "close"
    if isinstance(error, InvalidRequest):
        body: dict[str, object] = {"detail": jsonable_encoder(error.errors)}
    else:
        body = {"detail": error.detail}
    return JSONResponse(body, status_code=status_of(error), headers=headers)


async def _handle_ingest_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IngestError)
    return error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IngestError, _handle_ingest_error)
