#!/bin/sh
# Install and enroll a certfleet agent on this host.
#
#   curl -fsSL https://coordinator:8443/install-agent.sh | sudo sh -s -- \
#       --coordinator https://coordinator:8443 --token cfe_… --ca-fingerprint AB:CD:…
#
# Options: --package SPEC (pip requirement, wheel or path; default certfleet-agent),
#          --pip-index-url URL, --name NAME.
set -eu

COORDINATOR=""; TOKEN=""; FINGERPRINT=""; PACKAGE="certfleet-agent"; INDEX_URL=""; NAME=""
PREFIX=/opt/certfleet-agent
STATE=/var/lib/certfleet-agent

die() { echo "install-agent: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) COORDINATOR="$2"; shift 2 ;;
    --token) TOKEN="$2"; shift 2 ;;
    --ca-fingerprint) FINGERPRINT="$2"; shift 2 ;;
    --package) PACKAGE="$2"; shift 2 ;;
    --pip-index-url) INDEX_URL="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
if [ -z "$COORDINATOR" ] || [ -z "$TOKEN" ] || [ -z "$FINGERPRINT" ]; then
  die "--coordinator, --token and --ca-fingerprint are required"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is required"

python3 -m venv "$PREFIX"
if [ -n "$INDEX_URL" ]; then
  "$PREFIX/bin/pip" install --quiet --index-url "$INDEX_URL" "$PACKAGE"
else
  "$PREFIX/bin/pip" install --quiet "$PACKAGE"
fi
ln -sf "$PREFIX/bin/certfleet-agent" /usr/local/bin/certfleet-agent
mkdir -p "$STATE"
chmod 0700 "$STATE"

# The token travels in the environment, not on a command line other users can read.
set -- --coordinator "$COORDINATOR" --ca-fingerprint "$FINGERPRINT"
[ -n "$NAME" ] && set -- "$@" --name "$NAME"
CERTFLEET_ENROLLMENT_TOKEN="$TOKEN" CERTFLEET_AGENT_DIR="$STATE" certfleet-agent enroll "$@"

if [ -d /run/systemd/system ]; then
  unit_source="$(dirname "$0")/../systemd/certfleet-agent.service"
  if [ -f "$unit_source" ]; then
    install -m 0644 "$unit_source" /etc/systemd/system/certfleet-agent.service
  else
    cat >/etc/systemd/system/certfleet-agent.service <<'UNIT'
[Unit]
Description=certfleet agent (executes signed work orders, deploys certificates)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/certfleet-agent run
Environment=CERTFLEET_AGENT_DIR=/var/lib/certfleet-agent
StateDirectory=certfleet-agent
StateDirectoryMode=0700
UMask=0077
Restart=always
RestartSec=5
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=read-only
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT
  fi
  systemctl daemon-reload
  systemctl enable --now certfleet-agent
  echo "certfleet agent enrolled and running (systemctl status certfleet-agent)"
elif [ "$(uname -s)" = Darwin ]; then
  plist_source="$(dirname "$0")/../launchd/dev.certfleet.agent.plist"
  [ -f "$plist_source" ] || die "launchd plist not found next to this script"
  install -m 0644 "$plist_source" /Library/LaunchDaemons/dev.certfleet.agent.plist
  launchctl load -w /Library/LaunchDaemons/dev.certfleet.agent.plist
  echo "certfleet agent enrolled and running (launchd dev.certfleet.agent)"
else
  echo "certfleet agent enrolled; start it with: CERTFLEET_AGENT_DIR=$STATE certfleet-agent run"
fi
