-- What each stage of the pipeline costs, learned from completed jobs (issue 12, ETA): per stage
-- and document format, a moving average of the seconds of a job's wall time one unit of the
-- stage's work takes (a page extracted, a page ocred, a chunk analyzed), the share of its units
-- done before its own phase begins (overlap) and its units per page. Kept by progress, in
-- PostgreSQL so that every replica shares it; `weight` is the number of pages the average
-- stands for, capped, so older jobs fade out; `samples` counts the jobs that timed the stage
-- (a text PDF teaches OCR's units per page, 0, and not its seconds).
CREATE TABLE IF NOT EXISTS stage_costs (
    stage            text NOT NULL CHECK (stage IN ('extract', 'ocr', 'analyze')),
    format           text NOT NULL,
    seconds_per_unit double precision NOT NULL CHECK (seconds_per_unit >= 0),
    overlap          double precision NOT NULL CHECK (overlap >= 0 AND overlap <= 1),
    units_per_page   double precision NOT NULL CHECK (units_per_page >= 0),
    weight           double precision NOT NULL CHECK (weight > 0),
    samples          bigint NOT NULL DEFAULT 0 CHECK (samples >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, format)
);

-- The learner counts the jobs that ran beside a completed one (started within the deadline
-- before it): a range on started_at.
CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started_at) WHERE started_at IS NOT NULL;
