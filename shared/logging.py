"""JSON logs via structlog. Every line carries the service name; handlers bind job_id and
correlation_id into contextvars so one `grep <job_id>` follows a job through all services.

No line carries a secret: redact_secrets runs last before rendering, on structlog's lines and on
the standard library's (uvicorn logs a WebSocket's path with its query string, `?token=`
included), and replaces keys, tokens, tickets and passwords with REDACTED."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
# Fields (or header names) whose whole value is a secret.
SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "admin_key",
        "token",
        "access_token",
        "ticket",
        "password",
        "password_token",
        "secret_keys",
        "secret",
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "cookie",
        "set-cookie",
    }
)
# A query parameter whose name ends in one of these: ?token=..., &api_key=..., ?ticket=...
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[\w.-]*(?:key|token|ticket|secret|password|passwd|signature|sig)|auth)=)"
    r"[^&#;\s\"']+"
)
# A header written out: "authorization: Bearer abc", "X-API-Key: abc", ('x-api-key', 'abc').
_HEADER_SECRET = re.compile(
    r"(?i)((?:proxy-)?authorization|x-api-key|cookie)(['\"]?\s*[:=,]\s*(?:b?['\"])?)"
    r"(?:(?:bearer|basic|token)\s+)?[^\s'\",;}\]]+"
)
# A key made by `docpipe keys` (shared/keys.py), wherever it appears.
_STORED_KEY = re.compile(r"dpk_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,}")
_MAX_DEPTH = 4


def redact_text(text: str) -> str:
    """The text with secret query parameters and header values replaced."""
    if "dpk_" in text:
        text = _STORED_KEY.sub(REDACTED, text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    if ":" in text or "," in text or "=" in text:
        text = _HEADER_SECRET.sub(rf"\1\2{REDACTED}", text)
    return text


def _redact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and k.lower() in SECRET_FIELDS
            else _redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact(v, depth + 1) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no key, token, ticket or password leaves in a log line."""
    for name, value in event_dict.items():
        if name.lower() in SECRET_FIELDS and value is not None:
            event_dict[name] = REDACTED
        elif isinstance(value, str | dict | list | tuple):
            event_dict[name] = _redact(value)
    return event_dict


def configure_logging(service: str, level: str = "INFO", json_output: bool = True) -> None:
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        lambda _l, _m, event: {"service": service, **event},
    ]
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Route stdlib logging (uvicorn, faststream, aio-pika) through the same JSON renderer.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_secrets,
                renderer,
            ],
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for noisy in ("aiormq", "aio_pika", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
