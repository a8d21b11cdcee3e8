#!/usr/bin/env bash
# docpipe's two PostgreSQL roles (docs/decisions/0980), created or brought up to date; safe to
# run any number of times:
#   - the owner ($DOCPIPE_PG_OWNER_ROLE, docpipe_owner): owns the database and its schema and
#     runs the migrations; may create databases (the test suite makes one per session), nothing
#     else: not superuser, no CREATEROLE;
#   - the runtime role ($DOCPIPE_PG_RUNTIME_ROLE, docpipe_app): what the services connect as;
#     the migrate step grants it DML on the tables and nothing else.
# The database $DOCPIPE_PG_DATABASE (docpipe) is created owned by the owner; an existing one
# made before the split, with the superuser's tables, is handed over to the owner.
#
# Passwords: $DOCPIPE_PG_OWNER_PASSWORD / $DOCPIPE_PG_RUNTIME_PASSWORD, or a file named by
# *_PASSWORD_FILE (a compose or Kubernetes secret); without either, the development passwords
# of shared/db.py (a trust-authenticated local cluster ignores them). The superuser connection
# is $DOCPIPE_PG_ADMIN_URL (password from PGPASSWORD or ~/.pgpass, as psql takes it). Needs
# psql 15 or later (\getenv).
set -euo pipefail

secret() { # secret NAME DEFAULT: $NAME, else the file named by $NAME_FILE, else DEFAULT
  local file_var="$1_FILE"
  if [ -n "${!1:-}" ]; then printf '%s' "${!1}"
  elif [ -n "${!file_var:-}" ]; then tr -d '\n' <"${!file_var}"
  else printf '%s' "$2"; fi
}

admin_url=${DOCPIPE_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
# The compose cluster's development superuser password, unless the caller gave one (a local
# cluster with trust authentication ignores it).
dev_admin_secret="$(dirname "$0")/../deploy/dev-secrets/postgres_password"
if [ -z "${PGPASSWORD:-}" ] && [ -r "$dev_admin_secret" ]; then
  PGPASSWORD=$(tr -d '\n' <"$dev_admin_secret")
  export PGPASSWORD
fi
export PG_OWNER=${DOCPIPE_PG_OWNER_ROLE:-docpipe_owner}
export PG_RUNTIME=${DOCPIPE_PG_RUNTIME_ROLE:-docpipe_app}
export PG_DATABASE=${DOCPIPE_PG_DATABASE:-docpipe}
# Passwords reach psql through its environment, never its command line (ps shows that).
PG_OWNER_PASSWORD=$(secret DOCPIPE_PG_OWNER_PASSWORD docpipe-owner-dev)
PG_RUNTIME_PASSWORD=$(secret DOCPIPE_PG_RUNTIME_PASSWORD docpipe-app-dev)
export PG_OWNER_PASSWORD PG_RUNTIME_PASSWORD

psql "$admin_url" -X -q -v ON_ERROR_STOP=1 <<'SQL'
\getenv owner PG_OWNER
\getenv runtime PG_RUNTIME
\getenv database PG_DATABASE
\getenv owner_password PG_OWNER_PASSWORD
\getenv runtime_password PG_RUNTIME_PASSWORD
SELECT format('CREATE ROLE %I', :'owner') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I', :'runtime') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'runtime') \gexec
ALTER ROLE :"owner" LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'owner_password';
ALTER ROLE :"runtime" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'runtime_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'owner') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'database', :'owner') FROM pg_database WHERE datname = :'database' AND pg_get_userbyid(datdba) <> :'owner' \gexec
\connect :database
-- A database from before the split holds the superuser's tables: the owner must own them to
-- migrate them and to grant the runtime role (a table's serial sequence follows its table).
SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner') FROM pg_namespace WHERE nspname = 'public' AND pg_get_userbyid(nspowner) NOT IN ('pg_database_owner', :'owner') \gexec
SELECT format('ALTER TABLE %s OWNER TO %I', c.oid::regclass, :'owner') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_get_userbyid(c.relowner) <> :'owner' \gexec
SELECT format('ALTER SEQUENCE %s OWNER TO %I', c.oid::regclass, :'owner') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> :'owner' \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'owner') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> :'owner' \gexec
SQL
echo "postgres_roles: roles $PG_OWNER (owner) and $PG_RUNTIME (runtime) ready; database $PG_DATABASE owned by $PG_OWNER"
