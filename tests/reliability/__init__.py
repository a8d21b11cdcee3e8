"""docpipe: tests.reliability."""
