#!/usr/bin/env bash
# Install the Debian packages whose commands the tests drive as real third-party
# software. Quiet when everything is there; `apt-get update` runs only if something is
# missing. (PostgreSQL has its own script: ensure-postgres.sh.)
#
# The servers (nginx, Apache, HAProxy, Postfix, Dovecot, Caddy) are only used as
# programs: the tests start private instances on 127.0.0.1 high ports under a temp
# prefix. The packages' own services must not start on install, so a policy-rc.d that
# refuses service starts is in place while apt runs, and Postfix is preseeded to
# "No configuration".
set -euo pipefail

# command → package
declare -A wanted=(
  [openssl]=openssl
  [curl]=curl
  [jq]=jq
  [nginx]=nginx
  [apache2]=apache2
  [haproxy]=haproxy
  [postfix]=postfix
  [dovecot]=dovecot-imapd
  [caddy]=caddy
  [keytool]=default-jre-headless
  [sshd]=openssh-server
  [systemd-analyze]=systemd
)

missing=()
for cmd in "${!wanted[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null || missing+=("${wanted[$cmd]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  restore_policy=""
  if [ -e "$policy" ]; then
    restore_policy=$(mktemp)
    cp -p "$policy" "$restore_policy"
  fi
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  trap 'if [ -n "$restore_policy" ]; then mv "$restore_policy" "$policy"; else rm -f "$policy"; fi' EXIT
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
