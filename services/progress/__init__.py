"""docpipe: services.progress."""
