"""docpipe: tests."""
