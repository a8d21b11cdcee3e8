#!/usr/bin/env bash
# A Debian bookworm base image built here with debootstrap, for hosts that reach Debian's package
# mirror but no container registry (the Dockerfile's default base, python:3.11-slim-bookworm,
# comes from one). Python is Debian's own python3.11 (with venv), which the Dockerfile needs.
#
#   scripts/build_base_image.sh            build docpipe-base:bookworm unless it exists
#   scripts/build_base_image.sh --force    build it again (e.g. for security updates)
#
# DOCPIPE_BASE_IMAGE names the tag; DEBIAN_MIRROR the mirror (default: the first Debian mirror
# in this host's apt sources, so the image fetches from where the host already does).
# Then: docker build --build-arg BASE=docpipe-base:bookworm -t docpipe:latest .
set -euo pipefail

TAG=${DOCPIPE_BASE_IMAGE:-docpipe-base:bookworm}
SUITE=bookworm
if [ "${1:-}" != "--force" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "build_base_image: $TAG exists (--force builds it again)"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "build_base_image: debootstrap is missing: apt-get install debootstrap" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || { echo "build_base_image: debootstrap needs root" >&2; exit 1; }

host_mirror() {  # the first Debian URI in the host's apt sources (deb822 or one-line format)
  { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
      -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\/debian\)[[:space:]].*/\2/p' \
    | head -1
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
[ -n "$MIRROR" ] || { echo "build_base_image: set DEBIAN_MIRROR (no Debian mirror in apt sources)" >&2; exit 1; }

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT" "$ROOT.log"' EXIT
echo "build_base_image: debootstrap $SUITE from $MIRROR"
# minbase: dpkg, apt and essentials only. Python comes after, from apt inside the new root:
# debootstrap's own resolver misses some dependencies (python3.11-venv's distutils).
if ! debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOT" "$MIRROR" \
    >"$ROOT.log" 2>&1; then
  tail -20 "$ROOT.log" >&2
  exit 1
fi
rm -f "$ROOT.log"
# python3.11-venv brings ensurepip, which `python3 -m venv` (the Dockerfile) needs.
if ! DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -qq \
    --no-install-recommends python3.11 python3.11-venv >"$ROOT.log" 2>&1; then
  tail -20 "$ROOT.log" >&2
  exit 1
fi
rm -f "$ROOT.log"
# The base trusts the certificate authorities this host trusts: a host behind a TLS-inspecting
# proxy reaches the package index only through the proxy's CA (pip reads PIP_CERT).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
# Security updates, as the official images carry them.
echo "deb ${MIRROR}-security $SUITE-security main" >>"$ROOT/etc/apt/sources.list"
chroot "$ROOT" ln -sf /usr/bin/python3.11 /usr/local/bin/python3
# What an image does not need: apt's lists, docs, man pages, caches.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log
tar -C "$ROOT" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
echo "build_base_image: $TAG built ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
