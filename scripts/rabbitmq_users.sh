#!/usr/bin/env bash
# RabbitMQ users with least privilege, one per service and one per upstream publisher
# (issue 10; docs/decisions/0970-amqp-users-and-publishers.md). Idempotent: run it again and
# each user ends with its password, permissions and topic permissions as written here.
#
#   scripts/rabbitmq_users.sh                     every user, topic permissions on "docpipe"
#   scripts/rabbitmq_users.sh --topic-only NAME   only the topic permissions on exchange NAME
#                                                 (a test run's private exchange)
#   scripts/rabbitmq_users.sh --clear-topic NAME  remove them again (the exchange is gone)
#   scripts/rabbitmq_users.sh --definitions FILE  every user, then write them (vhost, users
#                                                 with password hashes, permissions) as a
#                                                 RabbitMQ definitions file: how
#                                                 deploy/rabbitmq/definitions.json is made
#
# Passwords: DOCPIPE_AMQP_PASSWORD_<USER> (upper case, '-' as '_'), e.g.
# DOCPIPE_AMQP_PASSWORD_DOCPIPE_INGEST, from the deployment's secrets. Unset, a user gets its
# development password "<user>-dev" (shared/bus/identity.py): fine on a development broker
# (`make services`, CI), refused with DOCPIPE_ENV=production.
#
# Names: every exchange and queue starts with the bus prefix (DOCPIPE_BUS_PREFIX: "docpipe",
# "docpipe_test_<run>" in tests), which has no dot. The regexes match any prefix
# (PREFIX_REGEX, "[^.]+") so one set of users serves every test run; pin it in production
# (DOCPIPE_AMQP_PREFIX_REGEX=docpipe).
set -euo pipefail
shopt -s extglob

VHOST=${DOCPIPE_AMQP_VHOST:-/}
P=${DOCPIPE_AMQP_PREFIX_REGEX:-[^.]+}
EXCHANGE=${DOCPIPE_BUS_PREFIX:-docpipe}
# Upstream publishers: user=tenant pairs (the same mapping goes to DOCPIPE_AMQP_TENANTS).
UPSTREAM=${DOCPIPE_AMQP_UPSTREAM_USERS:-upstream-dev=dev upstream-other=other}
SERVICES="ingest extractor ocr analyzer progress"

if ! command -v rabbitmqctl >/dev/null; then
  echo "rabbitmq_users: rabbitmqctl not found; with deploy/compose.yaml the users come from" \
    "deploy/rabbitmq/definitions.json" >&2
  exit 0
fi

ctl() { rabbitmqctl -q "$@" >/dev/null; }

topic() {  # topic permissions of every user on one exchange and its urgent lane's exchange
  local exchange
  for exchange in "$1" "$1.urgent"; do topic_on "$exchange"; done
}

topic_on() {
  local exchange=$1 pair
  for pair in $UPSTREAM; do
    # An upstream publisher may publish document.uploaded and nothing else, and bind nothing.
    ctl set_topic_permissions -p "$VHOST" "${pair%%=*}" "$exchange" '^document\.uploaded$' '^$'
  done
  local service
  for service in $SERVICES; do
    # A service binds only its job.cancelled broadcast queue (the topology binds the rest).
    ctl set_topic_permissions -p "$VHOST" "docpipe-$service" "$exchange" '.*' '^job\.cancelled$'
  done
}

case "${1:-}" in
  --topic-only) topic "${2:?exchange name}"; exit 0 ;;
  --clear-topic)
    for exchange in "${2:?exchange name}" "$2.urgent"; do
      for pair in $UPSTREAM; do
        ctl clear_topic_permissions -p "$VHOST" "${pair%%=*}" "$exchange" || true
      done
      for service in $SERVICES; do
        ctl clear_topic_permissions -p "$VHOST" "docpipe-$service" "$exchange" || true
      done
    done
    exit 0 ;;
  --definitions) DEFINITIONS=${2:?definitions file} ;;
esac

password_of() {
  local user=$1 var
  var="DOCPIPE_AMQP_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!var:-}" ]; then
    printf '%s' "${!var}"
  elif [ "${DOCPIPE_ENV:-dev}" = "production" ]; then
    echo "rabbitmq_users: $var is not set (DOCPIPE_ENV=production has no development passwords)" >&2
    exit 1
  else
    printf '%s' "$user-dev"
  fi
}

