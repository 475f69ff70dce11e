#!/usr/bin/env bash
# Sets up chainform on a Debian machine with Node: qemu-utils (qemu-img, qemu-io, qemu-nbd)
# when missing, npm dependencies, and the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null || ! command -v qemu-nbd >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing qemu-utils with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-utils >/dev/null
fi
npm ci --no-audit --no-fund
npm run build
