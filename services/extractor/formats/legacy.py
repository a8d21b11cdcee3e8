"""Legacy binary Office files (.doc, .xls, .ppt): converted by LibreOffice headless to DOCX,
XLSX or PPTX inside the extraction child (so under its CPU, memory, file-size, process and
wall-clock limits, without network), then read by that format's extractor.

LibreOffice is not a dependency: ingest and the extractor accept these formats only where
`soffice` is installed (shared.sniff.legacy_converter); elsewhere the upload gets a 415 that
names the missing converter. What a conversion costs: docs/decisions/1000-office-formats.md.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from services.extractor.formats import Record
from services.extractor.spec import ExtractionFatal, ExtractSpec
from shared.sniff import LEGACY_NAMES, LEGACY_TARGETS, legacy_converter

# A conversion that takes longer is stopped (the child's own wall-clock limit is longer).
CONVERT_TIMEOUT_SECONDS = 120.0


def convert_command(soffice: str, source: Path, target: str, workdir: Path) -> list[str]:
    """soffice's arguments: headless, its own throwaway profile (a shared one would be locked
    by a concurrent conversion), the output beside the input."""
    profile = (workdir / "profile").as_uri()
    return [
        soffice,
        "--headless",
        "--norestore",
        "--nologo",
        "--nolockcheck",
        f"-env:UserInstallation={profile}",
        "--convert-to",
        target,
        "--outdir",
        str(workdir),
        str(source),
    ]


def convert(path: str, fmt: str, workdir: Path) -> Path:
    """The converted file (DOCX, XLSX or PPTX) in `workdir`; ExtractionFatal with a sentence
    when the converter is missing, fails or takes too long."""
    soffice = legacy_converter()
    target = LEGACY_TARGETS[fmt]
    if soffice is None:
        raise ExtractionFatal(
            f"Reading a legacy {LEGACY_NAMES[fmt]} file needs LibreOffice (soffice), which is "
            "not installed on this server."
        )
    source = workdir / f"document.{fmt}"  # soffice picks its import filter by the suffix too
    source.symlink_to(Path(path).resolve())
    env = {**os.environ, "HOME": str(workdir)}
    try:
        done = subprocess.run(
            convert_command(soffice, source, target, workdir),
            capture_output=True,
            timeout=CONVERT_TIMEOUT_SECONDS,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExtractionFatal(
            f"Converting the {LEGACY_NAMES[fmt]} file took longer than "
            f"{CONVERT_TIMEOUT_SECONDS:.0f} seconds."
        ) from exc
    converted = workdir / f"document.{target}"
    if done.returncode != 0 or not converted.exists():
        detail = " ".join(done.stderr.decode("utf-8", "replace").split())[:160]
        raise ExtractionFatal(
            f"LibreOffice could not convert the {LEGACY_NAMES[fmt]} file"
            + (f": {detail}." if detail else " (it may be damaged or encrypted).")
        )
    return converted


def extract_legacy(spec: ExtractSpec) -> Iterator[Record]:
    from services.extractor.formats import extract

    with tempfile.TemporaryDirectory(prefix="legacy-") as tmp:
        converted = convert(spec.path, spec.format, Path(tmp))
        target = replace(spec, path=str(converted), format=LEGACY_TARGETS[spec.format])
        for record in extract(target):
            if record["type"] == "meta":
                record = {**record, "format": spec.format}
            yield record
