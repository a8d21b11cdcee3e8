"""`docpipe`: submit documents, follow them live, read their status and results, cancel them.

    docpipe submit report.pdf scan.tif --follow
    docpipe status <job>      docpipe result <job> [--json]      docpipe cancel <job>
    docpipe dlq list|show|replay|purge      (dead letters, with an admin key)

A client of the HTTP and WebSocket APIs, not a service: it imports nothing from services/.
The live view is fed by the progress service's WebSocket; a dropped connection is resumed with
?after=<last seq>, so no update is missed.
"""
