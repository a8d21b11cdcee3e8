"""A cap on the uploads one tenant streams at once (per ingest process), so one tenant's idle
or slow uploads cannot take every connection and blob writer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from services.ingest.errors import TooManyUploads

# What a refused client is told to wait: uploads in progress usually end within seconds.
RETRY_AFTER_SECONDS = 1


class UploadSlots:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._in_use: Counter[str] = Counter()

    def in_use(self, tenant: str) -> int:
        return self._in_use[tenant]

    @contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """One of the tenant's slots for the duration; TooManyUploads when all are taken.
        Synchronous on purpose: nothing awaits between the check and the increment."""
        if self._in_use[tenant] >= self.per_tenant:
            raise TooManyUploads(self.per_tenant, RETRY_AFTER_SECONDS)
        self._in_use[tenant] += 1
        try:
            yield
        finally:
            self._in_use[tenant] -= 1
            if not self._in_use[tenant]:
                del self._in_use[tenant]
