#!/usr/bin/env bash
# Debian packages the pipeline and its tests need: tesseract (OCR) with the language data of
# the common European languages and orientation detection (osd), chromium (browser tests),
# prometheus (promtool for alert-rule tests), and for the image and its deployment files
# (tests/deploy, make image): Docker's daemon, debootstrap (the local base image) and
# docker-compose (validates deploy/compose.yaml). Installs only what is missing.
set -euo pipefail
need=()
command -v tesseract >/dev/null || need+=(tesseract-ocr)
# A job's ocr_lang may name any of these (README, "OCR languages"); osd turns rotated scans upright.
for lang in eng deu fra spa ita por nld osd; do
  dpkg-query -W -f='${Status}' "tesseract-ocr-$lang" 2>/dev/null | grep -q "ok installed" \
    || need+=("tesseract-ocr-$lang")
done
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-compose >/dev/null || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_deps: please run: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "install_system_deps: apt-get install ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
