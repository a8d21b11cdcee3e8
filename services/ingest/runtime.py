"""What ingest's use cases work with: the service's connections, its settings and the per-tenant
upload cap, as one typed object (the HTTP layer builds it from the app, tests may build it by
hand)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.ingest.limits import UploadSlots
from shared.blobstore import Blobs
from shared.bus import Bus
from shared.settings import Settings


@dataclass(frozen=True)
class IngestRuntime:
    settings: Settings
    pool: asyncpg.Pool
    bus: Bus
    blobs: Blobs
    upload_slots: UploadSlots
