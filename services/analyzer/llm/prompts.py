"""Prompt templates, versioned by file name: prompts/<name>.v<N>.txt.

A template is an optional system part, a line `=== user ===`, and the user part; placeholders are
`$name` (string.Template). A changed prompt is a new file with the next version, so the version
recorded on each call (and in the cache key) always names the exact text that was sent.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from string import Template

USER_MARK = "=== user ==="
_FILE_NAME = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.txt$")

# The version each prompt is used at (bump together with a new file).
CURRENT = {
    "summary_chunk": 1,
    "summary_reduce": 1,
    "classify": 1,
    "extract": 1,
    "extract_retry": 1,
}


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: Template | None
    user: Template

    @property
    def label(self) -> str:
        """What the ledger records, e.g. "extract.v1"."""
        return f"{self.name}.v{self.version}"

    def messages(self, **values: object) -> list[dict[str, str]]:
        """Chat messages with the placeholders filled (a missing value is an error)."""
        text = {k: str(v) for k, v in values.items()}
        out: list[dict[str, str]] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system.substitute(text)})
        out.append({"role": "user", "content": self.user.substitute(text)})
        return out


def parse_prompt(name: str, version: int, source: str) -> Prompt:
    system_part, mark, user_part = source.partition(USER_MARK)
    if not mark:
        raise ValueError(f"prompt {name}.v{version} has no {USER_MARK!r} line")
    system_text = system_part.strip()
    return Prompt(
        name=name,
        version=version,
        system=Template(system_text) if system_text else None,
        user=Template(user_part.strip()),
    )


@functools.cache
def prompt(name: str, version: int | None = None) -> Prompt:
    """The template `name` at `version` (default: the current one), read once per process."""
    chosen = CURRENT[name] if version is None else version
    folder = resources.files("services.analyzer.llm") / "prompts"
    source = (folder / f"{name}.v{chosen}.txt").read_text(encoding="utf-8")
    return parse_prompt(name, chosen, source)


def available() -> dict[str, list[int]]:
    """Every template file there is, by name (for docs and tests)."""
    found: dict[str, list[int]] = {}
    for entry in (resources.files("services.analyzer.llm") / "prompts").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {k: sorted(v) for k, v in sorted(found.items())}
