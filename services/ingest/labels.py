"""Labels: a job's or a batch's key/value tags, bounded, and the `key:value` filter of the job
lists (a jsonb containment query, served by the GIN index on jobs.labels)."""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

MAX_LABELS = 32
LABEL_KEY_MAX = 64
LABEL_VALUE_MAX = 256
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")


def _parse_json_text(value: object) -> object:
    """A form field carries the labels as JSON text; a JSON body as an object."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError('labels must be a JSON object such as {"project": "alpha"}') from None
    return value


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels are allowed, not {len(labels)}")
    for key, value in labels.items():
        if len(key) > LABEL_KEY_MAX or not _KEY.fullmatch(key):
            raise ValueError(
                f"the label key {key[:80]!r} is not valid: 1 to {LABEL_KEY_MAX} letters, "
                "digits and _ . - /, starting with a letter or digit"
            )
        if len(value) > LABEL_VALUE_MAX:
            raise ValueError(
                f"the value of label {key!r} is longer than {LABEL_VALUE_MAX} characters"
            )
    return labels


Labels = Annotated[dict[str, str], BeforeValidator(_parse_json_text), AfterValidator(check_labels)]


class InvalidLabelFilter(ValueError):
    pass


def parse_label_filters(filters: list[str]) -> dict[str, str]:
    """`["project:alpha", "lang:de"]` -> the object every listed job's labels must contain."""
    wanted: dict[str, str] = {}
    for text in filters:
        key, sep, value = text.partition(":")
        if not sep or not key:
            raise InvalidLabelFilter(
                f"The label filter {text[:80]!r} is not key:value (for example project:alpha)."
            )
        wanted[key] = value
    try:
        return check_labels(wanted)
    except ValueError as exc:
        raise InvalidLabelFilter(f"The label filter is not valid: {exc}.") from None
