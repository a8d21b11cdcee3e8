-- A client's cancel is a request, recorded by ingest with its job.cancelled event (outbox, same
-- transaction). Only the progress service writes jobs.status: it turns job.cancelled into
-- status 'cancelled'. The column tells a second cancel, sent before progress has applied the
-- first, that the request is already on its way.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;
