#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL answer on localhost, starting them if they do not:
# the locally installed Debian services where they exist, else deploy/compose.yaml where Docker
# runs, else stop with a message that says exactly what to install.
set -uo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "ensure_services: $name did not come up on port $port" >&2
  return 1
}

rabbit_ready() { port_open 5672 && { ! command -v rabbitmq-diagnostics >/dev/null || rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }; }

missing=()
if ! rabbit_ready; then
  if command -v rabbitmq-server >/dev/null; then
    echo "ensure_services: starting RabbitMQ (rabbitmq-server -detached)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 5672 RabbitMQ || exit 1
    for _ in $(seq 1 60); do rabbit_ready && break; sleep 1; done
    # start_app covers a node left stopped by `rabbitmqctl stop_app`.
    rabbitmqctl -q start_app >/dev/null 2>&1 || true
  else
    missing+=(rabbitmq)
  fi
fi

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "ensure_services: starting PostgreSQL (pg_ctlcluster)"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    wait_port 5432 PostgreSQL || exit 1
  else
    missing+=(postgres)
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo "ensure_services: starting ${missing[*]} with docker compose (deploy/compose.yaml)"
    docker compose -f deploy/compose.yaml up -d "${missing[@]}" || exit 1
    wait_port 5672 RabbitMQ && wait_port 5432 PostgreSQL || exit 1
  else
    cat >&2 <<MSG
ensure_services: cannot reach ${missing[*]} on localhost and cannot start them.
Install the Debian packages and run again:
    sudo apt-get update && sudo apt-get install -y rabbitmq-server postgresql
or install Docker so that deploy/compose.yaml can start them,
or point DOCPIPE_AMQP_URL / DOCPIPE_DATABASE_URL at running servers.
MSG
    exit 1
  fi
fi
# The test suite runs several stacks at once (five services with a pool each, the LLM engine's
# pool, the tests' own): PostgreSQL's default of 100 connections is not enough. A local cluster
# we manage gets 300 (a restart applies it); a server we do not manage is left as it is.
PG_MIN_CONNECTIONS=300
if command -v psql >/dev/null && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  current=$(psql -U postgres -h 127.0.0.1 -Atc "SHOW max_connections" 2>/dev/null || echo "")
  if [ -n "$current" ] && [ "$current" -lt "$PG_MIN_CONNECTIONS" ]; then
    echo "ensure_services: raising PostgreSQL max_connections from $current to $PG_MIN_CONNECTIONS"
    psql -U postgres -h 127.0.0.1 -qc "ALTER SYSTEM SET max_connections = $PG_MIN_CONNECTIONS" \
      && pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart \
      && wait_port 5432 PostgreSQL || exit 1
  fi
fi
! command -v psql >/dev/null || bash scripts/postgres_roles.sh || exit 1  # PostgreSQL owner and runtime roles
bash scripts/rabbitmq_users.sh || exit 1  # per-service and upstream RabbitMQ users
echo "ensure_services: RabbitMQ and PostgreSQL are up"
