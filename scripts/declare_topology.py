"""Declare the bus topology (exchanges, every group's queues, bindings) once, with an admin
user, so services running as least-privilege RabbitMQ users can start (they set
DOCPIPE_DECLARE_TOPOLOGY=false). Idempotent.

    DOCPIPE_AMQP_URL=amqp://<admin>@<broker>/ python -m scripts.declare_topology
"""

from __future__ import annotations

import asyncio

from shared.bus.publisher import declare_topology_at
from shared.settings import Settings
from shared.topology import Topology


def main() -> None:
    settings = Settings()
    topology = Topology.from_settings(settings)
    asyncio.run(declare_topology_at(settings.amqp_url, topology))
    print(f"declared the bus topology {topology.prefix!r}")


if __name__ == "__main__":
    main()
