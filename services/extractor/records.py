"""The parent's side of the extraction child's records: each stdout line is checked against
spec.ChildRecord (a union tagged by "type") as it crosses the process boundary."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from services.extractor.spec import ChildRecord

_RECORD: TypeAdapter[ChildRecord] = TypeAdapter(Annotated[ChildRecord, Field(discriminator="type")])


def parse_record(line: bytes) -> ChildRecord | None:
    """The record on one line of the child's output, or None when it is not one."""
    try:
        return _RECORD.validate_json(line)
    except ValidationError:
        return None
