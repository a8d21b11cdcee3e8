"""docpipe: services.ingest.api.routes."""
