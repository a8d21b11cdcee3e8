"""docpipe's common package: settings, event contract, bus topology, database and blob store."""