ensure_user() {
  local user=$1 password
  password=$(password_of "$user")
  if rabbitmqctl -q list_users | cut -f1 | grep -qx -- "$user"; then
    printf '%s' "$password" | ctl change_password "$user"
  else
    printf '%s' "$password" | ctl add_user "$user"
  fi
}

# What each service's queues are called: <prefix>.<group>, .dlq, .retry.<ms>, on quorum
# queues also the urgent lane <prefix>.<group>.urgent and its .urgent.retry.<ms>, and its
# job.cancelled broadcast queues <prefix>.broadcast.<service>.<hex>.
own_queues() { echo "^$P\\.$1(\\.urgent)?(\\.dlq|\\.retry\\.[0-9]+)?\$"; }
broadcast() { echo "^$P\\.broadcast\\.$1\\.[0-9a-f]+\$"; }
# The topic exchanges (<prefix>, and <prefix>.urgent on quorum queues): publish events, bind
# the broadcast queue.
EVENTS="^$P(\\.urgent)?\$"
# Live progress between progress replicas: the fanout exchange <prefix>.progress.live and each
# replica's own queue <prefix>.progress.live.<hex> (exclusive, auto-delete), bound to it.
LIVE="^$P\\.progress\\.live\$"
LIVE_QUEUES="^$P\\.progress\\.live\\.[0-9a-f]+\$"
DEAD="^$P\\.dlx\$"       # the dead-letter exchange
DEFAULT='^amq\.default$' # retries and replays go straight into a queue

for service in $SERVICES; do
  user="docpipe-$service"
  ensure_user "$user"
  case $service in
    ingest)  # publishes uploads and cancels from its outbox; consumes only its broadcast
      configure="$(broadcast ingest)"
      write="$EVENTS|$(broadcast ingest)"
      read="$EVENTS|$(broadcast ingest)" ;;
    progress)  # its own queue, every group's dead letters (recorded, replayed), and live
      # progress: publish to the live exchange, bind (write) and read its own live queue
      configure="$(own_queues progress)|$(broadcast progress)|$LIVE_QUEUES"
      write="$EVENTS|$DEAD|$DEFAULT|$(broadcast progress)|$LIVE|$LIVE_QUEUES"
      read="$EVENTS|^$P\\.progress\$|^$P\\.[^.]+\\.dlq\$|$(broadcast progress)|$LIVE|$LIVE_QUEUES" ;;
    *)  # extractor, ocr, analyzer: their own queue, retries and dead letters
      configure="$(own_queues "$service")|$(broadcast "$service")"
      write="$EVENTS|$DEAD|$DEFAULT|$(broadcast "$service")"
      read="$EVENTS|^$P\\.$service(\\.urgent)?\$|$(broadcast "$service")" ;;
  esac
  ctl set_permissions -p "$VHOST" "$user" "$configure" "$write" "$read"
done

for pair in $UPSTREAM; do
  user=${pair%%=*}
  ensure_user "$user"
  # Write on the topic exchanges only (the topic permission limits the routing key); nothing
  # to configure, nothing to read.
  ctl set_permissions -p "$VHOST" "$user" '^$' "$EVENTS" '^$'
done

topic "$EXCHANGE"
echo "rabbitmq_users: service and upstream users ready (vhost $VHOST)"

if [ -n "${DEFINITIONS:-}" ]; then
  # Only what this script made (and guest, the local admin): not the queues of whatever runs.
  keep="guest docpipe-${SERVICES// / docpipe-} ${UPSTREAM//=+([^ ])/}"
  rabbitmqctl -q export_definitions - --format json | KEEP="$keep" python3 -c '
import json, os, sys
keep = set(os.environ["KEEP"].split())
d = json.load(sys.stdin)
out = {
    "vhosts": d["vhosts"],
    "users": [u for u in d["users"] if u["name"] in keep],
    "permissions": [p for p in d["permissions"] if p["user"] in keep],
    "topic_permissions": [p for p in d["topic_permissions"] if p["user"] in keep],
}
for key in ("users", "permissions", "topic_permissions"):
    out[key].sort(key=lambda item: (item.get("name") or item["user"], item.get("exchange", "")))
json.dump(out, sys.stdout, indent=2, sort_keys=True)
print()
' >"$DEFINITIONS"
  echo "rabbitmq_users: wrote $DEFINITIONS"
fi
