"""The `analysis` option of a submit: a JSON object (a multipart form field, or a member of a
JSON body), a named profile from the settings expanded under it, validated into the bus
contract's AnalysisOptions. Every refusal is a 422 with a sentence."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from services.ingest.errors import InvalidRequest
from shared.analysis import AnalysisOptions

FIELD = "analysis"
# A profile of this name applies to every submit that names no analysis (the deployment's
# choice of backend); without it, such jobs get the built-in analyzer.
DEFAULT_PROFILE = "default"


def refuse(message: str, loc: tuple[str, ...] = ()) -> InvalidRequest:
    return InvalidRequest(
        [{"type": "value_error", "loc": ("body", FIELD, *loc), "msg": message, "input": None}]
    )


def parse_analysis(
    raw: str | Mapping[str, Any] | None, profiles: Mapping[str, Mapping[str, Any]]
) -> AnalysisOptions | None:
    """The job's analysis options; None when the request names none and the deployment has
    no "default" profile (the built-in analyzer). `profiles`: name -> options, which the
    request's own members override."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if DEFAULT_PROFILE not in profiles:
            return None
        raw = {"profile": DEFAULT_PROFILE}
    requested = _as_object(raw)
    name = requested.get("profile")
    if name is not None:
        if not isinstance(name, str) or name not in profiles:
            known = ", ".join(sorted(profiles)) or "none are configured"
            raise refuse(f"Unknown analysis profile {name!r} (known: {known}).", ("profile",))
        requested = {**profiles[name], **requested}
    try:
        return AnalysisOptions.model_validate(requested)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise InvalidRequest(
            [{**e, "loc": ("body", FIELD, *e["loc"]), "msg": _sentence(e)} for e in errors]
        ) from None


def _as_object(raw: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise refuse("The analysis option is not valid JSON.") from None
    if not isinstance(raw, Mapping):
        raise refuse("The analysis option must be a JSON object.")
    return dict(raw)


def _sentence(error: Mapping[str, Any]) -> str:
    """pydantic's message, as a sentence naming the member it is about."""
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    where = ".".join(str(p) for p in error.get("loc", ()))
    text = f"analysis.{where}: {msg}" if where else f"analysis: {msg}"
    return text if text.endswith(".") else f"{text}."
