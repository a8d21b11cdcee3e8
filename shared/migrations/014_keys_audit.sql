-- API keys and the audit trail (issue 10, items 2 and 11).
--
-- api_keys: keys added, rotated and revoked at run time (`docpipe keys`), beside the ones in
-- the settings. Only a SHA-256 of each key is kept: a key is 256 random bits, so a fast hash
-- cannot be reversed by guessing, and a per-request argon2 would cost every call ~50 ms of CPU.
-- tenant NULL: an admin key over every tenant. rotated_to: the key that replaced this one.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      text PRIMARY KEY,
    key_sha256  bytea NOT NULL UNIQUE,
    tenant      text,
    scopes      text[] NOT NULL,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    revoked_at  timestamptz,
    rotated_to  text REFERENCES api_keys (key_id),
    CHECK (scopes <@ ARRAY['submit', 'read', 'cancel', 'admin']::text[]),
    CHECK (tenant IS NOT NULL OR 'admin' = ANY (scopes))
);

-- audit_log: what admins did (replays, purges, cancels of another tenant's job, key changes):
-- who (a key id, never a key), what, when, on what. Append-only: a trigger refuses every
-- UPDATE, DELETE and TRUNCATE, whoever asks.
CREATE TABLE IF NOT EXISTS audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    tenant      text,
    action      text NOT NULL,
    target      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (tenant, id DESC);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END;
$$;
DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
