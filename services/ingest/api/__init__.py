"""docpipe: services.ingest.api."""
