"""The failure taxonomy every handler sorts its errors into.

A handler that returns has done its work; `PermanentError` fails the job with its reason;
`JobGone` drops the work quietly; anything else is retried, then dead-lettered.
"""

from __future__ import annotations


class PermanentError(Exception):
    """The input can never succeed (corrupt, encrypted, unsupported, over a limit).

    The job fails at once with `reason`, which is shown to a person as it is.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobGone(Exception):
    """The job was cancelled or has already ended: drop the work quietly."""
