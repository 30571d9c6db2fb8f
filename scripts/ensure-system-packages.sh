#!/usr/bin/env bash
# Install the Debian packages whose commands the tests drive as real third-party
# software. Quiet when everything is there; `apt-get update` runs only if something is
# missing. (PostgreSQL has its own script: ensure-postgres.sh.)
set -euo pipefail

# command → package
declare -A wanted=(
  [openssl]=openssl
  [curl]=curl
)

missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${wanted[$cmd]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
