"""docpipe: services."""
