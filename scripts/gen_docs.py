"""Generate the API documents from code into docs/: the OpenAPI schemas of the two HTTP services
(ingest, progress) and the AsyncAPI document of the bus.

    python -m scripts.gen_docs            write them (`make docs`)
    python -m scripts.gen_docs --check    exit 1 if a checked-in document is stale

The apps are built but never started (app.openapi() needs no lifespan, database or broker),
with default settings, so the output does not depend on the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _default_settings() -> Any:
    from shared.settings import Settings

    # Defaults only: DOCPIPE_* variables in the caller's environment must not leak into docs.
    return Settings.model_construct()


def ingest_openapi() -> dict[str, Any]:
    from services.ingest.app import create_app

    return create_app(_default_settings()).openapi()


def progress_openapi() -> dict[str, Any]:
    from services.progress.app import create_app

    return create_app(_default_settings()).openapi()


def asyncapi() -> dict[str, Any]:
    from shared.asyncapi import build_spec

    return build_spec()


GENERATORS: dict[str, Callable[[], dict[str, Any]]] = {
    "openapi-ingest.json": ingest_openapi,
    "openapi-progress.json": progress_openapi,
    "asyncapi.json": asyncapi,
}


def render(document: dict[str, Any]) -> str:
    """The checked-in form: sorted keys, indent 2, trailing newline (stable diffs)."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


@contextlib.contextmanager
def _without_docpipe_env() -> Iterator[None]:
    """Hide DOCPIPE_* variables: the AsyncAPI document runs each service's setup, which may
    read the environment (DOCPIPE_ANALYZER chooses the analyzer, for one)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DOCPIPE_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def generate() -> dict[str, str]:
    """File name -> rendered content, for every document."""
    with _without_docpipe_env():
        return {name: render(make()) for name, make in GENERATORS.items()}


def stale(docs_dir: Path = DOCS) -> list[str]:
    """Names of the documents whose checked-in file is missing or differs from the code."""
    return [
        name
        for name, content in generate().items()
        if not (docs_dir / name).exists() or (docs_dir / name).read_text() != content
    ]


def write(docs_dir: Path = DOCS) -> list[str]:
    """Write every document; returns the names of those that changed."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, content in generate().items():
        path = docs_dir / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a document is stale")
    parser.add_argument("--out", type=Path, default=DOCS, help="directory (default: docs/)")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.out)
        for name in outdated:
            print(f"stale: {args.out / name} (run `make docs`)", file=sys.stderr)
        return 1 if outdated else 0
    changed = write(args.out)
    print(f"wrote {', '.join(changed)}" if changed else "docs are up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
