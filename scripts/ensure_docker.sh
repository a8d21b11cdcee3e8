#!/usr/bin/env bash
# Make sure a Docker daemon answers, starting Debian's dockerd (docker.io) in the background
# where it is installed but not running (CI hosts without systemd). Its log: var/dockerd.log.
set -euo pipefail
cd "$(dirname "$0")/.."
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null; then
  echo "ensure_docker: no Docker daemon and no dockerd: apt-get install docker.io" >&2
  exit 1
fi
[ "$(id -u)" -eq 0 ] || { echo "ensure_docker: starting dockerd needs root" >&2; exit 1; }
mkdir -p var
echo "ensure_docker: starting dockerd"
setsid nohup dockerd >var/dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "ensure_docker: dockerd did not answer within 60 s (see var/dockerd.log)" >&2
exit 1
