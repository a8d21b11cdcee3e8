"""The ingest service: the job HTTP API and the outbox relay that publishes its events."""
