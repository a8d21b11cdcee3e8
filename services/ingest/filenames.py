"""Client filenames are display metadata only: keep a safe, bounded basename."""

from __future__ import annotations

import os
import re
import sys
import unicodedata

MAX_FILENAME_CHARS = 255
# Path separators and the characters Windows forbids in names.
_FORBIDDEN = set('/\\:*?"<>|')
_SPACES = re.compile(r"\s+")


def sanitize_filename(raw: str | None, *, max_chars: int = MAX_FILENAME_CHARS) -> str | None:
    """The basename of `raw` without control, format or path characters, at most `max_chars`
    long (the extension survives truncation). None when nothing usable is left."""
    if not raw:
        return None
    name = unicodedata.normalize("NFC", raw)
    # Basename for either separator: browsers on Windows may send C:\Users\...\file.pdf.
    name = re.split(r"[/\\]", name)[-1]
    # Category C covers control and format characters (e.g. U+202E, which reverses text).
    name = "".join(
        ch
        for ch in name
        if ch not in _FORBIDDEN and not unicodedata.category(ch).startswith(("C", "Zl", "Zp"))
    )
    name = _SPACES.sub(" ", name).strip(" .")
    if not name:
        return None
    if len(name) > max_chars:
        stem, ext = os.path.splitext(name)
        if 1 < len(ext) <= 16:
            name = stem[: max_chars - len(ext)].rstrip(" .") + ext
        else:
            name = name[:max_chars].rstrip(" .")
    return name or None


def filename_length(raw: str | None) -> int:
    """How many characters of `raw` sanitize_filename would keep before truncating: what the
    255-character limit is checked against (a Windows path before the basename does not count)."""
    name = sanitize_filename(raw, max_chars=sys.maxsize)
    return len(name) if name else 0
