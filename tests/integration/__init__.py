"""docpipe: tests.integration."""
