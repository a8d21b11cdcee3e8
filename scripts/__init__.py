"""docpipe: scripts."""
