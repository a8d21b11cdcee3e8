"""docpipe: tests.browser."""
