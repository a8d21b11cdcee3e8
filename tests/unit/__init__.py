"""docpipe: tests.unit."""
